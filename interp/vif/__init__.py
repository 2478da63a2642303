"""VIF (Variational Information Flow): a CVAE at middle layers predicts where the answer's evidence lies,
decodes it into a Gaussian mixture over the vision tokens, and injects it into deep-layer attention.

    import interp
    vlm2, vif2 = interp.toy.load_vif()         # the shipped toy VIF and the base it was trained jointly with
    vif = interp.VIF.load(interp.toy.VIF_ABLATION_DIR + "/vif_frozen", vlm)   # a frozen-base VIF; VIF.build = untrained
    out = interp.intervene(vlm, vif).generate(batch, max_new_tokens=4)
    res = interp.vif.train(vlm, samples, interp.vif.TrainConfig(steps=500), out="runs/vif")
    cfg = interp.vif.TrainConfig(base="joint")                 # fine-tune decoder + projector with it (reference)

Train from the command line: `python -m interp.vif.train --model toy --steps 500 --out runs/vif`.
Shipped checkpoints: `checkpoints/toy` (the toy's VIF, `interp.toy.load_vif()`) and `checkpoints/ablation/<variant>`
(`analyses.vif_ablation`).

Modules: gmm (mixture → map, regularisers), cvae (prior / posterior encoders, decoder, KL), intervention
(`VIF`), trainer (`train`, `TrainConfig`), checkpoint (safetensors + JSON), joint (a joint run's fine-tuned
base: `load_joint`, `apply_base`), fixed (`FixedMap`: uniform / evidence-box maps, the ablation's controls),
diagnostics (posterior-collapse statistics), train (the CLI).
"""

from importlib import import_module

_LAZY = {  # lazy: the math is light, the intervention pulls in nnsight
    "VIF": "interp.vif.intervention", "scale_pairs": "interp.vif.intervention",
    "PAPER_PAIRS": "interp.vif.intervention", "vision_geometry": "interp.vif.intervention",
    "train": "interp.vif.trainer", "TrainConfig": "interp.vif.trainer",
    "TrainResult": "interp.vif.trainer",
    "render_gmm": "interp.vif.gmm", "render_gmm_grids": "interp.vif.gmm",
    "render_gmm_points": "interp.vif.gmm", "gmm_entropy": "interp.vif.gmm",
    "gmm_volume": "interp.vif.gmm", "grid_points": "interp.vif.gmm",
    "GMMParams": "interp.vif.gmm",
    "CVAE": "interp.vif.cvae", "VIFConfig": "interp.vif.cvae",
    "load": "interp.vif.intervention:load_vif", "save": "interp.vif.checkpoint:save_vif",
    "load_joint": "interp.vif.loading", "apply_base": "interp.vif.joint",
    "load_pair": "interp.vif.loading",
    "FixedMap": "interp.vif.fixed", "PosteriorCollapseWarning": "interp.vif.diagnostics",
}

__all__ = list(_LAZY)


def __getattr__(name):
    if name not in _LAZY:
        raise AttributeError(f"module 'interp.vif' has no attribute {name!r}")
    mod, _, attr = _LAZY[name].partition(":")
    value = getattr(import_module(mod), attr or name)
    globals()[name] = value  # also shadows the `train` CLI submodule's name with the function
    return value
