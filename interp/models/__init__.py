"""`interp.load` → `VLM`: a transformers VLM wrapped in nnsight, with its adapter, resolved sites and
`prepare` (images + questions → `Batch` with a `TokenLayout`)."""

from __future__ import annotations

import os
import warnings
import hashlib
import json
from dataclasses import dataclass, field, replace

import torch

from ..errors import CheckpointError, InputError, SiteError, UnsupportedModelError
from ..layout import TokenLayout, after_last_image
from .adapters import ADAPTERS, adapter_for, image_layouts, supported
from .arguments import check_dir, device_of, dtype_of
from .tokens import question_mask

__all__ = ["VLM", "Batch", "load", "supported"]


@dataclass
class Batch:
    """Model inputs plus where each token came from. `inputs`: the dict the HF model takes. `made_by`: (key,
    label) of the model + processor that prepared it (`VLM.batch_key`); a run on a model whose processor makes
    other batches is refused."""

    inputs: dict
    layout: TokenLayout
    questions: tuple = ()
    answers: tuple | None = None
    images: tuple = field(default=(), repr=False)
    made_by: tuple | None = None

    @property
    def input_ids(self) -> torch.Tensor:
        return self.inputs["input_ids"]

    def to(self, device) -> "Batch":
        """The same batch with its tensors on `device`."""
        inputs = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in self.inputs.items()}
        return replace(self, inputs=inputs)

    def __len__(self) -> int:
        return self.layout.batch_size


