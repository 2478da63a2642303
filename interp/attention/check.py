"""Load-time self-check of a VLM's sites: the attention call found is really the attention (probabilities
recomputed from its q, k, mask reproduce its output; rows sum to 1) and editing there changes the logits."""

from __future__ import annotations

import nnsight
import torch
from PIL import Image

from ..errors import SiteError
from . import ops


def self_check(vlm) -> None:
    if vlm.remote:
        return
    img = Image.new("RGB", (64, 48), (120, 90, 60))
    batch = vlm.prepare(images=[img], questions=["what color is the circle ?"])
    nn, sites = vlm.nn, vlm.sites
    last = vlm.num_layers - 1
    cls = type(vlm.hf).__name__
    try:
        with nn.trace(dict(batch.inputs)):
            op = sites.attention_call(nn, 0)
            args, kw = op.inputs
            q, k, v, mask = args[1], args[2], args[3], args[4]
            scale = kw.get("scaling", q.shape[-1] ** -0.5)
            p = ops.row_probs(q, k, mask, scale, torch.arange(q.shape[2]))
            mine = nnsight.save(torch.matmul(p, ops.repeat_kv(v, q.shape[1]).float()).transpose(1, 2))
            theirs = nnsight.save(op.output[0].float())
            sums = nnsight.save(p.sum(-1))
            base = nnsight.save(nn.output.logits)
        with nn.trace(dict(batch.inputs)):
            op = sites.attention_call(nn, last)
            out, w = op.output
            op.output = (torch.zeros_like(out), w)
            edited = nnsight.save(nn.output.logits)
    except SiteError:
        raise
    except Exception as e:  # nnsight raises many types; say where it failed
        raise SiteError(f"{cls}: site self-check failed at the attention call {sites.attn_op!r}: {e}") from e
    if tuple(mine.shape) != tuple(theirs.shape):
        raise SiteError(f"{cls}: attention call output {tuple(theirs.shape)} does not match q/k/v "
                        f"shapes {tuple(mine.shape)}; the op {sites.attn_op!r} is not the attention call")
    tol = 1e-3 if vlm.dtype == torch.float32 else 5e-2
    if not torch.allclose(sums, torch.ones_like(sums), atol=1e-4):
        raise SiteError(f"{cls}: recomputed attention rows do not sum to 1 at {sites.attn_op!r}")
    err = (mine - theirs).abs().max().item()
    if err > tol * max(1.0, theirs.abs().max().item()):
        raise SiteError(f"{cls}: probabilities recomputed from q, k, mask at {sites.attn_op!r} do not reproduce "
                        f"the attention output (max diff {err:.2e}); the mask or scale convention changed")
    if torch.equal(base, edited):
        raise SiteError(f"{cls}: zeroing the attention output of layer {last} did not change the logits; "
                        f"the site {sites.attn_op!r} is not on the forward path")
