"""Activation patching: replace a site's output at chosen positions with values from another run."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .errors import InputError
from .engine import EditOutput, Intervention, intervene
from .engine.core import describe
from .engine.plan import layer_tuple

SITES = ("resid", "attn_out", "mlp_out")


@dataclass(frozen=True, eq=False)
class Record(Intervention):
    """Save the outputs `[B, T, D]` of `site` at `layers` (prefill) into diagnostics {layer: tensor}."""

    site: str = "resid"
    layers: tuple = ()
    name: str = "record"

    def __post_init__(self):
        if self.site not in SITES:
            raise InputError(f"site must be one of {SITES}, got {self.site!r}")
        object.__setattr__(self, "layers", layer_tuple(self.layers, self.name))

    def prepare(self, ctx):
        ctx.scratch(self).clear()

    def edits(self, ctx):
        return [EditOutput(self.site, self.layers, self._record, start=0)]

    def _record(self, ctx, layer, value):
        if ctx.step == 0:
            ctx.scratch(self)[layer] = value.detach().clone()

    def finish(self, ctx):
        return dict(ctx.scratch(self))


@dataclass(frozen=True, eq=False)
class Patch(Intervention):
    """Replace `site` ("resid" = decoder-layer output, "attn_out", "mlp_out") at `layers` and `positions`
    (a token group or bool [B, T]) with the values of `source`: a `Batch` (its clean run is traced first; it
    must have the same layout) or saved activations {layer: [B, T, D]}. Prefill only."""

    site: str = "resid"
    layers: tuple = ()
    positions: object = "all"
    source: object = None
    name: str = "patch"

    def __post_init__(self):
        if self.site not in SITES:
            raise InputError(f"site must be one of {SITES}, got {self.site!r}")
        layers = layer_tuple(self.layers, self.name)
        if not layers:
            raise InputError(f"{self.name}: layers is empty; name the layers to patch, e.g. layers=(3,)")
        object.__setattr__(self, "layers", layers)

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
            raise InputError(f"Patch: source activations {tuple(src.shape)} vs run {tuple(value.shape)} at layer {layer}")
        pos = s["pos"][:, s["pos"].shape[1] - value.shape[1]:]
        return torch.where(pos[..., None], src, value)

    def finish(self, ctx):
        return {"positions": ctx.scratch(self)["n"], "layers": list(self.layers)}


def logit_diff(logits: torch.Tensor, pos: torch.Tensor, good: torch.Tensor, bad: torch.Tensor) -> torch.Tensor:
    """[B] logit of `good` minus `bad` token at the positions `pos` (long [B])."""
    b = torch.arange(logits.shape[0])
    row = logits[b, pos]
    return row[b, good] - row[b, bad]


def patch_sweep(vlm, clean, corrupt, *, site="resid", layers=None, groups=("vision", "question"),
                metric=None) -> dict:
    """Patch each layer × position group from `clean` into `corrupt`; returns {"effect": [L, G] tensor,
    "layers", "groups", "clean", "corrupt"}. Default metric: mean logit difference at the last prompt position
    between the clean run's top token and the corrupt run's top token (1 = fully restored after normalising
    by clean − corrupt is left to the caller)."""
    layers = list(range(vlm.num_layers)) if layers is None else list(layers)
    rec = Record(site=site, layers=tuple(layers))
    clean_out = intervene(vlm, rec).forward(clean)
    acts = clean_out.diagnostics[rec.name]
    corrupt_logits = intervene(vlm).forward(corrupt).logits
    pos = corrupt.layout.last.int().argmax(1)
    b = torch.arange(len(pos))
    good = clean_out.logits[b, pos].argmax(-1)
    bad = corrupt_logits[b, pos].argmax(-1)
    if metric is None:
        def metric(logits):
            return logit_diff(logits, pos, good, bad).mean()
    effect = torch.zeros(len(layers), len(groups))
    for i, l in enumerate(layers):
        for j, g in enumerate(groups):
            p = Patch(site=site, layers=(l,), positions=g, source={l: acts[l]})
            effect[i, j] = float(metric(intervene(vlm, p).forward(corrupt).logits))
    return {"effect": effect, "layers": layers, "groups": list(groups),
            "clean": float(metric(clean_out.logits)), "corrupt": float(metric(corrupt_logits))}
