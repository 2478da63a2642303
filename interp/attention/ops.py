"""Pure-torch attention math used at the attention call: masks as additive biases, probabilities for a few
query rows from q and k. No nnsight, no transformers: this code travels to a remote server by value."""

from __future__ import annotations

import einops
import torch


def repeat_kv(x: torch.Tensor, n_heads: int) -> torch.Tensor:
    """[B, Hk, K, D] → [B, H, K, D] for grouped-query attention."""
    hk = x.shape[1]
    if hk == n_heads:
        return x
    return einops.repeat(x, "b hk k d -> b (hk g) k d", g=n_heads // hk)  # each KV head serves g query heads


def mask_bias(mask, q_len: int, k_len: int, dtype: torch.dtype, device, batch: int) -> torch.Tensor:
    """The attention call's `attention_mask` as an additive float bias `[B, 1, Q, K]`.

    HF passes None (SDPA, no padding: causal by flag), a bool mask (SDPA: True = attend) or a float mask
    (eager: 0 / finfo.min). With None the queries are the last `q_len` of `k_len` positions.
    """
    neg = torch.finfo(dtype).min
    if mask is None:
        q_pos = torch.arange(k_len - q_len, k_len, device=device)
        allowed = q_pos[:, None] >= torch.arange(k_len, device=device)[None, :]
        bias = torch.zeros(q_len, k_len, dtype=dtype, device=device).masked_fill(~allowed, neg)
        return bias.expand(batch, 1, q_len, k_len)
    mask = mask[..., :k_len]
    if mask.dtype == torch.bool:
        return torch.zeros(mask.shape, dtype=dtype, device=device).masked_fill(~mask, neg)
    return mask.to(dtype)


def apply_block(mask, blocked: torch.Tensor, q_len: int, k_len: int, batch: int):
    """The attention call's mask with `blocked` `[B, Q, K]` (True = cut) edges removed, in the mask's own
    convention (bool stays bool, float gets finfo.min, None becomes bool)."""
    if mask is None:
        q_pos = torch.arange(k_len - q_len, k_len, device=blocked.device)
        causal = q_pos[:, None] >= torch.arange(k_len, device=blocked.device)[None, :]
        return (causal[None] & ~blocked)[:, None]
    m = mask[..., :k_len]
    if m.dtype == torch.bool:
        return m & ~blocked[:, None]
    return m.masked_fill(blocked[:, None], torch.finfo(m.dtype).min)


def cut_mask(mask, cut: torch.Tensor, q_pos: torch.Tensor, k_len: int, dtype: torch.dtype):
    """The mask builder's output with `cut` `[B, Q, K]` (True = cut) removed, in its own convention: None (SDPA,
    causal by flag) becomes a bool `[B, 1, Q, K]`, bool stays bool (True = attend), float gets finfo.min.
    q_pos: [Q] absolute query positions."""
    B = cut.shape[0]
    if mask is None:
        causal = q_pos[:, None] >= torch.arange(k_len, device=cut.device)[None, :]
        return (causal[None] & ~cut)[:, None]
    m = mask.expand(B, *mask.shape[1:]) if mask.shape[0] == 1 and B > 1 else mask
    if m.dtype == torch.bool:
        return m & ~cut[:, None]
    return m.masked_fill(cut[:, None], torch.finfo(m.dtype).min)


def visible(mask, q_len: int, k_len: int, batch: int, device) -> torch.Tensor:
    """[B, Q, K] bool: which edges the attention call's mask lets through."""
    if mask is None:
        q_pos = torch.arange(k_len - q_len, k_len, device=device)
        return (q_pos[:, None] >= torch.arange(k_len, device=device)[None, :]).expand(batch, q_len, k_len)
    m = mask[..., :k_len]
    if m.dtype == torch.bool:
        return m[:, 0].expand(batch, q_len, k_len)
    return (m[:, 0] > torch.finfo(m.dtype).min / 2).expand(batch, q_len, k_len)


def row_bias(mask, rows: torch.Tensor, q_len: int, k_len: int, dtype, device) -> torch.Tensor:
    """The call's mask as an additive bias for query rows `rows` only: [B|1, 1, n, K]. Rows are selected
    before any conversion, so a long sequence never builds a [Q, K] bias for a few question rows."""
    neg = torch.finfo(dtype).min
    if mask is None:  # SDPA without padding: causal, queries are the last q_len of k_len
        q_pos = rows + (k_len - q_len)
        allowed = q_pos[:, None] >= torch.arange(k_len, device=device)[None, :]  # [n, K]
        return torch.zeros(allowed.shape, dtype=dtype, device=device).masked_fill(~allowed, neg)[None, None]
    m = mask[..., :k_len]
    if m.shape[2] == q_len:
        m = m[:, :, rows]
    if m.dtype == torch.bool:
        return torch.zeros(m.shape, dtype=dtype, device=device).masked_fill(~m, neg)
    return m.to(dtype)


def row_probs(q: torch.Tensor, k: torch.Tensor, mask, scale: float, rows: torch.Tensor) -> torch.Tensor:
    """Attention probabilities of the selected query rows, computed in float32.

    q: [B, H, Q, D] (post-RoPE), k: [B, Hk, K, D], rows: long [n] indices into Q.
    Returns [B, H, n, K]; never materialises [H, Q, K].
    """
    B, H, Q, _ = q.shape
    K = k.shape[2]
    qs = q[:, :, rows].float()
    kk = repeat_kv(k, H).float()
    scores = torch.matmul(qs, kk.transpose(-1, -2))  # [B, H, n, K]
    # in place: a fresh [B, H, n, K] buffer per op costs more than the matmul (page faults on every layer)
    scores.mul_(scale).add_(row_bias(mask, rows, Q, K, torch.float32, q.device))
    probs = torch.softmax(scores, dim=-1)
    # A fully masked row (left padding) softmaxes to uniform over finfo.min; HF zeroes it through SDPA too.
    return torch.nan_to_num(probs) if probs.requires_grad else probs.nan_to_num_()  # softmax's backward needs probs
