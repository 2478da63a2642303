"""VIF checkpoints: a directory with the CVAE weights and a JSON config, written atomically.

    DIR/vif.safetensors   CVAE state dict
    DIR/vif.json          {"format": "interp.vif", "version", "cvae": VIFConfig fields, "vif": pairs, alpha,
                           normalize, decode, sample, positions, queries, "base_model": vlm.identity(),
                           "base_weights": vlm.weights_fingerprint(), "step", "training": {...}}
    DIR/train_state.pt    optimizer + scheduler state and step (resuming only; not needed to load a VIF)
    DIR/base.{safetensors,json}  a joint run's fine-tuned base modules (`joint.py`; vif.json's "base" names them)

Every file is written to a temporary name in the same directory, fsynced, then `os.replace`d, so a crash
leaves either the old or the new file, never a torn one. The JSON is written last and names the step the
weights belong to; `train_state.pt` carries the same step, so a resume can tell whether they match.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import torch

from interp.errors import CheckpointError, warn
from interp.training import atomic_write
from interp.vif.cvae import CVAE, VIFConfig
from interp.vif.identity import check_identity

FORMAT = "interp.vif"
VERSION = 1
WEIGHTS, CONFIG, STATE = "vif.safetensors", "vif.json", "train_state.pt"
VIF_FIELDS = ("pairs", "alpha", "normalize", "decode", "sample", "positions", "queries")


def _atomic(path: Path, write) -> None:
    """`write(tmp_path)` then fsync and rename over `path`."""
    atomic_write(path, write)


def _dir(path) -> Path:
    p = Path(path)
    return p.parent if p.name in (CONFIG, WEIGHTS) else p


def save_vif(vif, path, vlm, *, step: int | None = None, extra: dict | None = None, base: dict | None = None) -> Path:
    """Write `vif`'s CVAE and config for base model `vlm` into directory `path`; returns the directory.
    base: what `joint.save_base` returned, for a CVAE trained with a fine-tuned base (written beside it)."""
    from safetensors.torch import save_file

    if vif.module is None:
        raise CheckpointError("cannot save a VIF without a CVAE module")
    d = _dir(path)
    state = {k: v.detach().cpu().contiguous() for k, v in vif.module.state_dict().items()}
    _atomic(d / WEIGHTS, lambda tmp: save_file(state, str(tmp), metadata={"format": FORMAT}))
    queries = vif.queries if isinstance(vif.queries, str) else "after_image"
    cfg = {
        "format": FORMAT, "version": VERSION,
        "cvae": asdict(vif.module.cfg),
        "vif": {"pairs": [list(p) for p in vif.pairs_for(vlm)], "alpha": float(vif.alpha),
                "normalize": vif.normalize, "decode": bool(vif.decode), "sample": bool(vif.sample),
                "positions": bool(vif.positions), "queries": queries},
        "base_model": vlm.identity(),
        "base_weights": vlm.weights_fingerprint(),
        "parameters": vif.module.num_parameters(),
        "step": step,
        "training": extra or {},
    }
    if base is not None:
        cfg["base"] = base
    text = json.dumps(cfg, indent=2, sort_keys=False) + "\n"
    _atomic(d / CONFIG, lambda tmp: tmp.write_text(text))
    return d


def read_config(path) -> dict:
    """The JSON config of a checkpoint directory (or of its vif.json)."""
    d = _dir(path)
    f = d / CONFIG
    if not f.exists():
        raise CheckpointError(f"{d} is not a VIF checkpoint: {CONFIG} is missing (expected {CONFIG} + {WEIGHTS}, "
                              "written by interp.vif.train or VIF.save)")
    try:
        cfg = json.loads(f.read_text())
    except ValueError as e:
        raise CheckpointError(f"{f} is not valid JSON ({e}); the checkpoint is corrupt: retrain or restore it") from None
    if not isinstance(cfg, dict) or cfg.get("format") != FORMAT:
        fmt = cfg.get("format") if isinstance(cfg, dict) else None
        raise CheckpointError(f"{f} is not an interp VIF config (format {fmt!r})")
    if int(cfg.get("version", 0)) > VERSION:
        raise CheckpointError(f"{f} has version {cfg['version']}; this interp reads up to {VERSION}: upgrade interp")
    return cfg


def same_weights(saved: dict, current: dict) -> bool:
    """Two `VLM.weights_fingerprint`s name the same weights: equal shapes, and equal hashes (same dtype) or
    equal sampled values up to the rounding of a dtype cast (fp32 → bf16 / fp16)."""
    for name, s in saved.items():
        c = current.get(name)
        if c is None or list(c["shape"]) != list(s["shape"]):
            return False
        if c["dtype"] == s["dtype"]:
            if c["sha1"] != s["sha1"]:
                return False
        elif not torch.allclose(torch.tensor(c["sample"]), torch.tensor(s["sample"]), rtol=1e-2, atol=1e-3):
            return False
    return True


def check_weights(saved, vlm, where, allow_other_base: bool = False) -> None:
    """Refuse a checkpoint whose base weights differ from `vlm`'s (`allow_other_base=True` accepts them)."""
    current = vlm.weights_fingerprint()
    if allow_other_base or current is None:
        return
    if not saved:
        warn(f"{where} records no fingerprint of its base weights (saved before interp checked them): cannot tell "
             "whether it was trained on this model; re-save it with VIF.save to record one")
        return
    if not same_weights(saved, current):
        raise CheckpointError(
            f"{where} was trained on other base weights than this model's (same architecture and size, but its "
            f"fingerprint of embed_tokens / lm_head, sha1 {saved.get('embed_tokens', {}).get('sha1')}, differs "
            f"from this model's, {current['embed_tokens']['sha1']}): its maps read hidden states this model does "
            "not produce. Load it with the model it was trained on, or pass allow_other_base=True to use it anyway")


