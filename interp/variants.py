"""Many variants of one run in one forward: the batch's rows repeated n times through the batch dimension, each
copy with its own edits, continuing from the base run's KV cache over the first P positions that no edit of
the chunk touches (causal attention: positions before the first edited one are the base run's exactly).

    base = base_run(vlm, batch)                          # one plain forward, cache and embeddings kept
    out = replay(vlm, base, n=8, length=P, iv)           # iv edits rows b·n + v (copy v of row b), positions ≥ P
    logits = out.logits.view(B, 8, T, V)                 # [B, n, T, V]

Row order follows HF's own expansion (`repeat_interleave`): copy v of row b is row `b·n + v`, so per-row
tensors repeat with `repeat_interleave(n, 0)` and the layout with `interp.engine.repeat_layout`. A replay
never reruns the vision tower: it starts from the embeddings the language model received.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import nnsight
import torch

from .engine import EditOutput, Intervention, Prefix, TapInputs, intervene, repeat_layout
from .errors import InputError, SiteError


@dataclass(frozen=True, eq=False)
class BaseRun:
    """A plain forward of `batch` kept for replays. logits: [B, T, V]; kv: per layer (keys, values)
    [B, Hk, T, Dh]; embeds: [B, T, D] what the language model received (image features merged); positions:
    the position ids it received ([B, T], M-RoPE [3, B, T]) or None; diagnostics: the base run's."""

    batch: object
    logits: torch.Tensor
    kv: tuple
    embeds: torch.Tensor
    positions: torch.Tensor | None
    diagnostics: dict


@dataclass(frozen=True, eq=False)
class SkipMLP(Intervention):
    """The MLP of `layers` does not run (its output is zero): for a pass that reads only attention, the last
    layer's MLP (and what it feeds: the final norm, the logits) computes nothing it needs. Logits change."""

    layers: tuple
    name: str = "skip_mlp"

    def edits(self, ctx):
        return [EditOutput("mlp_out", self.layers, _zeros, skip=True)]


def _zeros(ctx, layer, x):
    return torch.zeros_like(x)


@dataclass(frozen=True, eq=False)
class EmbedsTap(Intervention):
    """Records what the language model received: `embeds` [B, T, D] (image features merged) and `positions`
    (None where the model computes them), in its diagnostics. Replays and AIF's reused prefix start from it."""

    name: str = "embeds_tap"

    def prepare(self, ctx):
        ctx.scratch(self).clear()

    def edits(self, ctx):
        return [TapInputs(self._tap)]

    def _tap(self, ctx, kwargs):
        s = ctx.scratch(self)
        s["embeds"] = nnsight.save(kwargs["inputs_embeds"])
        pos = kwargs.get("position_ids")
        s["positions"] = nnsight.save(pos) if pos is not None else None

    def finish(self, ctx):
        return dict(ctx.scratch(self))


def base_run(vlm, batch, *interventions) -> BaseRun:
    """One forward of `batch` (with `interventions`, e.g. a `Record`) that keeps what replays need."""
    tap = EmbedsTap()
    out = intervene(vlm, tap, *interventions).forward(batch, return_cache=True)
    kv = tuple((layer.keys, layer.values) for layer in out.cache.layers)
    d = out.diagnostics.pop(tap.name)
    return BaseRun(batch=batch, logits=out.logits, kv=kv, embeds=d["embeds"], positions=d["positions"],
                   diagnostics=out.diagnostics)


def repeat(batch, n: int):
    """`batch` with every row repeated n times in place (copy v of row b is row b·n + v): the ids, mask and
    layout a replay needs. No pixels: a replay starts from the base run's embeddings."""
    keep = ("input_ids", "attention_mask", "mm_token_type_ids")
    inputs = {k: v.repeat_interleave(n, 0) for k, v in batch.inputs.items() if k in keep}
    return replace(batch, inputs=inputs, layout=repeat_layout(batch.layout, n),
                   questions=tuple(q for q in batch.questions for _ in range(n)),
                   answers=None if batch.answers is None else tuple(a for a in batch.answers for _ in range(n)),
                   images=tuple(i for i in batch.images for _ in range(n)))


def _cache(kv, length: int, n: int):
    from transformers import DynamicCache

    cache = DynamicCache()
    for i, (k, v) in enumerate(kv):
        cache.update(k[:, :, :length].repeat_interleave(n, 0), v[:, :, :length].repeat_interleave(n, 0), i)
    return cache


@dataclass(frozen=True, eq=False)
class _Offer(Intervention):
    """Offers the base run's first `length` positions, rows repeated n times, as the run's KV prefix."""

    base: BaseRun = None
    n: int = 1
    length: int = 1
    name: str = "variants_prefix"

    def prepare(self, ctx):
        b, n, P = self.base, self.n, self.length
        pos = None if b.positions is None else b.positions.repeat_interleave(n, -2)  # rows are dim -2
        s = ctx.scratch(self)
        s["prefix"] = Prefix(cache=_cache(b.kv, P, n), length=P, embeds=b.embeds.repeat_interleave(n, 0),
                             positions=pos, logits=b.logits[:, :P].repeat_interleave(n, 0))
        ctx.offer_prefix(s["prefix"])

    def finish(self, ctx):
        if ctx.prefix is not ctx.scratch(self)["prefix"]:
            raise SiteError(f"a replay of {self.n} copies could not start after {self.length} positions "
                            f"({ctx.prefix_reason or 'prefix refused'}); give every edit start >= length")
        return {}


def replay(vlm, base: BaseRun, n: int, length: int, *interventions):
    """Forward of `base.batch` with rows repeated `n` times and `interventions` applied, continuing from the
    base run's first `length` positions (every edit must start at or after `length`, ≥ 1). Returns the
    engine's `ForwardOutput` (logits [B·n, T, V], rows ordered b·n + v)."""
    if length < 1:
        # A pass from position 0 is a full forward: Qwen's M-RoPE recomputes positions from input ids it would
        # not have; run such variants on the batch itself (n = 1) instead.
        raise InputError("replay needs length >= 1; run variants that touch position 0 without a prefix")
    return intervene(vlm, _Offer(base=base, n=n, length=length), *interventions).forward(repeat(base.batch, n))


def chunks(starts, per_chunk: int, seq_len: int, rows: int = 1, overhead: int = 64):
    """Split variants into chunks of at most `per_chunk`, each replayed from its smallest start, minimising
    the estimated work: per chunk `overhead` + copies × rows × (seq_len − its start) positions computed (a
    forward's fixed cost is worth about 64 row-positions on the toy). starts: [V] first positions touched.
    Yields (variant indices, chunk start), in order of start."""
    if per_chunk < 1:
        raise InputError(f"batch_size leaves room for {per_chunk} variants per forward; raise batch_size to at "
                         "least the batch's row count")
    order = sorted(range(len(starts)), key=lambda i: starts[i])
    st = [starts[i] for i in order]
    V = len(st)
    best, cut = [0.0] * (V + 1), [0] * (V + 1)  # best[j]: cheapest split of the last V − j variants
    for i in range(V - 1, -1, -1):
        best[i] = float("inf")
        for j in range(i + 1, min(V, i + per_chunk) + 1):
            c = overhead + (j - i) * rows * (seq_len - st[i]) + best[j]
            if c < best[i]:
                best[i], cut[i] = c, j
    i = 0
    while i < V:
        yield order[i:cut[i]], st[i]
        i = cut[i]
