"""The spatial Gaussian mixture of VIF: render a mixture onto a vision-token grid, and its regularisers.

Pure torch and differentiable (VIF paper §4.3 "Decoding to Spatial GMM", Eqs. 3–4; §4.4 "Sparsity
Regularization", Eq. 9). Coordinates: a point is (x, y) in [0, 1]², x along columns (left → right), y along
rows (top → bottom); maps are flattened row-major, cell (r, c) at index r · cols + c, which is the order of
vision tokens in LLaVA-style sequences.

Two places where the public reference code differs from the paper, both offered as options (DESIGN.md,
"VIF, precisely"):

- ``normalize``: the paper sum-normalises the importance map into a probability distribution (Eq. 4,
  default "paper"); the reference applies a softmax over cells to the raw map ("reference"). The raw map
  lies in [0, Σ_k w_k] = [0, 1], so the softmax's largest/smallest cell ratio is at most e ≈ 2.72: on a
  24×24 grid the reference map is within a factor e of uniform whatever the mixture, while the paper's map
  can be as peaked as the Gaussians are.
- ``coords``: we evaluate at patch centres ((c + ½)/cols, (r + ½)/rows) ("centers", default); the reference
  evaluates at linspace(0, 1, n) per axis, so the first and last cells sit on the image border ("reference").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence

import torch

from interp.errors import InputError

Normalize = Literal["paper", "reference", "none"]
Coords = Literal["centers", "reference"]



@dataclass(frozen=True)
class GMMParams:
    """A batch of K-component isotropic (or per-axis) spatial mixtures.

    centers: [B, K, 2] (x, y) in [0, 1]; sigmas: [B, K] isotropic or [B, K, 2] (σx, σy); weights: [B, K]
    (≥ 0, summing to 1 when produced by `FocusDecoder`).
    """

    centers: torch.Tensor
    sigmas: torch.Tensor
    weights: torch.Tensor


def _check_params(centers: torch.Tensor, sigmas: torch.Tensor, weights: torch.Tensor) -> None:
    if centers.ndim != 3 or centers.shape[-1] != 2:
        raise InputError(
            f"`centers` must be [B, K, 2] (x, y in [0, 1]), got shape {tuple(centers.shape)}. "
            "Fix: stack x and y on the last axis."
        )
    B, K, _ = centers.shape
    if tuple(sigmas.shape) not in ((B, K), (B, K, 2)):
        raise InputError(
            f"`sigmas` must be [B, K] (isotropic) or [B, K, 2] (σx, σy) with B={B}, K={K}, "
            f"got shape {tuple(sigmas.shape)}. Fix: one spread per component (or per component and axis)."
        )
    if tuple(weights.shape) != (B, K):
        raise InputError(
            f"`weights` must be [B, K] with B={B}, K={K}, got shape {tuple(weights.shape)}. "
            "Fix: one mixture weight per component."
        )


def _check_grid(grid: Sequence[int]) -> tuple[int, int]:
    try:
        rows, cols = (int(v) for v in grid)
    except (TypeError, ValueError):
        raise InputError(f"`grid` must be (rows, cols), got {grid!r}. Fix: e.g. grid=(24, 24).") from None
    if rows < 1 or cols < 1 or (rows, cols) != tuple(grid):
        raise InputError(f"`grid` must be two positive integers (rows, cols), got {grid!r}. Fix: e.g. (24, 24).")
    return rows, cols


def grid_points(grid: Sequence[int], *, coords: Coords = "centers", device=None, dtype=torch.float32) -> torch.Tensor:
    """The (x, y) evaluation point of every cell, row-major: [rows · cols, 2].

    coords="centers": ((c + ½)/cols, (r + ½)/rows), the centre of each patch.
    coords="reference": (linspace(0, 1, cols)[c], linspace(0, 1, rows)[r]), as the reference code.
    """
    rows, cols = _check_grid(grid)
    if coords == "centers":
        ys = (torch.arange(rows, device=device, dtype=dtype) + 0.5) / rows
        xs = (torch.arange(cols, device=device, dtype=dtype) + 0.5) / cols
    elif coords == "reference":
        ys = torch.linspace(0, 1, rows, device=device, dtype=dtype)
        xs = torch.linspace(0, 1, cols, device=device, dtype=dtype)
    else:
        raise InputError(f"unknown coords={coords!r}. Fix: use 'centers' (patch centres) or 'reference'.")
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")  # [rows, cols] each
    return torch.stack([xx, yy], dim=-1).reshape(rows * cols, 2)


def render_gmm(
    centers: torch.Tensor,
    sigmas: torch.Tensor,
    weights: torch.Tensor,
    grid: Sequence[int],
    *,
    normalize: Normalize = "paper",
    coords: Coords = "centers",
) -> torch.Tensor:
    """Render a spatial Gaussian mixture on a (rows, cols) grid: [B, rows · cols], row-major.

    centers: [B, K, 2] (x, y); sigmas: [B, K] or [B, K, 2]; weights: [B, K]; grid: (rows, cols).
    Each component's response at cell point p (VIF Eq. 3) and the aggregated map (Eq. 4):

        G_k(p) = exp(-‖p − c_k‖² / (2 σ_k²))                 isotropic
        G_k(p) = exp(-(dx² / σ_kx² + dy² / σ_ky²) / 2)        per-axis
        M(p)   = Σ_k w_k G_k(p)

    normalize="paper": M / Σ_p M (Eq. 4, sums to 1; the sum is floored at the dtype's smallest normal number
    rather than offset by an eps, so a tiny but nonzero map is still exactly normalised and a map whose
    Gaussians all underflowed stays zeros instead of NaN); "reference": softmax_p(M), the reference
    code's choice (nearly uniform, see module docstring); "none": the raw M. Values are not range-checked
    (that would force a device sync per call). Half-precision inputs are computed and returned in float32.
    Differentiable in centers, sigmas and weights.

    Example:
        >>> c = torch.tensor([[[0.25, 0.75]]]); s = torch.tensor([[0.1]]); w = torch.ones(1, 1)
        >>> render_gmm(c, s, w, (2, 2)).argmax().item()      # bottom-left cell: row 1, col 0
        2
    """
    _check_params(centers, sigmas, weights)
    dtype = torch.float64 if centers.dtype == torch.float64 else torch.float32
    centers, sigmas, weights = (t.to(dtype) for t in (centers, sigmas, weights))
    pts = grid_points(grid, coords=coords, device=centers.device, dtype=dtype)  # [N, 2]

    diff = pts[None, None, :, :] - centers[:, :, None, :]  # [B, K, N, 2]
    if sigmas.ndim == 2:
        quad = diff.pow(2).sum(-1) / sigmas.pow(2).unsqueeze(-1)  # [B, K, N]
    else:
        quad = (diff.pow(2) / sigmas.pow(2).unsqueeze(2)).sum(-1)  # [B, K, N]
    raw = (weights.unsqueeze(-1) * torch.exp(-0.5 * quad)).sum(1)  # [B, N]

    if normalize == "paper":
        return raw / raw.sum(-1, keepdim=True).clamp_min(torch.finfo(dtype).tiny)
    if normalize == "reference":
        return torch.softmax(raw, dim=-1)
    if normalize == "none":
        return raw
    raise InputError(f"unknown normalize={normalize!r}. Fix: use 'paper' (sum to 1), 'reference' (softmax) or 'none'.")


def render_gmm_grids(
    params: GMMParams,
    grids: Sequence[Sequence[int]],
    *,
    normalize: Normalize = "paper",
    coords: Coords = "centers",
) -> torch.Tensor:
    """Render each row of a batch on its own grid: [B, max_cells], NaN-padded.

    params: a `GMMParams` with batch B; grids: B pairs (rows, cols), one per row (images of different
    sizes, e.g. Qwen2.5-VL). Row b holds its rows_b · cols_b cells (row-major) first, then NaN — the same
    padding convention as the AIF token statistics, and `gmm_entropy` ignores it. A padded tensor rather than
    a list keeps the batch one tensor for the injection code and for the loss; rows that share a grid are
    rendered together, so a uniform batch costs one `render_gmm` call.
    """
    _check_params(params.centers, params.sigmas, params.weights)
    B = params.centers.shape[0]
    if len(grids) != B:
        raise InputError(
            f"got {len(grids)} grids for a batch of {B} mixtures. Fix: pass one (rows, cols) per row."
        )
    shapes = [_check_grid(g) for g in grids]
    n_max = max(r * c for r, c in shapes)
    dtype = torch.float64 if params.centers.dtype == torch.float64 else torch.float32
    out = torch.full((B, n_max), float("nan"), dtype=dtype, device=params.centers.device)
    for shape in dict.fromkeys(shapes):  # unique grids, first-seen order
        idx = torch.tensor([b for b, s in enumerate(shapes) if s == shape], device=out.device)
        maps = render_gmm(
            params.centers[idx], params.sigmas[idx], params.weights[idx], shape, normalize=normalize, coords=coords
        )  # [b_s, rows · cols]
        # index_put with a full row block keeps the autograd graph to each group's parameters
        out = out.index_put((idx.unsqueeze(-1), torch.arange(maps.shape[-1], device=out.device)), maps)
    return out


def gmm_entropy(maps: torch.Tensor) -> torch.Tensor:
    """Shannon entropy (nats) of normalised maps: [B, N] → [B]; the H(M) term of VIF Eq. 9.

    maps: [B, N], each row already summing to 1 (not renormalised here); NaN entries (padding from
    `render_gmm_grids`) are ignored; 0 · log 0 = 0, and the gradient stays finite on empty cells: the log
    is taken of p floored at the dtype's smallest normal number (`xlogy(p, p)` would give 0/0 = NaN in its
    backward where a cell underflowed to exactly 0, which a sharp component far from a cell does).
    """
    if maps.ndim != 2:
        raise InputError(f"`maps` must be [B, N] (one flattened map per row), got shape {tuple(maps.shape)}.")
    p = torch.nan_to_num(maps, nan=0.0)
    return 0.0 - (p * torch.log(p.clamp_min(torch.finfo(p.dtype).tiny))).sum(-1)


def gmm_volume(
    sigmas: torch.Tensor,
    weights: torch.Tensor,
    *,
    mode: Literal["paper", "reference"] = "paper",
) -> torch.Tensor:
    """The "volume" sparsity regulariser of VIF Eq. 9: [B].

    sigmas: [B, K] or [B, K, 2]; weights: [B, K].
    mode="paper": Σ_k w_k · σ_k² — the paper (§4.4) defines a component's volume as "the product of its
    amplitude and variance", summed over components (the variance of a per-axis component is taken as the
    area-like σ_kx · σ_ky, which equals σ_k² when isotropic). Penalising it shrinks spreads and damps the
    weight of broad, uncertain components.
    mode="reference": mean_k σ_k² (σ_kx · σ_ky per-axis), what the reference code computes: amplitude
    ignored, averaged over components.
    """
    if sigmas.ndim not in (2, 3) or tuple(weights.shape) != tuple(sigmas.shape[:2]):
        raise InputError(
            f"`sigmas` must be [B, K] or [B, K, 2] and `weights` [B, K]; got {tuple(sigmas.shape)} and "
            f"{tuple(weights.shape)}. Fix: pass GMMParams.sigmas and GMMParams.weights."
        )
    var = sigmas.pow(2) if sigmas.ndim == 2 else sigmas[..., 0] * sigmas[..., 1]  # [B, K]
    if mode == "paper":
        return (weights * var).sum(-1)
    if mode == "reference":
        return var.mean(-1)
    raise InputError(f"unknown mode={mode!r}. Fix: use 'paper' or 'reference'.")


def render_gmm_points(
    centers: torch.Tensor,
    sigmas: torch.Tensor,
    weights: torch.Tensor,
    points: torch.Tensor,
    valid: torch.Tensor,
    *,
    normalize: Normalize = "paper",
) -> torch.Tensor:
    """Render each row's mixture at its own points: [B, N]; the general form of `render_gmm`.

    centers, sigmas, weights: as `render_gmm` (batch B); points: [B, N, 2] (x, y) per row; valid: [B, N]
    bool, which points are cells of the map. Invalid entries are 0 and take no part in the normalisation
    (VIF renders onto a row's vision tokens: tokens that cover no patch, e.g. LLaVA-NeXT's image-newline,
    are invalid). With `points[b]` = `grid_points(grid)` and every point valid this is `render_gmm`, value
    for value (same operations in the same order). Rows with no valid point are all zeros.
    """
    _check_params(centers, sigmas, weights)
    B = centers.shape[0]
    if points.ndim != 3 or tuple(points.shape[::2]) != (B, 2) or tuple(valid.shape) != tuple(points.shape[:2]):
        raise InputError(
            f"`points` must be [B={B}, N, 2] and `valid` bool [B, N]; got {tuple(points.shape)} and "
            f"{tuple(valid.shape)}. Fix: one (x, y) per cell and one flag per cell."
        )
    dtype = torch.float64 if centers.dtype == torch.float64 else torch.float32
    centers, sigmas, weights = (t.to(dtype) for t in (centers, sigmas, weights))
    pts = points.to(device=centers.device, dtype=dtype)
    valid = valid.to(centers.device)

    diff = pts[:, None, :, :] - centers[:, :, None, :]  # [B, K, N, 2]
    if sigmas.ndim == 2:
        quad = diff.pow(2).sum(-1) / sigmas.pow(2).unsqueeze(-1)  # [B, K, N]
    else:
        quad = (diff.pow(2) / sigmas.pow(2).unsqueeze(2)).sum(-1)  # [B, K, N]
    raw = (weights.unsqueeze(-1) * torch.exp(-0.5 * quad)).sum(1)  # [B, N]
    raw = torch.where(valid, raw, torch.zeros((), dtype=dtype, device=raw.device))

    if normalize == "paper":
        return raw / raw.sum(-1, keepdim=True).clamp_min(torch.finfo(dtype).tiny)
    if normalize == "reference":
        scores = raw.masked_fill(~valid, float("-inf"))
        out = torch.softmax(scores, dim=-1)
        return torch.nan_to_num(out, nan=0.0)  # a row with no valid point softmaxes to NaN
    if normalize == "none":
        return raw
    raise InputError(f"unknown normalize={normalize!r}. Fix: use 'paper' (sum to 1), 'reference' (softmax) or 'none'.")
