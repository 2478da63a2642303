"""Generation: HF's own `generate` decodes (every option it has); the engine only resolves what the plan needs
to know beforehand (how many positions, how HF expands the batch), hands a reused KV prefix to HF, and
packs what HF returned with texts and diagnostics."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch

from ..errors import InputError


@dataclass
class GenerateOutput:
    """`sequences`: [B·num_return_sequences, T+n] ids exactly as HF returns them; `texts`: the decoded new
    tokens per returned row (special tokens skipped, surrounding whitespace stripped); `diagnostics`:
    {intervention name: dict}; `hf`: HF's own return value (a `GenerateOutput` dataclass with
    `return_dict_in_generate=True`, whose fields, e.g. `.scores`, are also reachable here)."""

    texts: list
    sequences: torch.Tensor
    diagnostics: dict
    prompt_len: int = 0
    hf: Any = None

    @property
    def new_tokens(self) -> torch.Tensor:
        return self.sequences[:, self.prompt_len:]

    def __getattr__(self, name):
        hf = self.__dict__.get("hf")
        if hf is not None and not isinstance(hf, torch.Tensor) and hasattr(hf, name):
            return getattr(hf, name)
        raise AttributeError(f"GenerateOutput has no field {name!r}")


def resolve(hf, batch, generation_config, kwargs) -> tuple[int, int]:
    """(new positions to plan for, batch expansion) as HF generate will resolve them from the model's
    generation_config, a `generation_config=` and keyword options."""
    gc = copy.deepcopy(generation_config if generation_config is not None else hf.generation_config)
    if generation_config is not None:  # HF refills a user config's unset fields from the model's own
        base = copy.deepcopy(hf.generation_config)
        base.update(**generation_config.to_diff_dict())
        gc = base
    gc.update(**{k: v for k, v in kwargs.items() if hasattr(gc, k)})
    T = batch.input_ids.shape[1]
    n = gc.max_new_tokens if gc.max_new_tokens is not None else (gc.max_length or 20) - T
    if n is None or n < 1:
        raise InputError(f"generate would add {n} tokens (max_length {gc.max_length} ≤ prompt length {T}); "
                         "pass max_new_tokens=")
    expand = max(int(gc.num_beams or 1), int(gc.num_return_sequences or 1))
    return int(n), expand


def generation_inputs(vlm, batch) -> dict:
    """The batch's inputs plus the position_ids HF generate computes for the prefill (left padding counts from
    each row's first real token), so a profiling pass sees what generate will. M-RoPE families (Qwen) compute
    the same positions from the mask in a plain forward: nothing is added."""
    inputs = dict(batch.inputs)
    pos = vlm.generation_positions(batch)
    if pos is not None:
        inputs["position_ids"] = pos
    return inputs


def prefix_inputs(ctx) -> dict:
    """HF generate inputs that continue from `ctx.prefix`: the whole prompt's ids and mask, the language model's
    own embeddings (image features merged: no pixels needed) and positions, and the cache of the first P
    positions, which HF slices the prompt against. HF expands tensors for beams; the cache is expanded here."""
    pre, b = ctx.prefix, ctx.batch
    cache = pre.cache
    if ctx.expand > 1:
        cache.batch_repeat_interleave(ctx.expand)
    inputs = {"input_ids": b.input_ids, "attention_mask": b.inputs["attention_mask"], "inputs_embeds": pre.embeds,
              "cache": cache}
    pos = ctx.inputs.get("position_ids", pre.positions)
    if pos is not None:
        inputs["position_ids"] = pos
    return inputs


def suffix_inputs(ctx) -> dict:
    """Forward inputs that continue from `ctx.prefix`: positions P..T only."""
    pre, b = ctx.prefix, ctx.batch
    P = pre.length
    inputs = {"inputs_embeds": pre.embeds[:, P:], "attention_mask": b.inputs["attention_mask"], "cache": pre.cache,
              "use_cache": True}
    if pre.positions is not None:
        inputs["position_ids"] = pre.positions[..., P:]
    else:  # what the model computes in a forward without them (the cache length on): explicit, so that keys
        # hidden in the 2D mask (`plan.lower_cuts`) cannot move them
        T = b.input_ids.shape[1]
        inputs["position_ids"] = torch.arange(P, T, device=b.input_ids.device)[None].expand(len(b), -1)
    return inputs


def pack(ctx, result, diagnostics) -> GenerateOutput:
    seq = result if isinstance(result, torch.Tensor) else result.sequences
    T = ctx.batch.input_ids.shape[1]
    texts = [t.strip() for t in ctx.vlm.tokenizer.batch_decode(seq[:, T:], skip_special_tokens=True)]
    return GenerateOutput(texts=texts, sequences=seq, diagnostics=diagnostics, prompt_len=T,
                          hf=None if isinstance(result, torch.Tensor) else result)
