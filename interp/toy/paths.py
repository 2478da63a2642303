"""Where the shipped toy checkpoints are: the model (`CHECKPOINT_DIR`), its VIF (`VIF_DIR`, trained jointly with
its base) and every variant of `analyses.vif_ablation` (`VIF_ABLATION_DIR/<variant>`). The VIF checkpoints live
with the VIF code, in `interp/vif/checkpoints/`. No imports: the VIF loaders read these without the toy."""

import os

_HERE = os.path.dirname(os.path.abspath(__file__))
CHECKPOINT_DIR = os.path.join(_HERE, "checkpoint")
VIF_DIR = os.path.join(os.path.dirname(_HERE), "vif", "checkpoints", "toy")
VIF_ABLATION_DIR = os.path.join(os.path.dirname(VIF_DIR), "ablation")
