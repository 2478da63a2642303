"""AIF (Adaptive Information Flow, CVPR 2026) as a composable intervention, made of `Capture` and edge masks.

Per row: a profiling pass captures the token dynamics d[l, i] (max over the text query rows of the
head-combined attention to vision token i in layer l) → μ, Ent (`aif_math.token_stats`) → the adaptive
ratio (`aif_math.choose_ratio`) → the answer pass with text-query → masked-vision edges cut in `layers`
(vision→vision kept; generated tokens are text queries).

Which text queries are cut: the text after the row's last image (question, teacher-forced answer, generated
tokens) — the instruction tokens of the paper. Structural text inside an image (Idefics3's row/column
markers) keeps its attention. This also makes prefix reuse exact: no position up to the last vision token
changes, so the profiling pass's KV cache for that prefix is what the answer pass needs and only the suffix
(the question, tens of tokens) is recomputed.
"""

from __future__ import annotations

from dataclasses import dataclass

import nnsight
import torch

from ..attention.capture import Capture
from ..errors import InputError
from ..interventions import Intervention, Prefix, intervene
from . import aif_math

QUERIES = ("question", "after_image")


@dataclass(frozen=True, eq=False)
class AIF(Intervention):
    """Adaptive Information Flow.

    queries: rows defining the token dynamics: "question" (paper default), "after_image" (question + answer),
    or a bool [B, T] tensor; heads: "mean" | "max" (how heads are combined in d); layers: where the mask
    applies (None = every layer); ratios: candidate mask ratios; criterion: "paper" (argmax_r |S(r) − S0|) or
    "normalized" (entropies / log n); max_ratio: cap on the ratio; reuse_prefix: reuse the profiling pass's KV
    cache for the positions before the question (falls back to two full passes where it cannot apply, and
    says why in the diagnostics).

    Diagnostics (`out.diagnostics["aif"]`): ratio [B], kept bool [B, Nv], mu [B, Nv], entropy [B, Nv],
    S0 [B], S [B, R], ratios [R], n_masked [B], d [B, L, Nv], reuse (bool), reuse_reason (str).
    """

    queries: object = "question"
    heads: str = "mean"
    layers: tuple | None = None
    ratios: tuple = aif_math.DEFAULT_RATIOS
    criterion: str = "paper"
    max_ratio: float | None = None
    reuse_prefix: bool = True
    name: str = "aif"

    def __post_init__(self):
        if self.heads not in ("mean", "max"):
            raise InputError(f"AIF heads must be 'mean' or 'max', got {self.heads!r}")
        if self.criterion not in ("paper", "normalized"):
            raise InputError(f"AIF criterion must be 'paper' or 'normalized', got {self.criterion!r}")
        if isinstance(self.queries, str) and self.queries not in QUERIES:
            raise InputError(f"AIF queries must be one of {QUERIES} or a bool [B, T] tensor, got {self.queries!r}")
        aif_math._check_ratios(self.ratios, self.max_ratio)

    # ----------------------------------------------------------------- profiling
    def prepare(self, ctx):
        s = ctx.scratch(self)
        s.clear()
        vlm, batch = ctx.vlm, ctx.batch
        lay = batch.layout
        if not lay.vision.any(1).all():
            raise InputError("AIF needs at least one vision token in every row")
        queries = lay.question | lay.answer if self.queries == "after_image" else self.queries
        T = lay.seq_len
        last_vision = T - 1 - lay.vision.flip(1).int().argmax(1)  # [B]
        P = int(last_vision.min()) + 1
        reuse, reason = self._reuse(ctx, P)
        cap = Capture(queries=queries, heads=self.heads, name="aif_profile")
        ivs = (cap, _PrefixTap()) if reuse else (cap,)
        run = intervene(vlm, *ivs)
        pos = vlm.generation_positions(batch)
        out = run.forward(batch, inputs={} if pos is None else {"position_ids": pos}, return_cache=reuse)
        stats = out.diagnostics[cap.name]
        d = stats.vision_max.permute(1, 0, 2)  # [B, L, Nv]
        valid = lay.vision_valid().to(d.device)
        mu, ent = aif_math.token_stats(d, valid)
        choice = aif_math.choose_ratio(mu, ent, ratios=self.ratios, criterion=self.criterion,
                                       max_ratio=self.max_ratio, valid=valid)
        # masked vision tokens → a key group over prompt (+ generated) positions
        vpos = lay.vision_positions()
        masked = torch.zeros(ctx.layout.shape, dtype=torch.bool)
        cut = valid & ~choice.kept.cpu()
        rows = torch.arange(lay.batch_size)[:, None].expand_as(vpos)
        masked[rows[cut], vpos[cut]] = True
        after = torch.arange(ctx.layout.seq_len)[None] > last_vision[:, None]
        qgroup = ctx.layout.text & after
        s["edges"] = [(qgroup.to(ctx.device), masked.to(ctx.device))] if masked.any() else []
        s["diag"] = {"ratio": choice.ratio, "kept": choice.kept.cpu(), "mu": mu.cpu(), "entropy": ent.cpu(),
                     "S0": choice.S0, "S": choice.S, "ratios": choice.ratios, "n_masked": choice.n_masked,
                     "d": d.cpu(), "criterion": self.criterion, "reuse": reuse, "reuse_reason": reason,
                     "prefix_length": P if reuse else 0}
        if reuse:
            tap = out.diagnostics["prefix_tap"]
            cache = out.cache
            cache.crop(-(T - P))  # keep the first P positions; this transformers rejects a positive length
            ctx.prefix = Prefix(cache=cache, length=P, embeds=tap["embeds"], positions=tap["positions"],
                                logits=out.logits)
        elif pos is not None and ctx.mode == "forward":
            ctx.forward_kwargs["position_ids"] = pos  # the same positions as the profiling pass

    def _reuse(self, ctx, P):
        if not self.reuse_prefix:
            return False, "reuse_prefix=False"
        if ctx.vlm.remote:
            return False, "remote model: the KV cache stays on the server"
        gk = ctx.generate_kwargs
        if gk.get("do_sample") or gk.get("num_beams", 1) > 1 or set(gk) - {"do_sample", "pad_token_id"}:
            return False, f"generate options {sorted(gk)} need HF generate; prefix reuse decodes greedily"
        others = [iv for iv in ctx.interventions if iv is not self]
        bad = [iv.name for iv in others if not iv.prefix_ok(ctx, P)]
        if bad:
            return False, f"{bad} must see positions before {P}"
        if P >= ctx.batch.layout.seq_len:
            return False, "no text after the image"
        return True, ""

    # ----------------------------------------------------------------- answer pass
    def edges(self, ctx):
        return ctx.scratch(self)["edges"]

    def edge_layers(self, ctx):
        if self.layers is None:
            return None
        return tuple(int(l) for l in self.layers)

    def prefix_ok(self, ctx, length):
        return True

    def finish(self, ctx):
        return dict(ctx.scratch(self)["diag"])


@dataclass(frozen=True, eq=False)
class _PrefixTap(Intervention):
    """Records what the language model received (embeddings with image features merged, positions)."""

    name: str = "prefix_tap"

    def prepare(self, ctx):
        ctx.scratch(self).clear()

    def lm_inputs(self, ctx, args, kwargs):
        s = ctx.scratch(self)
        s["embeds"] = nnsight.save(kwargs["inputs_embeds"])
        s["positions"] = nnsight.save(kwargs["position_ids"])

    def finish(self, ctx):
        return dict(ctx.scratch(self))