def load_module(path, device=None) -> tuple[CVAE, dict]:
    """(CVAE with the saved weights, config dict) — no base-model check; `load_parts` does that."""
    from safetensors.torch import load_file

    d = _dir(path)
    cfg = read_config(d)
    try:
        module = CVAE(VIFConfig(**cfg["cvae"]))
    except (TypeError, KeyError, ValueError) as e:
        raise CheckpointError(f"{d / CONFIG}: bad 'cvae' sizes ({e})") from None
    w = d / WEIGHTS
    if not w.exists():
        raise CheckpointError(f"{d}: {WEIGHTS} is missing; the checkpoint is incomplete")
    try:
        state = load_file(str(w))
    except Exception as e:  # safetensors raises its own error types on a torn / foreign file
        raise CheckpointError(f"{w} cannot be read ({type(e).__name__}: {e}); the file is corrupt") from None
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"{w} does not match the sizes in {CONFIG}: {e}") from None
    if device is not None:
        module = module.to(device)
    return module.eval(), cfg


def load_parts(path, vlm, *, allow_other_base: bool = False) -> tuple:
    """(CVAE on `vlm`'s device, saved VIF fields) of a checkpoint, checked against `vlm.identity()` and its
    base weights (`VIF.load` builds the intervention; a joint checkpoint's base is checked there first)."""
    cfg = read_config(path)
    check_identity(cfg.get("base_model", {}), vlm.identity(), _dir(path))
    check_weights(cfg.get("base_weights"), vlm, _dir(path), allow_other_base)
    module, cfg = load_module(path, device=vlm.device)
    saved = {k: v for k, v in cfg.get("vif", {}).items() if k in VIF_FIELDS}
    if saved.get("queries") == "text":  # checkpoints before the token-group split: "text" meant after the image
        saved["queries"] = "after_image"
    saved["pairs"] = tuple(tuple(p) for p in saved.get("pairs", ())) or None
    return module, saved

def save_train_state(path, optimizer, scheduler, step: int, extra: dict | None = None) -> None:
    state = {"step": int(step), "optimizer": optimizer.state_dict(),
             "scheduler": scheduler.state_dict() if scheduler is not None else None, "extra": extra or {}}
    _atomic(_dir(path) / STATE, lambda tmp: torch.save(state, tmp))


def load_train_state(path) -> dict | None:
    f = _dir(path) / STATE
    if not f.exists():
        return None
    try:
        return torch.load(f, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"{f} cannot be read ({type(e).__name__}: {e}); delete it to restart the "
                              "optimizer from the saved weights") from None