class VLM:
    """A loaded vision-language model. `hf`: the transformers model; `nn`: the nnsight model; `processor`;
    `adapter`; `sites`; `num_layers`."""

    def __init__(self, hf, processor, *, adapter, nn, remote=False, source=None):
        self.hf = hf
        self.processor = processor
        self.adapter = adapter
        self.nn = nn
        self.remote = remote
        self.source = source
        from ..attention.sites import resolve

        self.sites = resolve(nn, hf, adapter.language_model)
        self.num_layers = self.sites.num_layers
        if remote:
            # The server has no interp: ship our (pure-torch) intervention code by value with each request.
            import nnsight

            nnsight.register("interp")

    def __repr__(self):
        return (f"VLM({type(self.hf).__name__}, layers={self.num_layers}, attn={self.attn_implementation}, "
                f"dtype={self.dtype}, device={self.device})")

    @property
    def tokenizer(self):
        return getattr(self.processor, "tokenizer", self.processor)

    @property
    def device(self) -> torch.device:
        return next(self.hf.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.hf.parameters()).dtype

    @property
    def attn_implementation(self) -> str:
        return self.hf.config._attn_implementation

    @property
    def image_token_id(self) -> int:
        return self.adapter.image_token_id(self.hf)

    def identity(self) -> dict:
        """What a checkpoint made for this model must match."""
        tc = self.hf.config.get_text_config()
        return {"architecture": type(self.hf).__name__, "hidden_size": int(tc.hidden_size),
                "num_layers": int(self.num_layers)}

    def weights_fingerprint(self) -> dict | None:
        """A cheap, deterministic fingerprint of the base weights (None when they are not here: remote, meta).

        For the input embedding and the output head: shape, dtype, a sha1 of 64 evenly spaced rows (as float32
        bytes) and 16 of their values (to compare across dtypes). Tells two trainings of one architecture apart;
        `VIF.load` checks it."""
        out = {}
        for name, mod in (("embed_tokens", self.hf.get_input_embeddings()), ("lm_head", self.hf.get_output_embeddings())):
            w = getattr(mod, "weight", None)
            if w is None or w.is_meta:
                return None
            idx = torch.linspace(0, w.shape[0] - 1, min(w.shape[0], 64)).round().long()
            rows = w.detach()[idx.to(w.device)].float().cpu().contiguous()  # [64, D]
            h = hashlib.sha1(str(tuple(w.shape)).encode())
            h.update(rows.numpy().tobytes())
            flat = rows.flatten()
            sample = flat[torch.linspace(0, len(flat) - 1, 16).round().long()]
            out[name] = {"shape": list(w.shape), "dtype": str(w.dtype).replace("torch.", ""),
                         "sha1": h.hexdigest()[:16], "sample": [float(f"{v:.6g}") for v in sample.tolist()]}
        return out

    @property
    def batch_key(self) -> tuple:
        """(key, label): what a `Batch` depends on (tokenizer vocabulary, image processor settings, image token,
        vision geometry), hashed; two checkpoints sharing all of it (LLaVA-1.5 7B and 13B) share batches."""
        if getattr(self, "_batch_key", None) is None:
            cfg = self.hf.config
            vc = getattr(cfg, "vision_config", None)
            geo = {k: getattr(o, k) for o in (cfg, vc) if o is not None for k in _GEOMETRY if hasattr(o, k)}
            ip = getattr(self.processor, "image_processor", None)
            parts = {"processor": type(self.processor).__name__, "image_token": self.image_token_id, "geometry": geo,
                     "image_processor": ip.to_dict() if ip is not None and hasattr(ip, "to_dict") else None,
                     "vocab": sorted(self.tokenizer.get_vocab().items())}
            key = hashlib.sha1(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]
            label = (f"{self.source or type(self.hf).__name__} ({type(self.processor).__name__}, "
                     f"{len(parts['vocab'])}-token vocabulary, image token {self.image_token_id})")
            self._batch_key = (key, label)
        return self._batch_key

    # ------------------------------------------------------------------ inputs
    def prepare(self, images, questions, *, answers=None) -> Batch:
        """Images + questions (+ teacher-forced answers) → `Batch` (left-padded, ready for generate).

        images: one entry per row: a PIL image, a list of PIL images, or None; questions: list of str. The
        layout's token groups (`interp.layout`) come from the rendered prompt: `question` is the question's own
        tokens (by character offsets, `interp.models.tokens`), `template` the chat template's after the image.
        """
        if isinstance(questions, str):
            questions = [questions]
        if not isinstance(questions, (list, tuple)) or not questions:
            raise InputError("questions must be a non-empty list of strings, one per row")
        for i, q in enumerate(questions):
            if not isinstance(q, str):
                raise InputError(f"question {i} must be a str, got {type(q).__name__}")
        if images is None or not isinstance(images, (list, tuple)):
            images = [images]
        if len(images) != len(questions):
            raise InputError(f"got {len(images)} image entries for {len(questions)} questions; give one per row")
        rows = []
        for i, img in enumerate(images):
            imgs = list(img) if isinstance(img, (list, tuple)) else ([] if img is None else [img])
            if not imgs:
                raise InputError(f"row {i} has no image; {self.adapter.name} needs at least one image per row")
            for im in imgs:
                if not hasattr(im, "size") or not hasattr(im, "convert"):
                    raise InputError(f"row {i}: images must be PIL images, got {type(im).__name__}")
            if self.adapter.max_images_per_row and len(imgs) > self.adapter.max_images_per_row:
                raise InputError(f"row {i} has {len(imgs)} images; {self.adapter.name} allows "
                                 f"{self.adapter.max_images_per_row}")
            rows.append([im.convert("RGB") for im in imgs])
        if answers is not None:
            if len(answers) != len(questions) or not all(isinstance(a, str) for a in answers):
                raise InputError("answers must be a list of str, one per question")
        rendered = [self.adapter.prompt_with_span(self.processor, len(r), q) for r, q in zip(rows, questions)]
        prompts = [p for p, _ in rendered]
        if answers is not None:
            prompts = [p + " " + a for p, a in zip(prompts, answers)]
        flat = [im for r in rows for im in r]
        imgs_arg = rows if self.adapter.nested_images else flat
        tok = self.tokenizer
        old_side = tok.padding_side
        tok.padding_side = "left"
        try:
            enc = self.processor(images=imgs_arg, text=prompts, padding=True, return_tensors="pt")
        except (ValueError, IndexError, TypeError, KeyError, RuntimeError) as e:
            raise InputError(f"{type(self.processor).__name__} rejected the inputs ({type(e).__name__}: "
                             f"{str(e).splitlines()[0] if str(e) else ''}); resize, crop or pad the image it names "
                             "(size, aspect ratio), or check the row's question") from e
        finally:
            tok.padding_side = old_side
        enc = dict(enc)
        if "mm_token_type_ids" not in _forward_args(self.hf):  # only Qwen's forward takes it (M-RoPE)
            enc.pop("mm_token_type_ids", None)
        ids = enc["input_ids"]
        pad = enc["attention_mask"] == 0
        imgs_layout = image_layouts(self, enc, rows, ids)
        vision = ids == self.image_token_id
        T = ids.shape[1]
        answer = torch.zeros_like(vision)
        if answers is not None:
            for b, a in enumerate(answers):
                a_ids = tok(" " + a, add_special_tokens=False)["input_ids"]
                n = len(a_ids)
                if n == 0 or ids[b, T - n:].tolist() != list(a_ids):
                    raise InputError(f"row {b}: answer {a!r} does not tokenize to the end of the prompt; "
                                     "it merges with the prompt's last token")
                answer[b, T - n:] = True
        text = ~vision & ~pad
        question = question_mask(tok, ids, vision, answer, prompts, [sp for _, sp in rendered],
                                 self.image_token_id) & text & after_last_image(vision) & ~answer
        # after_image and template follow from these (TokenLayout's defaults)
        layout = TokenLayout(vision=vision, text=text, question=question, answer=answer, pad=pad,
                             images=imgs_layout)
        dev = self.device
        inputs = {k: (v.to(dev) if isinstance(v, torch.Tensor) else v) for k, v in enc.items()}
        if "pixel_values" in inputs and inputs["pixel_values"].is_floating_point():
            inputs["pixel_values"] = inputs["pixel_values"].to(self.dtype)
        return Batch(inputs=inputs, layout=layout, questions=tuple(questions),
                     answers=tuple(answers) if answers is not None else None, images=tuple(rows),
                     made_by=self.batch_key)

    def generation_positions(self, batch: Batch):
        """position_ids [B, T] as HF generate's prefill computes them (its own
        `_prepare_position_ids_for_generation`: left padding counts from each row's first real token); None for
        M-RoPE families, which derive the same positions from the mask in a plain forward, and for models whose
        forward takes no position_ids."""
        hf = self.hf
        if self.adapter.mrope or "position_ids" not in _forward_args(hf):
            return None
        kw = {k: v for k, v in batch.inputs.items() if k != "input_ids"}
        return hf._prepare_position_ids_for_generation(batch.input_ids, kw)


