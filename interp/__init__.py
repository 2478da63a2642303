"""interp: see and change how information flows from image tokens to text tokens inside VLMs.

    import interp
    vlm = interp.zoo.tiny("llava")                 # or interp.load(dir), interp.toy.load()
    batch = vlm.prepare(images=[img], questions=["what color is the circle ?"])
    stats = interp.capture(vlm, batch)             # per-layer text→vision attention statistics
    out = interp.intervene(vlm, interp.EdgeMask("text", "vision")).generate(batch, max_new_tokens=4)

Every error is an `interp.InterpError`; its subclasses and `InterpWarning` are in `interp.errors`.
"""

from importlib import import_module

from .errors import InterpError

_LAZY = {
    "load": ("interp.models", "load"),
    "intervene": ("interp.engine", "intervene"),
    "capture": ("interp.attention.capture", "capture"),
    "Capture": ("interp.attention.capture", "Capture"),
    "EdgeMask": ("interp.attention.masks", "EdgeMask"),
    "InjectAttention": ("interp.attention.inject", "InjectAttention"),
    "VIF": ("interp.vif", "VIF"),
    "Patch": ("interp.patching", "Patch"),
    "patch_sweep": ("interp.sweep", "patch_sweep"),
    "logit_lens": ("interp.lens", "logit_lens"),
    "knockout_flow": ("interp.flow", "knockout_flow"),
    "AIF": ("interp.methods.aif", "AIF"),
    "evaluate": ("interp.evaluation", "evaluate"),
    "zoo": ("interp.models.zoo", None),
    "toy": ("interp.toy", None),
    "vif": ("interp.vif", None),
    "data": ("interp.data", None),
}

# The public surface: the verbs and interventions a study needs. The types they return live in their modules
# (interp.models.VLM / Batch, interp.layout.TokenLayout, interp.attention.capture.AttentionStats,
# interp.engine.Intervention for writing your own, interp.evaluation.compare, interp.errors.*).
__all__ = ["InterpError", *_LAZY]


def __getattr__(name):
    # Lazy so `import interp` stays cheap (transformers/nnsight load on first use).
    if name not in _LAZY:
        raise AttributeError(f"module 'interp' has no attribute {name!r}")
    mod, attr = _LAZY[name]
    value = import_module(mod) if attr is None else getattr(import_module(mod), attr)
    globals()[name] = value
    return value
