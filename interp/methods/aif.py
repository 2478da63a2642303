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

import warnings
from dataclasses import dataclass

import torch

from ..attention.capture import Capture
from ..errors import InputError
from ..layout import check_group
from ..engine import Cut, Intervention, Prefix, intervene
from ..engine.core import describe
from ..engine.plan import layer_tuple
from ..variants import EmbedsTap, SkipMLP
from . import aif_math



@dataclass(frozen=True, eq=False)
class AIF(Intervention):
    """Adaptive Information Flow.

    queries: rows defining the token dynamics: "question" (the question's own tokens: the paper's instruction
        tokens, default), "after_image" (question + template + answer), any group of `interp.layout.GROUPS`,
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
        check_group(self.queries, "AIF queries")
        r = self.ratios.tolist() if isinstance(self.ratios, torch.Tensor) else self.ratios
        r = [r] if isinstance(r, (int, float)) else r  # one ratio
        if isinstance(r, (str, bytes, bool)) or not hasattr(r, "__iter__") or not all(
                isinstance(x, (int, float)) and not isinstance(x, bool) for x in r):
            raise InputError(f"AIF ratios must be a number or a tuple of numbers in (0, 1), got {self.ratios!r}; "
                             "e.g. ratios=0.5 or ratios=(0.3, 0.5, 0.7)")
        object.__setattr__(self, "ratios", tuple(float(x) for x in r))
        m = self.max_ratio
        if m is not None and (isinstance(m, bool) or not isinstance(m, (int, float))):
            raise InputError(f"AIF max_ratio must be a number in (0, 1] or None, got {m!r}")
        aif_math._check_ratios(self.ratios, self.max_ratio)
        if self.layers is not None:
            layers = layer_tuple(self.layers, self.name)
            if not layers:
                raise InputError("AIF layers is empty: the mask would apply nowhere; use None for every layer")
            object.__setattr__(self, "layers", layers)

    # ----------------------------------------------------------------- profiling
    def prepare(self, ctx):
        s = ctx.scratch(self)
        s.clear()
        vlm, batch = ctx.vlm, ctx.batch
        lay = batch.layout
        if not lay.vision.any(1).all():
            raise InputError("AIF needs at least one vision token in every row")
        queries = self.queries
        T = lay.seq_len
        last_vision = T - 1 - lay.vision.flip(1).int().argmax(1)  # [B]
        P = int(last_vision.min()) + 1
        reuse, reason = self._reuse(ctx, P)
        cap = Capture(queries=queries, heads=self.heads, name="aif_profile")
        tap = EmbedsTap()
        ivs = (cap, tap) if reuse else (cap,)
        # the pass reads attention only: the last MLP is skipped, unless a forward reuses its logits for the prefix
        keep_logits = reuse and ctx.mode == "forward"
        if not keep_logits:
            ivs += (SkipMLP((vlm.num_layers - 1,)),)
        extra = {"position_ids": ctx.inputs["position_ids"]} if "position_ids" in ctx.inputs else {}
        out = intervene(vlm, *ivs).forward(batch, inputs=extra, return_cache=reuse)
        stats = out.diagnostics[cap.name]
        d = stats.vision_max.permute(1, 0, 2)  # [B, L, Nv]
        valid = lay.vision_valid().to(d.device)
        mu, ent = aif_math.token_stats(d, valid)
        choice = aif_math.choose_ratio(mu, ent, ratios=self.ratios, criterion=self.criterion,
                                       max_ratio=self.max_ratio, valid=valid)
        # masked vision tokens → a key group over the run's positions (prompt + generated, rows expanded)
        vpos = lay.vision_positions()
        masked = torch.zeros(lay.shape, dtype=torch.bool)
        cut = valid.cpu() & ~choice.kept.cpu()
        rows = torch.arange(lay.batch_size)[:, None].expand_as(vpos)
        masked[rows[cut], vpos[cut]] = True
        keys = ctx.group(masked)
        s["cut"] = (ctx.group("after_image"), keys) if masked.any() else None
        per_row = {"ratio": choice.ratio, "kept": choice.kept.cpu(), "mu": mu.cpu(), "entropy": ent.cpu(),
                   "S0": choice.S0, "S": choice.S, "n_masked": choice.n_masked, "d": d.cpu()}
        s["diag"] = {**{k: ctx.rows(torch.as_tensor(v)) for k, v in per_row.items()}, "ratios": choice.ratios,
                     "criterion": self.criterion,
                     "queries": self.queries if isinstance(self.queries, str) else describe(self.queries)}
        s["reason"] = reason
        if reuse:
            cache = out.cache
            cache.crop(-(T - P))  # keep the first P positions; this transformers rejects a positive length
            s["prefix"] = Prefix(cache=cache, length=P, embeds=out.diagnostics[tap.name]["embeds"],
                                 positions=out.diagnostics[tap.name]["positions"],
                                 logits=out.logits if keep_logits else None)
            ctx.offer_prefix(s["prefix"])

    def _reuse(self, ctx, P):
        if not self.reuse_prefix:
            return False, "reuse_prefix=False"
        if ctx.vlm.remote:
            _warn_remote()
            return False, "remote model: the KV cache stays on the server, so AIF runs two full passes"
        if P >= ctx.batch.layout.seq_len:
            return False, "no text after the image"
        return True, ""

    # ----------------------------------------------------------------- answer pass
    def edits(self, ctx):
        c = ctx.scratch(self)["cut"]
        return [] if c is None else [Cut(c[0], c[1], self.layers)]

    def finish(self, ctx):
        s = ctx.scratch(self)
        used = s.get("prefix") is not None and ctx.prefix is s["prefix"]
        reason = "" if used else (ctx.prefix_reason if s.get("prefix") is not None else s["reason"])
        return {**s["diag"], "reuse": used, "reuse_reason": reason,
                "prefix_length": s["prefix"].length if used else 0}


_WARNED = []


def _warn_remote():
    if not _WARNED:
        warnings.warn("AIF on a remote model cannot reuse the profiling pass's KV cache (it stays on the server): "
                      "each AIF call runs two full passes", stacklevel=3)
        _WARNED.append(True)