def _forward_args(hf) -> set:
    import inspect

    return set(inspect.signature(hf.forward).parameters)


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")


def _load_processor(path: str):
    from transformers import AutoProcessor

    try:
        return AutoProcessor.from_pretrained(path)
    except (ImportError, ValueError, OSError, TypeError):
        # Qwen processors insist on a video processor (torchvision); images need none.
        import transformers
        from transformers import AutoConfig, AutoImageProcessor, AutoTokenizer

        from .processors import image_only

        arch = (AutoConfig.from_pretrained(path).architectures or [""])[0]
        if "Qwen2" not in arch:
            raise
        cls = transformers.Qwen2_5_VLProcessor if "2_5" in arch else transformers.Qwen2VLProcessor
        template = None
        jinja = os.path.join(path, "chat_template.jinja")
        if os.path.exists(jinja):
            with open(jinja) as f:
                template = f.read()
        return image_only(cls)(image_processor=AutoImageProcessor.from_pretrained(path),
                               tokenizer=AutoTokenizer.from_pretrained(path), chat_template=template)


ATTN_IMPLEMENTATIONS = ("sdpa", "eager")
# config fields (top level or vision_config) that decide how many image tokens a batch holds
_GEOMETRY = ("image_size", "patch_size", "spatial_merge_size", "temporal_patch_size", "num_channels",
             "vision_feature_select_strategy", "vision_feature_layer", "image_seq_length", "scale_factor",
             "image_grid_pinpoints")
