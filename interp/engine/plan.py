"""Planning: the interventions' edits collected per site, validated against the model and the batch, and the
decision whether a pass may start after a reused KV prefix. No nnsight here."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import InputError
from .core import Cut, EditOutput, EditProbs, ReadProbs, TapInputs, EDITS


@dataclass(frozen=True)
class Plan:
    """Edits by site. cuts: all-layer `Cut`s (mask builder); layer_cuts / probs / reads: per layer index;
    outputs: per (site, layer); taps: language-model input taps; start: first position any edit touches."""

    cuts: tuple
    layer_cuts: dict
    probs: dict
    reads: dict
    outputs: dict
    taps: tuple
    start: int

    @property
    def attention_layers(self) -> list:
        return sorted(set(self.layer_cuts) | set(self.probs) | set(self.reads))

    @property
    def empty(self) -> bool:
        return not (self.cuts or self.layer_cuts or self.probs or self.reads or self.outputs or self.taps)


def layer_tuple(layers, what: str, num_layers: int | None = None) -> tuple:
    """Normalise a layer spec (an int, or an iterable of ints; negative counts from the end when `num_layers`
    is known) to a tuple of ints, checking the range."""
    if isinstance(layers, bool) or not isinstance(layers, (int, tuple, list, range)) and not (
            isinstance(layers, torch.Tensor) and layers.dim() <= 1):
        raise InputError(f"{what}: layers must be an int or a tuple of ints, got {type(layers).__name__}")
    seq = [layers] if isinstance(layers, int) else list(layers.tolist() if isinstance(layers, torch.Tensor) else layers)
    out = []
    for l in seq:
        if isinstance(l, bool) or not isinstance(l, int):
            raise InputError(f"{what}: layer {l!r} is not an int")
        if num_layers is not None:
            if not -num_layers <= l < num_layers:
                raise InputError(f"{what}: layer {l} out of range; the model has {num_layers} layers (0..{num_layers - 1})")
            l = l % num_layers
        out.append(int(l))
    return tuple(out)


def make_plan(ctx, edits: list) -> Plan:
    """`edits`: [(intervention, [edit, ...]), ...] in composition order."""
    L = ctx.vlm.num_layers
    cuts, layer_cuts, probs, reads, outputs, taps = [], {}, {}, {}, {}, []
    start, firsts = 10**12, {}
    for iv, es in edits:
        for e in es:
            if not isinstance(e, EDITS):
                raise InputError(f"{iv.name}: edits() returned {type(e).__name__}; expected one of "
                                 f"{', '.join(c.__name__ for c in EDITS)}")
            start = min(start, e.start)
            firsts[iv.name] = min(firsts.get(iv.name, 10**12), e.start)
            if isinstance(e, Cut):
                if e.layers is None:
                    cuts.append(e)
                else:
                    for l in layer_tuple(e.layers, iv.name, L):
                        layer_cuts.setdefault(l, []).append(e)
            elif isinstance(e, TapInputs):
                taps.append(e)
            elif isinstance(e, EditOutput):
                for l in layer_tuple(e.layers, iv.name, L):
                    outputs.setdefault((e.site, l), []).append(e)
            else:
                table = probs if isinstance(e, EditProbs) else reads
                for l in layer_tuple(e.layers, iv.name, L):
                    table.setdefault(l, []).append(e)
    plan = Plan(cuts=tuple(cuts), layer_cuts={k: tuple(v) for k, v in layer_cuts.items()},
                probs={k: tuple(v) for k, v in probs.items()}, reads={k: tuple(v) for k, v in reads.items()},
                outputs={k: tuple(v) for k, v in outputs.items()}, taps=tuple(taps), start=start)
    for l in sorted(set(plan.layer_cuts)) or [None]:
        check_cuts(ctx.layout, plan.cuts + plan.layer_cuts.get(l, ()), layer=l)
    _choose_prefix(ctx, plan, firsts)
    return plan


def check_cuts(layout, cuts, layer=None) -> None:
    """Every non-pad query row keeps at least one visible key. Linear in T: rows are grouped by which cuts
    select them; such a row is empty iff it comes before the first key those cuts leave."""
    if not cuts:
        return
    qs = torch.stack([c.queries.cpu() for c in cuts])  # [E, B, S]
    ks = torch.stack([c.keys.cpu() for c in cuts])
    ok = ~layout.pad
    for b in range(layout.batch_size):
        sig, inv = torch.unique(qs[:, b].T, dim=0, return_inverse=True)  # [U, E], [S]
        for u in range(len(sig)):
            if not sig[u].any():
                continue
            rows = ((inv == u) & ok[b]).nonzero().squeeze(1)
            if not len(rows):
                continue
            allowed = (ok[b] & ~ks[sig[u], b].any(0)).nonzero().squeeze(1)
            if not len(allowed) or int(rows[0]) < int(allowed[0]):
                where = "" if layer is None else f" in layer {layer}"
                raise InputError(f"the edge cuts leave row {b}, position {int(rows[0])} with no visible key{where}; "
                                 "keep at least one key (e.g. do not cut text queries from all text keys)")


def _choose_prefix(ctx, plan, firsts) -> None:
    pre = ctx.offered
    if pre is None:
        return
    if plan.start < pre.length:
        users = sorted(n for n, s in firsts.items() if s < pre.length)
        ctx.prefix_reason = (f"{', '.join(users)} must see position {plan.start}, before the reusable prefix of "
                             f"{pre.length} positions: two full passes")
        ctx.prefix = None
    else:
        ctx.prefix = pre
