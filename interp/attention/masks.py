"""Edge masks: cut attention from a query group to a key group.

All layers (`layers=None`) → one cut of the mask the model builds per forward (fast under SDPA); a subset of
layers → the mask is edited at those layers' attention calls. Cut edges get `torch.finfo(dtype).min` under
eager (never a bool mask added as 0/1) and False under SDPA.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..engine import Cut, Intervention
from ..engine.core import describe
from ..engine.plan import layer_tuple
from ..errors import InputError, NoEffectError
from ..layout import check_group


@dataclass(frozen=True, eq=False)
class EdgeMask(Intervention):
    """Block attention from `queries` to `keys` (token groups: "vision", "text", "question", "generated",
    "last", "answer", "all", a bool [B, T] tensor, or a callable of the layout) in `layers` (None = all; an
    int is one layer).

    Generated tokens belong to "text" and "generated". `EdgeMask("text", "vision")` blinds the model.
    Diagnostics: queries [B], keys [B] (selected token counts), layers, edges_per_layer [B] (causal
    (query, key) pairs cut per layer, over the planned positions).
    """

    queries: object = "text"
    keys: object = "vision"
    layers: tuple | None = None
    name: str = "edge_mask"

    def __post_init__(self):
        check_group(self.queries, f"{self.name} queries")
        check_group(self.keys, f"{self.name} keys")
        if self.layers is not None:
            layers = layer_tuple(self.layers, self.name)
            if not layers:
                raise InputError(f"{self.name}: layers is empty; use None for all layers")
            object.__setattr__(self, "layers", layers)

    def edits(self, ctx):
        q, k = ctx.group(self.queries), ctx.group(self.keys)
        n = (k.long().cumsum(1) * q).sum(1)  # causal edges: each query sees the keys at or before it
        if not bool(n.any()):
            raise NoEffectError(f"{self.name}: EdgeMask({describe(self.queries)}, {describe(self.keys)}) selects no edge in this "
                             "batch (a group is empty, or every selected key comes after every selected query); "
                             "an intervention that does nothing is an error")
        ctx.scratch(self)["n"] = (q.sum(1), k.sum(1), n)
        return [Cut(q, k, self.layers)]

    def finish(self, ctx):
        nq, nk, n = ctx.scratch(self)["n"]
        L = ctx.vlm.num_layers if self.layers is None else len(self.layers)
        return {"queries": nq.cpu(), "keys": nk.cpu(), "layers": L, "edges_per_layer": n.cpu()}