def load(source, *, processor=None, dtype=None, device=None, attn_implementation=None, remote=False,
         check=True) -> VLM:
    """Load a VLM from a hub id, a local `save_pretrained` directory, or a built transformers model.

    dtype: e.g. torch.bfloat16; device: "cpu", "cuda", ...; attn_implementation: "sdpa" or "eager" (None: "sdpa"
    for a hub id or directory; a built model keeps its own); remote: True for NDIF, "local" to simulate
    serialization offline. check: run the site self-check.

    A built model is used as built: its attention implementation is changed only when `attn_implementation`
    asks for another one, and its train/eval mode is kept (a model in train mode gets a warning: dropout makes
    every pass random). `dtype` and `device` move it in place, as `model.to` does.
    """
    from nnsight.modeling.transformers import TransformersModel

    dtype = dtype_of(dtype, isinstance(source, torch.nn.Module))
    device = device_of(device)
    if attn_implementation is not None and attn_implementation not in ATTN_IMPLEMENTATIONS:
        raise InputError(f"attn_implementation must be one of {ATTN_IMPLEMENTATIONS} (interp reads and edits "
                         f"attention at the attention call), got {attn_implementation!r}")
    if isinstance(source, torch.nn.Module):
        hf = source
        if processor is None:
            raise InputError("loading a built model needs its processor: interp.load(model, processor=proc)")
        adapter = adapter_for(hf)
        _keep_or_set_attention(hf, attn_implementation)
        if hf.training:
            warnings.warn(f"{type(hf).__name__} is in train mode: dropout makes every forward random; call "
                          "model.eval() before interp.load for reproducible attention and logits", stacklevel=2)
        name = getattr(hf.config, "_name_or_path", "") or type(hf).__name__
    elif isinstance(source, (str, os.PathLike)):
        source = os.fspath(source)
        local = os.path.isdir(source)
        if not local and _offline():
            raise InputError(
                f"{source!r} is not a local directory and the hub is offline (HF_HUB_OFFLINE=1); pass a "
                "directory saved with save_pretrained, or (model, processor) already built")
        from transformers import AutoConfig, AutoModelForImageTextToText

        if local:
            check_dir(source, processor is None)
        try:
            cfg = AutoConfig.from_pretrained(source)
        except OSError as e:
            raise InputError(f"cannot load {source!r} ({e.__class__.__name__}); no network? pass a local "
                             "directory saved with save_pretrained") from None
        except (ValueError, KeyError) as e:
            raise CheckpointError(f"{source}/config.json is not a transformers config interp can read "
                                  f"({str(e).splitlines()[0]}); re-save the model with save_pretrained") from None
        arch = (cfg.architectures or [""])[0]
        if arch not in supported():
            raise UnsupportedModelError(f"{arch or cfg.model_type} is not supported; interp has adapters for: "
                                        f"{', '.join(supported())}")
        if remote and remote != "local":
            nn = TransformersModel(source, task="image-text-to-text", remote=True)
            return VLM(nn._module, nn.processor, adapter=adapter_for(nn._module), nn=nn, remote=True, source=source)
        kw = {"attn_implementation": attn_implementation or "sdpa"}
        if dtype is not None:
            kw["dtype"] = dtype
        try:
            hf = AutoModelForImageTextToText.from_pretrained(source, **kw)
        except (OSError, ValueError, RuntimeError) as e:
            raise CheckpointError(f"cannot read the weights in {source} ({type(e).__name__}: "
                                  f"{str(e).splitlines()[0]}); re-save the model with save_pretrained") from None
        if processor is None:
            try:
                processor = _load_processor(source)
            except (OSError, ValueError, TypeError, ImportError) as e:
                raise CheckpointError(f"cannot load the processor from {source} ({type(e).__name__}: "
                                      f"{str(e).splitlines()[0]}); save it with processor.save_pretrained "
                                      "or pass processor=") from None
        adapter = adapter_for(hf)
        name = source
    else:
        raise InputError(f"source must be a hub id, a directory or a transformers model, got {type(source).__name__}")
    if dtype is not None and dtype != "auto":
        hf = hf.to(dtype)
    if device is not None:
        hf = hf.to(device)
    if not isinstance(source, torch.nn.Module):
        hf.eval()  # built here from weights: inference mode; a user's model keeps its mode (see above)
    nn = TransformersModel(hf, task="image-text-to-text", processor=processor)
    vlm = VLM(hf, processor, adapter=adapter, nn=nn, remote=remote, source=name)
    if check:
        from ..attention.check import self_check

        self_check(vlm)
    return vlm


def _keep_or_set_attention(hf, requested) -> None:
    """Keep a built model's attention implementation, or switch it when `requested` names another one."""
    current = hf.config.get_text_config()._attn_implementation
    if requested is None:
        if current not in ATTN_IMPLEMENTATIONS:
            raise InputError(f"{type(hf).__name__} uses attn_implementation={current!r}; interp reads and edits "
                             f"attention at the attention call and supports {ATTN_IMPLEMENTATIONS}: pass "
                             "attn_implementation='sdpa' (or 'eager') to interp.load to switch it")
        return
    if requested != current or hf.config._attn_implementation != requested:
        hf.set_attn_implementation(requested)


__all__ += ["ADAPTERS", "SiteError"]
