"""Which base model a VIF checkpoint was made for: architecture, hidden size and layer count must match."""

from __future__ import annotations

from interp.errors import CheckpointError

IDENTITY_KEYS = ("architecture", "hidden_size", "num_layers")


def check_identity(saved: dict, current: dict, where) -> None:
    """Refuse a checkpoint made for a different base model (architecture, hidden size, layer count)."""
    diff = [k for k in IDENTITY_KEYS if saved.get(k) != current.get(k)]
    if diff:
        def show(i):
            return f"{i.get('architecture')} (hidden size {i.get('hidden_size')}, {i.get('num_layers')} layers)"

        raise CheckpointError(
            f"{where} was trained for {show(saved)} but this model is {show(current)} (differs in: "
            f"{', '.join(diff)}). A VIF reads one model's hidden states at fixed layers: load it with the model "
            "it was trained on, or train one for this model (python -m interp.vif.train --model DIR --out OUT)")
