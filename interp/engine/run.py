"""`interp.intervene(vlm, *interventions)` → `Run`: prepare every intervention, collect its edits into a plan,
apply the plan at every forward (`forward`, or each step of HF `generate`), then gather diagnostics."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ..errors import InputError
from . import decode, walk
from .core import Context, Intervention, repeat_layout
from .plan import check_batch, hide_keys, lower_cuts, make_plan


@dataclass
class ForwardOutput:
    """`logits`: [B, T, V]; `diagnostics`: {intervention name: dict}; `cache`: the KV cache if asked for."""

    logits: torch.Tensor
    diagnostics: dict
    cache: Any = None


class Run:
    """The result of `intervene`: `.forward(batch)`, `.generate(batch, max_new_tokens=..., **hf_options)`; a
    context manager too (`with interp.intervene(vlm, iv) as run: ...`)."""

    def __init__(self, vlm, interventions):
        for iv in interventions:
            if not isinstance(iv, Intervention):
                raise InputError(f"{iv!r} is not an interp intervention (AIF, VIF, EdgeMask, InjectAttention, ...)")
        names = [iv.name for iv in interventions]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise InputError(f"two interventions share the diagnostics name {dup}; give them distinct "
                             "names (e.g. EdgeMask(..., name='cut_a'))")
        self.vlm = vlm
        self.interventions = tuple(interventions)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def forward(self, batch, *, grad: bool = False, inputs: dict | None = None,
                return_cache: bool = False) -> ForwardOutput:
        """One forward with every intervention applied: logits `[B, T, V]` and diagnostics. Without
        interventions it is exactly `vlm.hf(**batch.inputs)`.

        grad: keep the autograd graph (e.g. to train through an injection); inputs: extra model inputs
        (e.g. position_ids); return_cache: run with use_cache and return the KV cache as `.cache`."""
        check_batch(self.vlm, batch)
        ctx = Context(vlm=self.vlm, batch=batch, layout=batch.layout, inputs={**batch.inputs, **(inputs or {})},
                      interventions=self.interventions)
        with torch.set_grad_enabled(grad):
            plan = self._plan(ctx)
            if ctx.prefix is not None:
                if ctx.prefix.logits is None:
                    raise InputError("an intervention offered a KV prefix without its logits; a forward returns "
                                     "the prefix rows' logits from it: offer Prefix(..., logits=out.logits)")
                fwd = decode.suffix_inputs(ctx)
            else:
                fwd = dict(ctx.inputs)
            if return_cache:
                fwd["use_cache"] = True
            plan, fwd = _lower(ctx, plan, fwd, batch.input_ids.shape[1])
            if plan.empty and not self.vlm.remote:
                out = self.vlm.hf(**fwd)
                logits, cache = out.logits, (out.cache if return_cache else None)
            else:
                logits, cache = walk.trace_forward(ctx, plan, fwd, return_cache)
            if ctx.prefix is not None:  # no edit touched the prefix rows: take them from the profiling pass
                P = ctx.prefix.length
                logits = torch.cat([ctx.prefix.logits[:, :P].to(logits.dtype), logits], dim=1)
        return ForwardOutput(logits=logits, diagnostics=self._finish(ctx), cache=cache)

    def generate(self, batch, max_new_tokens: int | None = None, *, generation_config=None,
                 **kwargs) -> decode.GenerateOutput:
        """HF `generate` with every intervention applied at the prefill and at each decode step. Takes what
        `vlm.hf.generate` takes (sampling, beams, logits processors, stopping criteria, `generation_config`,
        `return_dict_in_generate`, ...) and honours the model's generation_config; without interventions the
        tokens are exactly HF's. Returns `GenerateOutput`: `.sequences` [B·num_return_sequences, T+n],
        `.texts`, `.diagnostics`, and HF's own fields (`.scores`, ...) when it returns a dict."""
        check_batch(self.vlm, batch)
        if max_new_tokens is not None:
            if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
                raise InputError(f"max_new_tokens must be an int ≥ 1, got {max_new_tokens!r}")
            kwargs["max_new_tokens"] = max_new_tokens
        if generation_config is not None:
            kwargs["generation_config"] = generation_config
        hf_kw = dict(kwargs)
        n, expand = decode.resolve(self.vlm.hf, batch, generation_config, kwargs)
        layout = repeat_layout(batch.layout.extend(n), expand)
        ctx = Context(vlm=self.vlm, batch=batch, layout=layout, inputs=decode.generation_inputs(self.vlm, batch),
                      mode="generate", max_new_tokens=n, expand=expand, interventions=self.interventions)
        with torch.no_grad():
            plan = self._plan(ctx)
            inputs = decode.prefix_inputs(ctx) if ctx.prefix is not None else dict(batch.inputs)
            plan, inputs = _lower(ctx, plan, inputs, batch.input_ids.shape[1])
            if plan.empty and not self.vlm.remote:  # nothing to apply: HF generate itself
                result = self.vlm.hf.generate(**inputs, **hf_kw)
            else:
                result = walk.trace_generate(ctx, plan, inputs, hf_kw)
        return decode.pack(ctx, result, self._finish(ctx))

    def _plan(self, ctx):
        for iv in self.interventions:
            iv.prepare(ctx)
        return make_plan(ctx, [(iv, list(iv.edits(ctx))) for iv in self.interventions])

    def _finish(self, ctx) -> dict:
        return {iv.name: iv.finish(ctx) for iv in self.interventions}


def _lower(ctx, plan, inputs: dict, prompt_len: int):
    """Moves the all-layer cuts that are a key mask for this pass into its 2D attention_mask (`lower_cuts`).
    Only where the pass is given its position_ids (generate's are in `ctx.inputs` for every family but M-RoPE):
    HF generate and Qwen's M-RoPE derive positions from the 2D mask otherwise, and hidden keys must not shift
    them."""
    pos = inputs.get("position_ids", ctx.inputs.get("position_ids"))
    if pos is None or inputs.get("attention_mask") is None or ctx.vlm.remote:
        return plan, inputs
    plan, hide = lower_cuts(ctx, plan, prompt_len)
    if hide is not None:
        inputs = {**inputs, "position_ids": pos, "attention_mask": hide_keys(inputs["attention_mask"], hide)}
    return plan, inputs


def intervene(vlm, *interventions) -> Run:
    """Compose interventions on a VLM: `run = intervene(vlm, AIF(), EdgeMask("question", "vision"))`."""
    return Run(vlm, interventions)
