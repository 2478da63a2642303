"""`interp.load`'s arguments checked at the boundary: torch's and transformers' own errors for a user's
input ('Invalid device string', 'Unrecognized model') become `InterpError`s that say what is missing and the
fix."""

from __future__ import annotations

import os

import torch

from ..errors import CheckpointError, InputError

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "float": torch.float32, "bfloat16": torch.bfloat16,
          "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16, "half": torch.float16}


def dtype_of(dtype, built: bool):
    """`dtype` as a torch floating dtype; a name ("bfloat16", "torch.float16", "bf16") is read as that dtype;
    "auto" (a directory's own dtype) passes through for a directory."""
    if dtype is None or isinstance(dtype, torch.dtype) and dtype.is_floating_point:
        return dtype
    if isinstance(dtype, str):
        name = dtype.lower().removeprefix("torch.")
        if name in DTYPES:
            return DTYPES[name]
        if name == "auto" and not built:
            return "auto"
    raise InputError(f"dtype must be a floating torch dtype (torch.bfloat16) or its name ({', '.join(DTYPES)}"
                     f"{'' if built else ', auto'}), got {dtype!r}")


def device_of(device):
    """`device` checked against this machine: torch's own errors ('Invalid device string', CUDA not compiled)
    become InputError with the fix."""
    if device is None:
        return None
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise InputError(f"device must be a torch device or its name ('cpu', 'cuda', 'cuda:1', 'mps'), got "
                         f"{device!r}") from None
    if dev.type == "cuda":
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if n == 0:
            raise InputError(f"device {device!r}: this torch sees no CUDA GPU; use device='cpu'")
        if dev.index is not None and dev.index >= n:
            raise InputError(f"device {device!r}: this machine has {n} CUDA GPU(s), cuda:0..cuda:{n - 1}")
    if dev.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise InputError(f"device {device!r}: MPS is not available here; use device='cpu'")
    return dev


def check_dir(path: str, need_processor: bool) -> None:
    """A local model directory holds what `from_pretrained` needs; name what is missing."""
    files = set(os.listdir(path))
    missing = []
    if "config.json" not in files:
        missing.append("config.json")
    if not any(f.endswith((".safetensors", ".bin")) or f.endswith(".index.json") for f in files):
        missing.append("model weights (model.safetensors or pytorch_model.bin)")
    if need_processor and not files & {"preprocessor_config.json", "processor_config.json"}:
        missing.append("the image processor's preprocessor_config.json (or pass processor=)")
    if need_processor and not any(f.startswith(("tokenizer", "vocab")) for f in files):
        missing.append("tokenizer files (tokenizer.json / tokenizer_config.json, or pass processor=)")
    if missing:
        raise CheckpointError(f"{path} is not a saved VLM; missing: {'; '.join(missing)}. interp.load takes a "
                              "directory written by model.save_pretrained + processor.save_pretrained, a hub id, "
                              "or a built model with its processor")
