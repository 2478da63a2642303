"""The pure-torch math of AIF (Adaptive Information Flow, CVPR 2026): token statistics, ratio choice, masks.

No model, no nnsight: every function here takes small tensors of attention statistics and returns small
tensors, so it runs on the server side of a remote trace and is tested against plain-Python loops.

Pipeline (paper §"Key Designs" 1 and 2; our text of the paper has no equation numbers):

    d [B, L, Nv]  --token_stats-->  mu, entropy [B, Nv]  --choose_ratio-->  RatioChoice(kept [B, Nv], ...)

- ``d[b, l, i]``: token dynamics, the max over text query rows of the (head-combined) attention probability
  from text to vision token ``i`` in layer ``l`` (paper: ``d_{v_i}^l = max_j a_{i,j}^l``). Rows with fewer
  vision tokens are padded with NaN on the ``Nv`` axis.
- ``mu[b, i]``: mean over layers; ``entropy[b, i]``: entropy of the token's cross-layer curve normalised to
  sum 1. Low entropy = activation concentrated in a few layers = important; high entropy = background.
- ``choose_ratio``: mask the highest-entropy tokens, scanning candidate ratios and keeping the one whose
  kept-token attention entropy ``S(r)`` moves furthest from the all-token entropy ``S0``.
- ``mu_keep``: the paper's μ-based masking experiment (mask the x% lowest- or highest-μ tokens; returns the kept ones).

Conventions shared by every function here:

- ``valid: [B, Nv]`` bool, True = a real vision token. When omitted it is inferred from finiteness.
- A count of tokens to mask is ``round(r · n_valid)`` with round-half-up (``floor(x + 0.5)``, with a 1e-9
  nudge so that ``0.1 · 25`` counts as 2.5 → 3 whatever the float error), not Python's half-to-even.
- Ties in a ranking are broken by token index: among equal keys the lower index is masked first. This makes
  every mask a deterministic function of its inputs (stable sort), independent of device and batch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Sequence

import torch

from interp.errors import InputError

DEFAULT_RATIOS: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)

# Criterion values within this distance of the best count as ties (→ smallest ratio). S is computed in
# float64, so this only absorbs summation-order noise; genuinely different candidates differ by far more.
_TIE_TOL = 1e-12
# Nudge for round-half-up so that products like 0.1 * 25 = 2.5000000000000004 or 2.4999999999999996 agree.
_ROUND_EPS = 1e-9


# --------------------------------------------------------------------------------------------- helpers


def _compute_dtype(t: torch.Tensor) -> torch.dtype:
    """float64 stays float64; everything else (bf16, fp16, fp32, ints) is computed in float32."""
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def _resolve_valid(valid: torch.Tensor | None, inferred: torch.Tensor, name: str) -> torch.Tensor:
    """Return the validity mask `[B, Nv]`: the given one (checked) or `inferred` (finite entries)."""
    if valid is None:
        return inferred
    if valid.dtype != torch.bool:
        raise InputError(
            f"`valid` must be a bool tensor [B, Nv] (True = real vision token), got dtype {valid.dtype}. "
            "Fix: pass `valid=mask.bool()`."
        )
    if valid.shape != inferred.shape:
        raise InputError(
            f"`valid` has shape {tuple(valid.shape)} but {name} implies [B, Nv] = {tuple(inferred.shape)}. "
            "Fix: pass one flag per row and vision token."
        )
    valid = valid.to(inferred.device)
    if bool((valid & ~inferred).any()):
        raise InputError(
            f"{name} is NaN/inf at a position that `valid` marks as a real vision token. "
            "Fix: pad with NaN only where `valid` is False, or pass `valid=None` to infer it from NaN padding."
        )
    return valid


def _round_half_up(x: torch.Tensor) -> torch.Tensor:
    """`floor(x + 0.5)` as int64, robust to float error at exact halves."""
    return torch.floor(x + 0.5 + _ROUND_EPS).to(torch.int64)


def _mask_first(keys: torch.Tensor, n_mask: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mask, per row, the `n_mask[b]` valid tokens with the smallest `keys` (ties: lower index first).

    keys: [B, Nv] float (invalid entries are ignored); n_mask: [B] int64; valid: [B, Nv] bool.
    Returns masked: [B, Nv] bool.
    """
    keys = keys.masked_fill(~valid, math.inf)  # invalid tokens sort last, never masked
    order = torch.sort(keys, dim=-1, stable=True).indices  # [B, Nv]
    ranks = torch.empty_like(order)
    ranks.scatter_(-1, order, torch.arange(order.shape[-1], device=order.device).expand_as(order))
    return (ranks < n_mask.unsqueeze(-1)) & valid


