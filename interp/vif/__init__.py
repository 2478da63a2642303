"""VIF (Variational Information Flow): a CVAE at middle layers predicts where the answer's evidence lies,
decodes it into a Gaussian mixture over the vision tokens, and injects it into deep-layer attention.

    import interp
    vif = interp.VIF.load("interp/toy/vif_ablation/vif_frozen", vlm)   # trained on this base; VIF.build = untrained
    vlm2, vif2 = interp.vif.load_joint("interp/toy/vif")      # the shipped toy VIF: trained jointly with its base
    out = interp.intervene(vlm, vif).generate(batch, max_new_tokens=4)
    res = interp.vif.train(vlm, samples, interp.vif.TrainConfig(steps=500), out="runs/vif")
    cfg = interp.vif.TrainConfig(base="joint")                 # fine-tune decoder + projector with it (reference)

Train from the command line: `python -m interp.vif.train --model toy --steps 500 --out runs/vif`
(`interp.vif` is this package; `python -m interp.methods.vif.train` is the same command).

Modules: gmm (mixture → map, regularisers), cvae (prior / posterior encoders, decoder, KL), intervention
(`VIF`), trainer (`train`, `TrainConfig`), checkpoint (safetensors + JSON), joint (a joint run's fine-tuned
base: `load_joint`, `apply_base`), fixed (`FixedMap`: uniform / evidence-box maps, the ablation's controls),
diagnostics (posterior-collapse statistics), train (the CLI).
"""

from importlib import import_module

_LAZY = {  # lazy: the math is light, the intervention pulls in nnsight
    "VIF": "interp.methods.vif.intervention", "scale_pairs": "interp.methods.vif.intervention",
    "PAPER_PAIRS": "interp.methods.vif.intervention", "vision_geometry": "interp.methods.vif.intervention",
    "train": "interp.methods.vif.trainer", "TrainConfig": "interp.methods.vif.trainer",
    "TrainResult": "interp.methods.vif.trainer",
    "render_gmm": "interp.methods.vif.gmm", "render_gmm_grids": "interp.methods.vif.gmm",
    "render_gmm_points": "interp.methods.vif.gmm", "gmm_entropy": "interp.methods.vif.gmm",
    "gmm_volume": "interp.methods.vif.gmm", "grid_points": "interp.methods.vif.gmm",
    "GMMParams": "interp.methods.vif.gmm",
    "CVAE": "interp.methods.vif.cvae", "VIFConfig": "interp.methods.vif.cvae",
    "load": "interp.methods.vif.intervention:load_vif", "save": "interp.methods.vif.checkpoint:save_vif",
    "load_joint": "interp.methods.vif.loading", "apply_base": "interp.methods.vif.joint",
    "load_pair": "interp.methods.vif.loading",
    "FixedMap": "interp.methods.vif.fixed", "PosteriorCollapseWarning": "interp.methods.vif.diagnostics",
}

__all__ = list(_LAZY)


def __getattr__(name):
    if name not in _LAZY:
        raise AttributeError(f"module 'interp.vif' has no attribute {name!r}")
    mod, _, attr = _LAZY[name].partition(":")
    value = getattr(import_module(mod), attr or name)
    globals()[name] = value  # also shadows the `train` CLI submodule's name with the function
    return value
