"""Attention-probability injection: blend a distribution into selected rows × columns of the attention
probabilities at chosen layers, re-apply the visibility mask, renormalise (VIF's Eq. for A')."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import InputError
from ..interventions import Intervention

MODES = ("convex", "additive")


def inject_probs(probs: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, weights: torch.Tensor,
                 visible: torch.Tensor, alpha: float, mode: str = "convex") -> torch.Tensor:
    """Blend `weights` into `probs` on rows × cols, then zero invisible edges and renormalise the edited rows.

    probs: [B, H, Q, K]; rows: [B, Q] bool; cols: [B, K] bool; weights: [B, K] or [B, Q, K] (zero outside
    cols; a distribution over the selected keys); visible: [B, Q, K] bool. convex: (1−α)·A + α·w on the
    selected columns; additive: A + α·w.
    """
    w = weights[:, None, None, :] if weights.dim() == 2 else weights[:, None]
    sel = (rows[:, :, None] & cols[:, None, :])[:, None]  # [B, 1, Q, K]
    mixed = (1 - alpha) * probs + alpha * w if mode == "convex" else probs + alpha * w
    new = torch.where(sel, mixed, probs) * visible[:, None]
    new = new / new.sum(-1, keepdim=True).clamp(min=1e-30)
    return torch.where(rows[:, None, :, None], new, probs)


@dataclass(frozen=True, eq=False)
class InjectAttention(Intervention):
    """At `layers`, on `queries` rows × `keys` columns: `convex` (1−α)·A + α·w or `additive` A + α·w, then the
    current visibility mask is re-applied and rows renormalised. Gradients flow through `weights`.

    weights: [B, Nk] (a distribution over each row's selected keys, in sequence order), [B, Q, Nk], or a
    callable `(ctx, call) → [B, Nk]` evaluated at the call (VIF computes it from earlier layers).
    `decode`: also inject during decode steps (False = prefill only).
    """

    layers: tuple = ()
    queries: object = "text"
    keys: object = "vision"
    weights: object = None
    alpha: float = 0.5
    mode: str = "convex"
    decode: bool = True
    name: str = "inject"

    def __post_init__(self):
        if self.mode not in MODES:
            raise InputError(f"mode must be one of {MODES}, got {self.mode!r}")
        if not self.layers:
            raise InputError("InjectAttention needs at least one layer")
        if self.weights is None:
            raise InputError("InjectAttention needs weights: a [B, Nk] tensor or a callable (ctx, call) → [B, Nk]")

    def prepare(self, ctx):
        from .masks import _group

        s = ctx.scratch(self)
        s["q"], s["k"] = _group(ctx, self.queries), _group(ctx, self.keys)
        if not (s["q"].any(1) & s["k"].any(1)).any():
            raise InputError(f"{self.name}: no row has both a {self.queries!r} query and a {self.keys!r} key")
        s["applied"] = []

    def attention_layers(self, ctx):
        return set(int(l) for l in self.layers) if float(self.alpha) != 0.0 else set()

    def attention(self, ctx, call):
        if ctx.step > 0 and not self.decode:
            return
        s = ctx.scratch(self)
        rows, cols = call.rows(s["q"]), call.cols(s["k"])
        w = self.weights(ctx, call) if callable(self.weights) else self.weights
        w = w.to(call.q.device)
        full = _scatter_keys(w, cols)
        call.inject(lambda p, vis: inject_probs(p, rows, cols, full.to(p.dtype), vis, float(self.alpha), self.mode))
        s["applied"].append((ctx.step, call.layer))

    def prefix_ok(self, ctx, length):
        return callable(self.weights) or self.weights.dim() == 2  # per-key weights do not depend on Q

    def finish(self, ctx):
        return {"applied": list(ctx.scratch(self)["applied"])}


def _scatter_keys(w: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """[B, Nk] (or [B, Q, Nk]) weights over each row's selected keys → [B, K] (or [B, Q, K]) by position."""
    B, K = cols.shape
    n = cols.sum(1)
    if w.shape[-1] < int(n.max()):
        raise InputError(f"weights have {w.shape[-1]} entries per row but a row selects {int(n.max())} keys")
    # rank of each selected key within its row; unselected keys point at a zero slot
    rank = torch.cumsum(cols.long(), 1) - 1
    idx = torch.where(cols, rank, torch.full_like(rank, w.shape[-1]))
    padded = torch.cat([torch.nan_to_num(w), torch.zeros(*w.shape[:-1], 1, dtype=w.dtype, device=w.device)], -1)
    if w.dim() == 2:
        return torch.gather(padded, 1, idx)
    return torch.gather(padded, 2, idx[:, None, :].expand(B, w.shape[1], K))
