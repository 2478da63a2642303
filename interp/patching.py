"""Activation patching: replace a site's output at chosen positions with values from another run. Sweeps of it
over layers × position groups, tokens, blocks of the image or heads: `interp.sweep.patch_sweep`.

Sites: "resid" (decoder-layer output), "attn_out" (attention block output), "mlp_out", "heads" (each attention
head's output before the output projection, [B, T, H, Dh]).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .engine import EditOutput, Intervention, intervene
from .engine.core import describe
from .engine.plan import layer_tuple
from .errors import InputError

SITES = ("resid", "attn_out", "mlp_out", "heads")


def _check_site(site):
    if site not in SITES:
        raise InputError(f"site must be one of {SITES}, got {site!r}")


@dataclass(frozen=True, eq=False)
class Record(Intervention):
    """Save the outputs `[B, T, D]` (heads: `[B, T, H, Dh]`) of `site` at `layers` (prefill) into diagnostics
    {layer: tensor}. `keep_graph`: keep them attached to the autograd graph (for gradients) instead of copies."""

    site: str = "resid"
    layers: tuple = ()
    keep_graph: bool = False
    name: str = "record"

    def __post_init__(self):
        _check_site(self.site)
        object.__setattr__(self, "layers", layer_tuple(self.layers, self.name))

    def prepare(self, ctx):
        ctx.scratch(self).clear()

    def edits(self, ctx):
        return [EditOutput(self.site, self.layers, self._record, start=0)]

    def _record(self, ctx, layer, value):
        if ctx.step != 0:
            return None
        if self.keep_graph:
            ctx.scratch(self)[layer] = value
            return value  # handed back, so the graph runs through this very tensor
        ctx.scratch(self)[layer] = value.detach().clone()
        return None

    def finish(self, ctx):
        return dict(ctx.scratch(self))


@dataclass(frozen=True, eq=False)
class Patch(Intervention):
    """Replace `site` ("resid" = decoder-layer output, "attn_out", "mlp_out", "heads") at `layers` and `positions`
    (a token group or bool [B, T]) with the values of `source`: a `Batch` (its clean run is traced first; it
    must have the same layout) or saved activations {layer: [B, T, D]} ([B, T, H, Dh] for "heads").
    `heads`: with site "heads", which heads to patch (None: all). Prefill only."""

    site: str = "resid"
    layers: tuple = ()
    positions: object = "all"
    source: object = None
    heads: tuple | None = None
    name: str = "patch"

    def __post_init__(self):
        _check_site(self.site)
        layers = layer_tuple(self.layers, self.name)
        if not layers:
            raise InputError(f"{self.name}: layers is empty; name the layers to patch, e.g. layers=(3,)")
        object.__setattr__(self, "layers", layers)
        if self.heads is not None:
            if self.site != "heads":
                raise InputError(f"{self.name}: heads= needs site='heads', got site={self.site!r}")
            object.__setattr__(self, "heads", tuple(int(h) for h in (
                [self.heads] if isinstance(self.heads, int) else self.heads)))

    def prepare(self, ctx):
        if self.source is None:
            raise InputError("Patch needs a source: a Batch or saved activations {layer: [B, T, D]}")
        s = ctx.scratch(self)
        if isinstance(self.source, dict):
            acts = self.source
        else:
            if tuple(self.source.input_ids.shape) != tuple(ctx.batch.input_ids.shape):
                raise InputError(f"Patch: source batch shape {tuple(self.source.input_ids.shape)} differs from "
                                 f"the patched batch {tuple(ctx.batch.input_ids.shape)}; pad both the same way")
            rec = Record(site=self.site, layers=tuple(self.layers))
            acts = intervene(ctx.vlm, rec).forward(self.source).diagnostics[rec.name]
        missing = [l for l in self.layers if l not in acts]
        if missing:
            raise InputError(f"Patch: source has no activations for layers {missing}")
        s["acts"] = acts
        T = ctx.prompt_layout.seq_len
        s["pos"] = ctx.group(self.positions)[:, :T]
        s["n"] = int(s["pos"].sum())
        if s["n"] == 0:
            raise InputError(f"{self.name}: positions {describe(self.positions)} select no token; an intervention that "
                             "does nothing is an error")

    def edits(self, ctx):
        first = ctx.scratch(self)["pos"].any(0).nonzero()
        return [EditOutput(self.site, self.layers, self._patch, start=int(first[0]))]

    def _patch(self, ctx, layer, value):
        if ctx.step > 0:
            return None
        s = ctx.scratch(self)
        src = ctx.rows(s["acts"][layer]).to(value.device, value.dtype)
        if value.shape[1] != src.shape[1]:  # a pass after a reused prefix: the last Q positions
            src = src[:, src.shape[1] - value.shape[1]:]
        if src.shape != value.shape:
            raise InputError(f"Patch: source activations {tuple(src.shape)} vs run {tuple(value.shape)} at "
                             f"layer {layer}")
        pos = s["pos"][:, s["pos"].shape[1] - value.shape[1]:]
        sel = pos[..., None]  # [B, Q, 1]
        if self.site == "heads":
            hs = torch.zeros(value.shape[2], dtype=torch.bool, device=value.device)
            hs[list(self.heads) if self.heads is not None else slice(None)] = True
            sel = (pos[..., None] & hs)[..., None]  # [B, Q, H, 1]
        return torch.where(sel, src, value)

    def finish(self, ctx):
        return {"positions": ctx.scratch(self)["n"], "layers": list(self.layers)}


def logit_diff(logits: torch.Tensor, pos: torch.Tensor, good: torch.Tensor, bad: torch.Tensor) -> torch.Tensor:
    """[B] logit of `good` minus `bad` token at the positions `pos` (long [B])."""
    b = torch.arange(logits.shape[0])
    row = logits[b, pos]
    return row[b, good] - row[b, bad]