def _shannon(weights: torch.Tensor, select: torch.Tensor) -> torch.Tensor:
    """Shannon entropy (nats) of `weights` over the `select`ed entries, normalised to sum 1 per row.

    weights: [B, Nv] float ≥ 0; select: [B, Nv] bool with ≥ 1 True per row. Returns [B].
    A row whose selected weights are all 0 is treated as uniform over the selection (entropy log n): the
    entropy of 0/0 is undefined, and "no attention anywhere" carries no evidence of concentration.
    """
    w = torch.where(select, weights, torch.zeros_like(weights))
    total = w.sum(-1, keepdim=True)
    n = select.sum(-1, keepdim=True).to(w.dtype)
    p = torch.where(total > 0, w / total.clamp_min(torch.finfo(w.dtype).tiny), select.to(w.dtype) / n)
    return 0.0 - torch.xlogy(p, p).sum(-1)  # 0.0 - x: no -0.0 in outputs


# --------------------------------------------------------------------------------------------- token stats


def token_stats(d: torch.Tensor, valid: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and cross-layer entropy of each vision token's dynamics (AIF, Key Design 1).

    d: [B, L, Nv] token dynamics (≥ 0; NaN on padded vision tokens). valid: [B, Nv] bool or None (then a
    token is valid iff its curve is finite in every layer).
    Returns (mu, entropy), each [B, Nv], float32 (float64 for float64 input), NaN for invalid tokens:

        mu[i]      = (1/L) Σ_l d[l, i]
        p[l, i]    = d[l, i] / (L · mu[i])              (the curve normalised to sum 1 over layers)
        entropy[i] = -Σ_l p[l, i] log p[l, i]           (0 · log 0 = 0)

    A token with mu = 0 (never attended in any layer) gets the maximum entropy log L, i.e. its curve is
    treated as uniform: this is the limit of a constant curve ε·1 as ε → 0, it avoids 0/0, and it ranks a
    token the text never looks at among the first to mask, which is what "irregular = background" intends.
    bf16/fp16 input is computed in float32 (bf16 sums over layers lose the low digits entropy needs).

    Example:
        >>> d = torch.tensor([[[1.0, 0.2], [0.0, 0.2]]])   # B=1, L=2, Nv=2
        >>> token_stats(d)[1]                                # token 0 peaks in one layer, token 1 is flat
        tensor([[0.0000, 0.6931]])
    """
    if d.ndim != 3:
        raise InputError(
            f"token dynamics `d` must be [B, L, Nv] (batch, layers, vision tokens), got shape {tuple(d.shape)}. "
            "Fix: for one sample use d.unsqueeze(0); for a [L, Nv] array add the batch axis."
        )
    B, L, Nv = d.shape
    if L == 0:
        raise InputError("token dynamics `d` has 0 layers; the cross-layer entropy needs L ≥ 1. "
                         "Fix: capture the statistics of at least one layer.")
    d = d.to(_compute_dtype(d))
    finite = torch.isfinite(d).all(dim=1)  # [B, Nv]
    valid = _resolve_valid(valid, finite, "token dynamics `d`")
    d = torch.where(valid.unsqueeze(1), d, torch.zeros_like(d))  # [B, L, Nv], padding → 0
    if bool((d < 0).any()):
        raise InputError(
            "token dynamics `d` has negative entries; they are attention probabilities and must be ≥ 0. "
            "Fix: pass post-softmax probabilities (max over text queries), not pre-softmax scores."
        )

    total = d.sum(dim=1)  # [B, Nv] = L · mu
    mu = total / L
    p = d / total.clamp_min(torch.finfo(d.dtype).tiny).unsqueeze(1)  # [B, L, Nv]
    entropy = 0.0 - torch.xlogy(p, p).sum(dim=1)  # [B, Nv]; 0.0 - x: no -0.0 in outputs
    entropy = torch.where(total > 0, entropy, torch.full_like(entropy, math.log(L)))

    nan = torch.full_like(mu, math.nan)
    return torch.where(valid, mu, nan), torch.where(valid, entropy, nan)


# --------------------------------------------------------------------------------------------- ratio choice


@dataclass(frozen=True)
class RatioChoice:
    """The adaptive mask ratio chosen per row, with everything needed to inspect the choice.

    Fields (B rows, R candidate ratios, Nv vision tokens):
        ratio:     [B] float64, the chosen candidate ratio.
        kept:      [B, Nv] bool, True = text may attend this vision token (False for invalid tokens).
        n_masked:  [B] int64, vision tokens actually masked (after the "keep at least one" clip).
        S0:        [B] float64, entropy of mu over all valid tokens (normalised if criterion="normalized").
        S:         [B, R] float64, entropy of mu over the kept tokens for each candidate ratio.
        ratios:    [R] float64, the candidates that were scanned, ascending (columns of S).
        criterion: "paper" or "normalized".
    """

    ratio: torch.Tensor
    kept: torch.Tensor
    n_masked: torch.Tensor
    S0: torch.Tensor
    S: torch.Tensor
    ratios: torch.Tensor
    criterion: str

    @property
    def score(self) -> torch.Tensor:
        """|S(r) − S0|: [B, R], the quantity maximised."""
        return (self.S - self.S0.unsqueeze(-1)).abs()


def _check_ratios(ratios: Sequence[float], max_ratio: float | None) -> list[float]:
    rs = [float(r) for r in ratios]
    if not rs:
        raise InputError("`ratios` is empty. Fix: pass candidate ratios in (0, 1), e.g. (0.1, 0.2, ..., 0.9).")
    bad = [r for r in rs if not (0.0 < r < 1.0)]
    if bad:
        raise InputError(
            f"mask ratios must lie strictly between 0 and 1 (the fraction of vision tokens cut from text), "
            f"got {bad}. Fix: use values like 0.1 ... 0.9; to mask nothing, do not apply AIF."
        )
    if max_ratio is not None:
        if not (0.0 < float(max_ratio) <= 1.0):
            raise InputError(f"`max_ratio` must lie in (0, 1], got {max_ratio}. Fix: e.g. max_ratio=0.5.")
        rs = [r for r in rs if r <= float(max_ratio)]
        if not rs:
            raise InputError(
                f"`max_ratio={max_ratio}` excludes every candidate ratio {sorted(set(map(float, ratios)))}. "
                "Fix: raise max_ratio or add smaller candidates."
            )
    return sorted(set(rs))


def choose_ratio(
    mu: torch.Tensor,
    entropy: torch.Tensor,
    *,
    ratios: Sequence[float] = DEFAULT_RATIOS,
    criterion: Literal["paper", "normalized"] = "paper",
    max_ratio: float | None = None,
    valid: torch.Tensor | None = None,
) -> RatioChoice:
    """Choose, per row, how many high-entropy vision tokens to cut from text (AIF, Key Design 2).

    mu, entropy: [B, Nv] from `token_stats` (NaN on invalid tokens). valid: [B, Nv] bool or None (then
    inferred as "mu and entropy finite"). Every row needs ≥ 1 valid token.

    For each candidate r (ascending, those ≤ max_ratio): mask the k(r) = round(r · n_valid) highest-entropy
    valid tokens (ties: lower index masked first), clipped to n_valid − 1 so at least one token stays
    visible; then

        S0   = H(mu / Σ mu)        over all valid tokens
        S(r) = H(mu / Σ mu)        over the kept tokens,    H(p) = -Σ p log p
        r*   = argmax_r |S(r) − S0|

    criterion="normalized" divides each entropy by log(number of tokens it is over), so that S no longer falls
    merely because fewer outcomes remain; with the paper's raw criterion the largest ratio usually wins
    (DESIGN.md, "AIF, precisely"). Over a single token the normalised entropy is taken as 1: the only
    distribution on one outcome is uniform on its support, and uniform distributions have normalised entropy
    1 for every n. (Taking 0 instead would make "keep one token" the winner in small rows, the very bias the
    normalisation removes.)

    Ties in |S − S0| (within 1e-12) go to the smallest ratio: the least intervention that achieves the best
    score. Rows with very few tokens can have several ratios with the same k(r) (or k = 0 for every r when
    n_valid = 1); `ratio` is then the smallest such candidate and `n_masked` says what was really masked.
    S is computed in float64 so the choice does not depend on device or input dtype.

    Returns a `RatioChoice` (ratio [B], kept [B, Nv], n_masked [B], S0 [B], S [B, R], ratios [R]).
    """
    if criterion not in ("paper", "normalized"):
        raise InputError(f"unknown criterion {criterion!r}. Fix: use 'paper' or 'normalized'.")
    if mu.ndim != 2 or entropy.shape != mu.shape:
        raise InputError(
            f"`mu` and `entropy` must both be [B, Nv], got {tuple(mu.shape)} and {tuple(entropy.shape)}. "
            "Fix: pass the two outputs of token_stats(d) unchanged."
        )
    rs = _check_ratios(ratios, max_ratio)
    mu64 = mu.to(torch.float64)
    ent64 = entropy.to(device=mu.device, dtype=torch.float64)
    valid = _resolve_valid(valid, torch.isfinite(mu64) & torch.isfinite(ent64), "`mu`/`entropy`")
    n_valid = valid.sum(-1)  # [B]
    if bool((n_valid == 0).any()):
        rows = torch.nonzero(n_valid == 0).flatten().tolist()
        raise InputError(
            f"rows {rows} have no valid vision tokens, so there is nothing to rank or mask. "
            "Fix: drop rows without an image before applying AIF, or check the `valid` mask."
        )
    mu64 = torch.where(valid, mu64, torch.zeros_like(mu64))
    if bool((mu64 < 0).any()):
        raise InputError("`mu` has negative entries; it is a mean attention probability and must be ≥ 0. "
                         "Fix: pass mu from token_stats.")

    def crit(select: torch.Tensor) -> torch.Tensor:  # [B]
        h = _shannon(mu64, select)
        if criterion == "normalized":
            n = select.sum(-1).to(torch.float64)
            h = torch.where(n > 1, h / torch.log(n.clamp_min(2.0)), torch.ones_like(h))
        return h

    S0 = crit(valid)  # [B]
    neg_ent = -torch.where(valid, ent64, torch.zeros_like(ent64))  # highest entropy first = smallest key
    r_t = torch.tensor(rs, dtype=torch.float64, device=mu.device)  # [R]
    k = _round_half_up(r_t.unsqueeze(0) * n_valid.unsqueeze(-1).to(torch.float64))  # [B, R]
    k = torch.minimum(k, (n_valid - 1).unsqueeze(-1))

    S_cols, kept_cols = [], []
    for j in range(len(rs)):
        masked = _mask_first(neg_ent, k[:, j], valid)  # [B, Nv]
        kept = valid & ~masked
        kept_cols.append(kept)
        S_cols.append(crit(kept))
    S = torch.stack(S_cols, dim=-1)  # [B, R]
    kept_all = torch.stack(kept_cols, dim=1)  # [B, R, Nv]

    score = (S - S0.unsqueeze(-1)).abs()  # [B, R]
    best = score.max(dim=-1, keepdim=True).values
    is_best = score >= best - _TIE_TOL
    # first True along R = smallest ratio among the ties (argmax of a bool returns the first maximum)
    idx = torch.argmax(is_best.to(torch.int8), dim=-1)  # [B]
    rows = torch.arange(mu.shape[0], device=mu.device)
    return RatioChoice(
        ratio=r_t[idx],
        kept=kept_all[rows, idx],
        n_masked=k[rows, idx],
        S0=S0,
        S=S,
        ratios=r_t,
        criterion=criterion,
    )


# --------------------------------------------------------------------------------------------- mu masking


def mu_keep(
    mu: torch.Tensor,
    fraction: float,
    *,
    which: Literal["lowest", "highest", "random"] = "lowest",
    generator: torch.Generator | None = None,
    valid: torch.Tensor | None = None,
) -> torch.Tensor:
    """The vision tokens kept when a fraction of them, ranked by mean attention mu, is masked (the paper's μ-based
    masking study).

    mu: [B, Nv] (NaN on invalid tokens); fraction in [0, 1]; valid: [B, Nv] bool or None (inferred as finite
    mu). Masks round(fraction · n_valid) valid tokens per row (round half up): the lowest-mu ones, the
    highest-mu ones, or a uniformly random subset (`generator` makes it reproducible; without one the draw is
    on the CPU from the global RNG, so `torch.manual_seed` gives the same mask on every device). Ties in mu:
    lower index masked first. Unlike `choose_ratio`, fraction = 1 (mask every token) is allowed: it is the
    "text blind to the image" control.
    Returns kept: [B, Nv] bool (False for masked and for invalid tokens).

    Paper finding it reproduces: masking 90% of the lowest-mu tokens barely changes accuracy; masking 10% of
    the highest-mu tokens costs over half of it.
    """
    if mu.ndim != 2:
        raise InputError(f"`mu` must be [B, Nv], got shape {tuple(mu.shape)}. Fix: pass mu from token_stats.")
    if not (0.0 <= float(fraction) <= 1.0):
        raise InputError(f"`fraction` must lie in [0, 1], got {fraction}. Fix: e.g. fraction=0.9 for 90%.")
    if which not in ("lowest", "highest", "random"):
        raise InputError(f"unknown `which={which!r}`. Fix: use 'lowest', 'highest' or 'random'.")
    mu64 = mu.to(torch.float64)
    valid = _resolve_valid(valid, torch.isfinite(mu64), "`mu`")
    n_valid = valid.sum(-1)
    k = _round_half_up(float(fraction) * n_valid.to(torch.float64))  # [B]
    if which == "lowest":
        keys = mu64
    elif which == "highest":
        keys = -mu64
    else:
        gen_device = generator.device if generator is not None else "cpu"
        keys = torch.rand(mu.shape, generator=generator, dtype=torch.float64, device=gen_device).to(mu.device)
    masked = _mask_first(torch.where(valid, keys, torch.zeros_like(keys)), k, valid)
    return valid & ~masked
