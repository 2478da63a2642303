"""Attention-probability injection: blend a distribution into selected rows × columns of the attention
probabilities at chosen layers, re-apply the visibility mask, renormalise (VIF's Eqs. 6–7 for A', A'').

The one implementation of "inject a map into attention": `interp.VIF` composes an `InjectAttention` whose
weights are a callable returning the map its CVAE rendered at the extraction layer, and `interp.vif.FixedMap`
one whose weights are the batch's fixed map; both report its diagnostics under their own name."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..engine import EditProbs, Intervention
from ..engine.core import describe
from ..engine.plan import layer_tuple
from ..errors import InputError, NoEffectError, SiteError, warn
from ..layout import check_group

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
    callable `(ctx, call) → [B, Nk]` (or one row per expanded beam, [B·expand, Nk]) evaluated at each
    attention call, e.g. a map computed from an earlier layer of the same pass (VIF's).
    `decode`: also inject during decode steps (False = prefill only). alpha in [0, 1] for convex.
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
            raise InputError(f"InjectAttention mode must be one of {MODES}, got {self.mode!r}")
        check_group(self.queries, f"{self.name} queries")
        check_group(self.keys, f"{self.name} keys")
        layers = layer_tuple(self.layers, self.name)
        if not layers:
            raise InputError("InjectAttention needs at least one layer")
        object.__setattr__(self, "layers", layers)
        a = self.alpha
        if isinstance(a, bool) or not isinstance(a, (int, float)) or not math.isfinite(a) or a < 0 or (
                self.mode == "convex" and a > 1):
            rng = "[0, 1]" if self.mode == "convex" else "≥ 0"
            raise InputError(f"InjectAttention alpha must be a number in {rng} for mode={self.mode!r}, got {a!r}")
        w = self.weights
        if w is None:
            raise InputError("InjectAttention needs weights: a [B, Nk] tensor or a callable (ctx, call) → [B, Nk]")
        if not callable(w):
            if not isinstance(w, torch.Tensor):
                raise InputError(f"InjectAttention weights must be a torch tensor [B, Nk] or [B, Q, Nk] (or a "
                                 f"callable), got {type(w).__name__}; use torch.tensor(...)")
            check_weights(w, self.name)

    def prepare(self, ctx):
        s = ctx.scratch(self)
        s["q"], s["k"] = ctx.group(self.queries), ctx.group(self.keys)
        if not (s["q"].any(1) & s["k"].any(1)).any():
            raise NoEffectError(f"{self.name}: no row has both a {describe(self.queries)} query and a "
                                f"{describe(self.keys)} key; an intervention that does nothing is an error")
        if not callable(self.weights):
            s["w"] = self._fit(ctx, self.weights.to(ctx.device), s["k"])
        s["applied"], s["visible"] = [], {}

    def _fit(self, ctx, w, keys):
        """Check weights against the batch and repeat them for HF's batch expansion."""
        B, nk = len(ctx.batch), int(keys.sum(1).max())
        if w.shape[0] != B:
            raise InputError(f"{self.name}: weights have {w.shape[0]} rows but the batch has {B}; give one row "
                             f"of weights per batch row, shape [{B}, {nk}]")
        if w.shape[-1] != nk:
            raise InputError(f"{self.name}: weights have {w.shape[-1]} entries per row but the key group "
                             f"{describe(self.keys)} selects {nk} tokens (the longest row); shape [{B}, {nk}]")
        if w.dim() == 3 and w.shape[1] != ctx.prompt_layout.seq_len:
            raise InputError(f"{self.name}: [B, Q, Nk] weights need Q = {ctx.prompt_layout.seq_len} (the prompt "
                             f"length), got {w.shape[1]}")
        n = keys[:: ctx.expand].sum(1) if keys.shape[0] != B else keys.sum(1)  # [B] keys each row selects
        beyond = torch.arange(nk, device=w.device)[None, :] >= n.to(w.device)[:, None]  # [B, Nk]
        over = (w.detach() != 0) & (beyond[:, None, :] if w.dim() == 3 else beyond)
        if bool(over.any()):  # ragged rows padded with mass: legitimate, but that mass is not injected
            rows = over.reshape(B, -1).any(1).nonzero().flatten().tolist()
            warn(f"{self.name}: rows {rows} select fewer {describe(self.keys)} keys ({n[rows].tolist()}) than the "
                 f"weights have entries ({nk}), and their weights beyond their own keys are non-zero: those entries "
                 "are ignored, not renormalised; pad shorter rows with 0 to say so")
        return ctx.rows(w)

    def edits(self, ctx):
        if float(self.alpha) == 0.0:
            return []  # a no-op by definition: bit-identical to the plain model
        s = ctx.scratch(self)
        qsel = s["q"].any(0).nonzero()
        per_query = not callable(self.weights) and self.weights.dim() == 3  # tied to the full prompt's rows
        start = 0 if per_query or not len(qsel) else int(qsel[0])
        rows = s["q"] if self.decode else s["q"] & ~ctx.layout.generated.to(s["q"].device)
        return [EditProbs(layers=self.layers, fn=self._apply, start=start, decode=self.decode,
                          target=(rows, s["k"]))]

    def _apply(self, call, p, vis):
        ctx = call.ctx
        s = ctx.scratch(self)
        rows, cols = call.rows(s["q"]), call.cols(s["k"])
        if callable(self.weights):
            w = self.weights(ctx, call)
            if not isinstance(w, torch.Tensor):
                raise InputError(f"{self.name}: the weights callable returned {type(w).__name__}; return a float "
                                 "tensor [B, Nk]")
            check_weights(w, self.name)
            w = w.to(call.q.device)
            expanded = w.shape[0] == call.B != len(ctx.batch)  # already one row per beam / returned sequence
            w = w if expanded else self._fit(ctx, w, s["k"])
        else:
            w = s["w"]
            if w.dim() == 3 and w.shape[1] != call.Q:
                raise SiteError(f"{self.name}: [B, Q, Nk] weights cover the {w.shape[1]} prompt rows but this pass "
                                f"has {call.Q} query rows; use [B, Nk] weights or decode=False")
        full = _scatter_keys(w, cols)
        s["applied"].append((ctx.step, call.layer))
        n = (rows[:, :, None] & cols[:, None, :] & vis).sum()  # entries written that the mask lets through
        s["visible"][call.layer] = s["visible"].get(call.layer, 0) + n
        return inject_probs(p, rows, cols, full.to(p.dtype), vis, float(self.alpha), self.mode)

    def finish(self, ctx):
        """applied: [(step, layer)]; entries / kept: {layer: n} (query, key) entries targeted over the planned
        positions and those no cut removes (the plan's count); visible: {layer: n} entries actually written
        through the mask, summed over steps (≤ kept; fewer when generation stops early or decode=False)."""
        s = ctx.scratch(self)
        cov = ctx.coverage.get(self.name, {}).get("layers", {})
        return {"applied": list(s["applied"]), "entries": {l: n for l, (n, _) in cov.items()},
                "kept": {l: k for l, (_, k) in cov.items()}, "visible": {l: int(v) for l, v in s["visible"].items()}}


def check_weights(w: torch.Tensor, name: str) -> None:
    """Weights are finite and non-negative, [B, Nk] or [B, Q, Nk]."""
    if w.dim() not in (2, 3):
        raise InputError(f"{name}: weights must be [B, Nk] or [B, Q, Nk], got shape {tuple(w.shape)}")
    if not w.is_floating_point():
        raise InputError(f"{name}: weights must be a float tensor, got dtype {w.dtype}")
    if not bool(torch.isfinite(w).all()):
        raise InputError(f"{name}: weights contain NaN or inf; give finite, non-negative weights")
    if bool((w < 0).any()):
        raise InputError(f"{name}: weights must be non-negative (a distribution over keys), min is {float(w.min()):.3g}")


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
