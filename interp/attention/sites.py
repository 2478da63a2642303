"""Find the sites interventions edit: the mask builder and each layer's attention call (nnsight `.source` ops)
and the decoder-layer outputs. Op names differ across nnsight/transformers versions, so they are resolved
by listing ops, never hard-coded; failures name the model class and the ops seen."""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import SiteError


@dataclass(frozen=True)
class Sites:
    """Resolved names: `lm_path` (decoder stack holder), `attn_op` (per-layer attention call op),
    `mask_op` (mask builder op on the stack holder), `num_layers`."""

    lm_path: str
    attn_op: str
    mask_op: str
    num_layers: int

    def lm(self, nn):
        obj = nn
        for part in self.lm_path.split("."):
            obj = getattr(obj, part)
        return obj

    def layer(self, nn, i):
        return self.lm(nn).layers[i]

    def attention_call(self, nn, i):
        return getattr(self.layer(nn, i).self_attn.source, self.attn_op)

    def mask_builder(self, nn):
        return getattr(self.lm(nn).source, self.mask_op)


def _pick(names, pattern, what, owner, last=True):
    found = [n for n in names if re.fullmatch(pattern, n)]
    if not found:
        raise SiteError(f"{owner}: no {what} op found (pattern {pattern!r}); ops seen: {', '.join(names)}")
    key = lambda n: int(n.rsplit("_", 1)[1])  # noqa: E731
    return max(found, key=key) if last else min(found, key=key)


def resolve(nn, hf, lm_path: str) -> Sites:
    cls = type(hf).__name__
    try:
        holder = nn
        for part in lm_path.split("."):
            holder = getattr(holder, part)
        layers = holder.layers
        n = len(layers)
        attn = layers[0].self_attn
    except AttributeError as e:
        raise SiteError(f"{cls}: cannot find decoder layers at {lm_path}.layers[*].self_attn ({e})") from None
    attn_names = list(attn.source.names)
    # The call is the last `attention_interface_*` op (earlier ones are the lookup / assignment).
    attn_op = _pick(attn_names, r"attention_interface_\d+", "attention call", f"{cls} {type(attn._module).__name__}")
    mask_names = list(holder.source.names)
    # The builder is called once per forward: its first op.
    mask_op = _pick(mask_names, r"create_causal_mask_\d+", "mask builder", f"{cls} {type(holder._module).__name__}",
                    last=False)
    return Sites(lm_path=lm_path, attn_op=attn_op, mask_op=mask_op, num_layers=n)
