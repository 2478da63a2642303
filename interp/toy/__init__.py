"""The toy testbed: synthetic scene-VQA with known evidence boxes, and a tiny LLaVA trained on it.

    import interp
    samples = interp.toy.dataset(600, seed=interp.toy.EVAL_SEED)   # held-out, balanced over FAMILIES
    vlm = interp.toy.load()                                         # the shipped checkpoint (CPU, seconds)

The checkpoint (`CHECKPOINT_DIR`) is a plain HF `LlavaForConditionalGeneration` + `LlavaProcessor`;
its `model_card.json` records how it was trained and its held-out accuracy. Retrain it with
`python -m interp.toy.train --out DIR --recipe shipped` (the stages: `interp.toy.stages.SHIPPED`).
"""
from __future__ import annotations

import os
from importlib import import_module

from interp.toy.paths import CHECKPOINT_DIR, VIF_ABLATION_DIR, VIF_DIR

_LAZY = {  # heavy imports (numpy, PIL, transformers) wait until first use, so `import interp.toy` is cheap
    "dataset": "interp.toy.scenes", "make": "interp.toy.scenes", "FAMILIES": "interp.toy.scenes",
    "ALL_FAMILIES": "interp.toy.scenes", "mirror": "interp.toy.scenes",
    "EVAL_SEED": "interp.toy.scenes", "CHANCE": "interp.toy.scenes", "Sample": "interp.toy.scenes",
    "build_processor": "interp.toy.processor", "prompt": "interp.toy.processor",
}

__all__ = ["CHECKPOINT_DIR", "VIF_DIR", "VIF_ABLATION_DIR", "load", "load_vif", *_LAZY]


def load(**kw):
    """The shipped toy model as an `interp.VLM`; kw go to `interp.load` (dtype, device, attn_implementation)."""
    import interp

    return interp.load(CHECKPOINT_DIR, **kw)


def load_vif(variant: str | None = None, **kw):
    """(vlm, VIF) of the shipped toy VIF: its jointly fine-tuned base (a fresh toy model with the fine-tuned
    weights applied) and the VIF trained with it. variant: one of `analyses.vif_ablation`'s shipped variants
    (e.g. "vif_frozen", "vif_joint"; "finetune" gives (vlm, None), "uniform_map" / "oracle_map" a `FixedMap`);
    kw: dtype, device."""
    from interp.vif.loading import load_joint, load_pair

    if variant is None:
        return load_joint(VIF_DIR, **kw)
    path = os.path.join(VIF_ABLATION_DIR, variant)
    if not os.path.isdir(path):
        from interp.errors import InputError

        have = sorted(d for d in os.listdir(VIF_ABLATION_DIR) if os.path.isdir(os.path.join(VIF_ABLATION_DIR, d)))
        raise InputError(f"no shipped toy VIF variant {variant!r}; the variants are {', '.join(have)}")
    if os.path.exists(os.path.join(path, "base.json")):
        return load_joint(path, **kw)
    return load_pair(path, load(**kw))


def __getattr__(name):
    if name not in _LAZY:
        raise AttributeError(f"module 'interp.toy' has no attribute {name!r}")
    return getattr(import_module(_LAZY[name]), name)
