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

CHECKPOINT_DIR = os.path.join(os.path.dirname(__file__), "checkpoint")

_LAZY = {  # heavy imports (numpy, PIL, transformers) wait until first use, so `import interp.toy` is cheap
    "dataset": "interp.toy.scenes", "make": "interp.toy.scenes", "FAMILIES": "interp.toy.scenes",
    "ALL_FAMILIES": "interp.toy.scenes", "mirror": "interp.toy.scenes",
    "EVAL_SEED": "interp.toy.scenes", "CHANCE": "interp.toy.scenes", "Sample": "interp.toy.scenes",
    "build_processor": "interp.toy.processor", "prompt": "interp.toy.processor",
}

__all__ = ["CHECKPOINT_DIR", "load", *_LAZY]


def load(**kw):
    """The shipped toy model as an `interp.VLM`; kw go to `interp.load` (dtype, device, attn_implementation)."""
    import interp

    return interp.load(CHECKPOINT_DIR, **kw)


def __getattr__(name):
    if name not in _LAZY:
        raise AttributeError(f"module 'interp.toy' has no attribute {name!r}")
    return getattr(import_module(_LAZY[name]), name)
