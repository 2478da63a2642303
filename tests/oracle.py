"""An independent oracle for edited generation: a pristine HF copy of the model whose decoder attention is an
attention function registered only here. It applies cut (query, key) pairs and probability injections
explicitly, written from the formulas, with none of interp's code. HF generate drives it as usual."""

from __future__ import annotations

import contextlib

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, eager_mask

NAME = "interp_test_oracle"
STATE: dict = {}


def _oracle(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kw):
    if not isinstance(module, STATE["cls"]):  # e.g. Qwen's vision tower: plain attention
        return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling, **kw)
    layer = module.layer_idx
    B, H, Q, D = query.shape
    K = key.shape[2]
    k = key.repeat_interleave(H // key.shape[1], dim=1).float()
    v = value.repeat_interleave(H // value.shape[1], dim=1).float()
    scores = torch.matmul(query.float(), k.transpose(-1, -2)) * (scaling if scaling is not None else D ** -0.5)
    neg = torch.finfo(torch.float32).min
    allowed = torch.ones(B, Q, K, dtype=torch.bool)
    if attention_mask is not None:
        allowed &= attention_mask[:, 0, :, :K].expand(B, Q, K) > neg / 2
    qpos = torch.arange(K - Q, K)  # absolute query positions: the last Q of K
    cut = STATE["cuts"].get(layer, STATE["cuts"].get(None))
    if cut is not None:
        allowed &= ~cut[:, qpos][:, :, :K]
    probs = torch.softmax(scores.masked_fill(~allowed[:, None], neg), -1) * allowed[:, None]
    inj = STATE["inject"].get(layer)
    if inj is not None and (inj["decode"] or STATE["calls"].setdefault(layer, 0) == 0):
        rows, cols, w, alpha = inj["rows"][:, qpos], inj["cols"][:, :K], inj["weights"][:, :K], inj["alpha"]
        sel = (rows[:, :, None] & cols[:, None, :])[:, None]
        mixed = torch.where(sel, (1 - alpha) * probs + alpha * w[:, None, None, :], probs) * allowed[:, None]
        mixed = mixed / mixed.sum(-1, keepdim=True).clamp(min=1e-30)
        probs = torch.where(rows[:, None, :, None], mixed, probs)
    STATE["calls"][layer] = STATE["calls"].get(layer, 0) + 1
    out = torch.matmul(probs, v).transpose(1, 2).contiguous().to(query.dtype)
    return out, probs.to(query.dtype)


AttentionInterface.register(NAME, _oracle)
AttentionMaskInterface.register(NAME, eager_mask)


@contextlib.contextmanager
def oracle(model, attn_cls, *, cuts=None, inject=None):
    """Run `model` (a pristine HF copy) with the oracle attention. cuts: {layer or None (all): bool
    [B·n, S, S] (query, key) pairs to cut, absolute positions}; inject: {layer: dict(rows [B·n, S],
    cols [B·n, S], weights [B·n, S] (zero outside cols), alpha, decode)}."""
    old = model.config._attn_implementation
    STATE.update(cls=attn_cls, cuts=cuts or {}, inject=inject or {}, calls={})
    model.set_attn_implementation(NAME)
    try:
        yield model
    finally:
        model.set_attn_implementation(old)
        STATE.clear()


def pair_cut(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """[B, S] query group × [B, S] key group → [B, S, S] cut pairs."""
    return q[:, :, None] & k[:, None, :]
