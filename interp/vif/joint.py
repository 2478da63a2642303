"""The fine-tuned base of a joint VIF run: which base modules train, and their weights next to the CVAE.

The reference (`finetune_7b.sh`) fine-tunes LLaVA-1.5's decoder and projector together with the VIF module
(CLIP frozen). A CVAE trained that way reads the hidden states of *that* fine-tuned base, so a joint
checkpoint ships the trained base modules and refuses to run on any other weights:

    DIR/base.safetensors   the trained base modules' parameters only (names as in `vlm.hf.named_parameters()`)
    DIR/base.json          {"format": "interp.vif.base", "source": "toy" | hub id | dir, "identity",
                            "modules": dotted paths, "train_modules", "focus", "inject", "dtype", "step"}
    DIR/vif.json           (focus "cvae" only) the VIF config, whose "base" entry names base.safetensors

    vlm, vif = interp.vif.load_joint("interp/vif/checkpoints/toy")      # a fresh base from "source" + its fine-tuned weights
    interp.vif.apply_base("interp/vif/checkpoints/toy", vlm)           # or patch a model you loaded yourself, in place
    run_on, vif = interp.vif.load_pair(path, vlm)          # any VIF checkpoint: frozen → vlm, joint → its base

`VIF.load(dir, vlm)` checks every saved base tensor against `vlm` and refuses a model that does not carry them.
Module names (`train_modules`): "decoder" (the language model + lm_head), "projector", "vision" (the vision
tower), or dotted attribute paths of `vlm.hf`.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from interp.errors import CheckpointError, InputError
from interp.training import atomic_write

BASE_WEIGHTS, BASE_CONFIG = "base.safetensors", "base.json"
FORMAT = "interp.vif.base"
VERSION = 1
FOCUS = ("cvae", "none", "uniform", "oracle")
# concept → candidate attribute paths of the top HF model, first present wins (LLaVA / NeXT, Idefics3, Qwen)
MODULES = {
    "projector": ("model.multi_modal_projector", "model.connector", "model.visual.merger"),
    "vision": ("model.vision_tower", "model.vision_model", "model.visual"),
}


def _get(root, path: str):
    m = root
    for part in path.split("."):
        m = getattr(m, part, None)
        if m is None:
            return None
    return m if isinstance(m, torch.nn.Module) else None


def resolve_modules(vlm, names) -> tuple:
    """Concept names / dotted paths → the dotted module paths of `vlm.hf` they stand for."""
    if isinstance(names, str):
        names = (names,)
    out = []
    for name in names:
        if name == "decoder":
            cands = [(vlm.adapter.language_model,), ("lm_head",)]
        elif name in MODULES:
            cands = [tuple(p for p in MODULES[name] if _get(vlm.hf, p) is not None)[:1]]
        else:
            cands = [(name,)]
        for c in cands:
            if not c or _get(vlm.hf, c[0]) is None:
                seen = [n for n, _ in vlm.hf.named_modules() if n.count(".") <= 1 and n]
                raise InputError(f"train_modules: {name!r} names no module of {type(vlm.hf).__name__} (looked "
                                 f"for {MODULES.get(name, c or name)}); use 'decoder', 'projector', 'vision' "
                                 f"or a dotted path among {seen}")
            out.append(c[0])
    # drop paths nested in another chosen path (Qwen's merger inside its vision tower)
    return tuple(p for p in dict.fromkeys(out) if not any(p != q and p.startswith(q + ".") for q in out))


def trained_parameters(vlm, paths) -> dict:
    """{full parameter name: Parameter} of the modules at `paths` (shared parameters listed once)."""
    prefixes = tuple(p + "." for p in paths)
    return {n: p for n, p in vlm.hf.named_parameters() if n.startswith(prefixes)}


def _atomic(path: Path, write) -> None:
    atomic_write(path, write)


def _source(vlm) -> str | None:
    src = getattr(vlm, "source", None)
    return None if src is None else str(src)


def save_base(path, vlm, paths, *, train_modules=(), focus="cvae", inject=None, step=None, dtype=None,
              extra=None, source=None) -> dict:
    """Write the parameters of `vlm`'s modules at `paths` (base.safetensors) and base.json (last) into `path`.
    dtype: store in this dtype (e.g. torch.float16 to halve a shipped file); None = as trained. source: how
    `interp.vif.load_joint` finds the base again ("toy", a hub id, a directory; default `vlm.source`). Returns the
    small dict a VIF config keeps under "base"."""
    from safetensors.torch import save_file

    d = Path(path)
    params = trained_parameters(vlm, paths)
    state = {n: p.detach().to("cpu", dtype or p.dtype).contiguous() for n, p in params.items()}
    # the step again (a resume can tell a torn pair of files); one key: safetensors orders metadata at random
    meta = {f"{FORMAT}.step": str(step)}
    _atomic(d / BASE_WEIGHTS, lambda tmp: save_file(state, str(tmp), metadata=meta))
    source = source if source is not None else _source(vlm)
    info = {"format": FORMAT, "version": VERSION, "source": source, "identity": vlm.identity(),
            "modules": list(paths), "train_modules": list(train_modules), "focus": focus, "inject": inject,
            "dtype": str(next(iter(state.values())).dtype).replace("torch.", "") if state else None,
            "parameters": int(sum(v.numel() for v in state.values())), "step": step, **(extra or {})}
    text = json.dumps(info, indent=2) + "\n"
    _atomic(d / BASE_CONFIG, lambda tmp: tmp.write_text(text))
    return {"file": BASE_WEIGHTS, "modules": list(paths), "parameters": info["parameters"]}


def read_base(path) -> dict | None:
    """base.json of a checkpoint directory, or None when the run kept the base frozen."""
    f = Path(path) / BASE_CONFIG
    if not f.exists():
        return None
    try:
        info = json.loads(f.read_text())
    except ValueError as e:
        raise CheckpointError(f"{f} is not valid JSON ({e}); the checkpoint is corrupt") from None
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        raise CheckpointError(f"{f} is not an interp base-weights config")
    return info


def saved_step(path) -> str | None:
    """The step recorded inside base.safetensors (None if absent)."""
    from safetensors import safe_open

    with safe_open(str(Path(path) / BASE_WEIGHTS), "pt") as f:
        meta = f.metadata() or {}
    return meta.get(f"{FORMAT}.step", meta.get("step"))


def _saved(path) -> dict:
    from safetensors.torch import load_file

    f = Path(path) / BASE_WEIGHTS
    if not f.exists():
        raise CheckpointError(f"{Path(path)}: {BASE_WEIGHTS} is missing; this joint checkpoint is incomplete")
    try:
        return load_file(str(f))
    except Exception as e:  # safetensors raises its own error types on a torn / foreign file
        raise CheckpointError(f"{f} cannot be read ({type(e).__name__}: {e}); the file is corrupt") from None


def _mismatch(saved: dict, vlm) -> list:
    params = dict(vlm.hf.named_parameters())
    missing = [n for n in saved if n not in params]
    if missing:
        raise CheckpointError(f"the saved base weights name {len(missing)} parameters this model lacks "
                              f"(e.g. {missing[0]!r}); they were saved from another architecture")
    return [n for n, v in saved.items() if not torch.equal(v.to(params[n].device, params[n].dtype), params[n].detach())]


def check_base(path, vlm) -> None:
    """Refuse `vlm` unless it carries the fine-tuned base weights saved in `path` (exact, in vlm's dtype)."""
    bad = _mismatch(_saved(path), vlm)
    if bad:
        raise CheckpointError(
            f"{path} holds a VIF trained jointly with a fine-tuned base ({BASE_WEIGHTS}); this model's weights "
            f"differ in {len(bad)} of its tensors (e.g. {bad[0]!r}), so the CVAE would read hidden states it was "
            f"not trained on. Load both: vlm, vif = interp.vif.load_joint({str(path)!r}), or patch your model "
            f"first with interp.vif.apply_base({str(path)!r}, vlm)")


def apply_base(path, vlm):
    """Copy the fine-tuned base weights saved in `path` into `vlm` (in place, cast to its dtype); returns vlm."""
    info = read_base(path)
    if info is None:
        raise CheckpointError(f"{path} has no {BASE_CONFIG}: its VIF was trained on a frozen base; "
                              "load it with interp.VIF.load(path, vlm)")
    from interp.vif.identity import check_identity

    check_identity(info.get("identity", {}), vlm.identity(), path)
    saved = _saved(path)
    params = dict(vlm.hf.named_parameters())
    _mismatch(saved, vlm)  # names check
    with torch.no_grad():
        for n, v in saved.items():
            params[n].copy_(v.to(params[n].device, params[n].dtype))
    return vlm
