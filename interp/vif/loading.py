"""Loading a VIF checkpoint together with the model it runs on: a joint checkpoint's fine-tuned base is
rebuilt from its source (a hub id, a directory or the shipped toy model) with its weights applied.

    vlm, vif = interp.vif.load_joint(interp.toy.VIF_DIR)  # a fresh base from "source" + its fine-tuned weights
    run_on, vif = interp.vif.load_pair(path, vlm)          # any VIF checkpoint: frozen → vlm, joint → its base
"""

from __future__ import annotations

import os
from pathlib import Path

from interp.errors import CheckpointError, InputError
from interp.toy import paths
from interp.vif.joint import BASE_CONFIG, apply_base, check_base, read_base


def base_source(vlm) -> str | None:
    """How `load_joint` finds the base again: "toy" for the shipped toy model, else `vlm.source`."""
    src = getattr(vlm, "source", None)
    if src is not None and os.path.realpath(str(src)) == os.path.realpath(paths.CHECKPOINT_DIR):
        return "toy"
    return None if src is None else str(src)



def load_joint(path, *, base=None, dtype=None, device=None):
    """(vlm, intervention) of a joint checkpoint: a fresh base model with the fine-tuned weights applied,
    and what was trained with it: a `VIF` (focus "cvae"), a `FixedMap` ("uniform" / "oracle": call
    `.for_samples(samples)` for the oracle's boxes) or None (fine-tune only).

    base: the base model to start from (hub id, directory, "toy"); default the "source" saved in base.json.
    """
    import interp

    path = Path(path)
    info = read_base(path)
    if info is None:
        raise CheckpointError(f"{path} has no {BASE_CONFIG}: not a joint checkpoint (a frozen-base VIF loads "
                              "with interp.VIF.load(path, vlm))")
    spec = base or info.get("source")
    if spec is None:
        raise InputError(f"{path}/{BASE_CONFIG} does not say which base model it fine-tuned; pass base=")
    kw = {k: v for k, v in (("dtype", dtype), ("device", device)) if v is not None}
    vlm = interp.load(paths.CHECKPOINT_DIR if spec == "toy" else spec, **kw)
    apply_base(path, vlm)
    focus = info.get("focus", "cvae")
    if focus == "cvae" or (path / "vif.json").exists():
        return vlm, interp.VIF.load(path, vlm)
    if focus in ("uniform", "oracle"):
        from interp.vif.fixed import FixedMap

        return vlm, FixedMap(**(info.get("inject") or {}))
    return vlm, None


def load_pair(path, vlm, **fields):
    """(the model to run it on, VIF) for any VIF checkpoint, leaving `vlm` untouched: a frozen-base VIF (or
    one whose fine-tuned base `vlm` already carries) runs on `vlm`; a joint one on a fresh copy of its
    fine-tuned base in `vlm`'s dtype and device. fields: VIF overrides (alpha, normalize, ...)."""
    import interp

    path = Path(path)
    if read_base(path) is None:
        return vlm, interp.VIF.load(path, vlm, **fields)
    try:
        check_base(path, vlm)
        return vlm, interp.VIF.load(path, vlm, **fields)
    except CheckpointError:
        jvlm, vif = load_joint(path, dtype=vlm.dtype, device=vlm.device)
    if vif is None or not hasattr(vif, "module"):
        raise CheckpointError(f"{path} holds a fine-tuned base without a CVAE (focus "
                              f"{read_base(path).get('focus')!r}); load it with interp.vif.load_joint")
    return jvlm, vif.with_(**fields) if fields else vif
