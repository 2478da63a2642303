"""Edge masks: cut attention from a query group to a key group.

All layers (`layers=None`) → one `and_mask_function` at the mask builder per forward (fast under SDPA);
a subset of layers → the mask is edited at those layers' attention calls. Blocked edges get
`torch.finfo(dtype).min` (never a bool mask added as 0/1 under eager).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import InputError
from ..interventions import Intervention


@dataclass(frozen=True, eq=False)
class EdgeMask(Intervention):
    """Block attention from `queries` to `keys` (groups: "vision", "text", "question", "generated", "last",
    "answer", "all", a bool [B, T] tensor, or a callable of the layout) in `layers` (None = all).

    Generated tokens belong to "text" and "generated". `EdgeMask("text", "vision")` blinds the model.
    """

    queries: object = "text"
    keys: object = "vision"
    layers: tuple | None = None
    name: str = "edge_mask"

    def edges(self, ctx):
        q = _group(ctx, self.queries)
        k = _group(ctx, self.keys)
        cut = int((q.sum(1) * k.sum(1)).sum())
        if cut == 0:
            raise InputError(f"{self.name}: EdgeMask({self.queries!r}, {self.keys!r}) selects no edge in this "
                             "batch; an intervention that does nothing is an error")
        ctx.scratch(self)["n"] = (q.sum(1), k.sum(1))
        return [(q, k)]

    def edge_layers(self, ctx):
        if self.layers is None:
            return None
        layers = tuple(int(l) for l in self.layers)
        if not layers:
            raise InputError(f"{self.name}: layers is empty; use None for all layers")
        return layers

    def prefix_ok(self, ctx, length):
        return True  # masks are functions of absolute positions

    def finish(self, ctx):
        nq, nk = ctx.scratch(self)["n"]
        L = ctx.vlm.num_layers if self.layers is None else len(tuple(self.layers))
        return {"queries": nq.cpu(), "keys": nk.cpu(), "layers": L,
                "edges_per_layer": (nq * nk).cpu()}


def _group(ctx, g) -> torch.Tensor:
    """Group over prompt + generated positions ([B, T+N]); tensors given for the prompt are padded."""
    lay = ctx.layout
    if isinstance(g, torch.Tensor) and g.shape[1] == ctx.batch.layout.seq_len and lay.seq_len > g.shape[1]:
        g = torch.cat([g.cpu(), torch.zeros(g.shape[0], lay.seq_len - g.shape[1], dtype=torch.bool)], dim=1)
    if callable(g) and not isinstance(g, torch.Tensor):
        g = g(lay)
    return lay.group(g).to(ctx.device)
