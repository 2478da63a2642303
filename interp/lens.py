"""The logit lens: read the residual stream after each decoder layer through the model's own final norm and
unembedding, and keep, per position, the probability of one target token and the top token.

    lens = interp.logit_lens(vlm, batch)            # targets: the model's own next token at the last position
    lens.probs[l, b, t]                             # [L, B, T] p(target_b | resid after layer l at position t)
    lens.top[l, b, t]                               # [L, B, T] argmax token there
    lens.on_grid(layer=5, row=0)                    # per image: {piece: [rows, cols]} of the target's probability

Reduced on the device while the model runs (an `EditOutput` at "resid" that reads and returns nothing): the
vocabulary-wide logits exist only for a chunk of positions at a time, never as [L, T, V] per row. The final
norm and the unembedding are the model's own modules (`Adapter.final_norm`, `Adapter.unembed`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .engine import EditOutput, Intervention, intervene
from .engine.core import describe
from .engine.plan import layer_tuple
from .errors import InputError, SiteError

CHUNK = 1 << 22  # logits elements (rows × positions × vocabulary) computed at once


@dataclass(frozen=True)
class LogitLens:
    """layers: the decoder layers read; probs: [L, B, T] float32, probability of `targets[b]` after layer l at
    position t (NaN at pad positions and positions not asked for); top: [L, B, T] long, the argmax token (-1
    there); targets: [B] long; layout: the batch's `TokenLayout`."""

    layers: list
    probs: torch.Tensor
    top: torch.Tensor
    targets: torch.Tensor
    layout: object

    def on_grid(self, layer: int, row: int = 0, values: torch.Tensor | None = None) -> list:
        """The target's probability after decoder `layer` at each vision token of `row`, put back on each image's
        grid: per image a dict piece name → [rows, cols] (`TokenLayout.scatter`). `values`: another [L, B, T]
        array to place instead (e.g. `lens.top == token`)."""
        if layer not in self.layers:
            raise InputError(f"layer {layer} was not read; this lens has layers {self.layers}")
        x = (self.probs if values is None else values)[self.layers.index(layer), row]
        return self.layout.scatter(x[self.layout.vision[row]], row=row)


def readout(vlm):
    """(final norm, unembedding): the model's own modules, as nnsight envoys (callable inside a trace)."""
    ad = vlm.adapter
    try:
        norm = vlm.sites.lm(vlm.nn)
        for part in ad.final_norm.split("."):
            norm = getattr(norm, part)
        head = vlm.nn
        for part in ad.unembed.split("."):
            head = getattr(head, part)
    except AttributeError as e:
        raise SiteError(f"{type(vlm.hf).__name__}: no final norm at {ad.language_model}.{ad.final_norm} or "
                        f"unembedding at {ad.unembed} ({e}); set final_norm / unembed in its Adapter") from None
    return norm, head


def vocab_size(vlm) -> int:
    """Rows of the unembedding (what the logits' last dimension holds)."""
    head = vlm.hf.get_output_embeddings()
    return int(head.weight.shape[0]) if head is not None else int(vlm.hf.config.get_text_config().vocab_size)


@dataclass(frozen=True, eq=False)
class Lens(Intervention):
    """Logit-lens reduction at "resid" of `layers` (None: all) for positions `positions` (a token group):
    diagnostics {"probs": [L, B, T], "top": [L, B, T]} of `targets` ([B] long)."""

    targets: torch.Tensor = None
    layers: tuple | None = None
    positions: object = "all"
    name: str = "logit_lens"

    def _layers(self, ctx):
        L = ctx.vlm.num_layers
        return list(range(L)) if self.layers is None else list(layer_tuple(self.layers, self.name, L))

    def prepare(self, ctx):
        s = ctx.scratch(self)
        s.clear()
        T = ctx.prompt_layout.seq_len
        pos = ctx.group(self.positions)[:, :T] & ~ctx.prompt_layout.pad.to(ctx.device)
        if not pos.any():
            raise InputError(f"logit_lens: positions {describe(self.positions)} select no token")
        B, L = pos.shape[0], len(self._layers(ctx))
        s["pos"], s["cols"] = pos, pos.any(0).nonzero().squeeze(1)
        s["probs"] = torch.full((L, B, T), float("nan"), device=ctx.device)
        s["top"] = torch.full((L, B, T), -1, dtype=torch.long, device=ctx.device)
        s["index"] = {l: i for i, l in enumerate(self._layers(ctx))}
        s["norm"], s["head"] = readout(ctx.vlm)
        s["vocab"] = vocab_size(ctx.vlm)

    def edits(self, ctx):
        s = ctx.scratch(self)
        return [EditOutput("resid", tuple(s["index"]), self._read, start=int(s["cols"][0]))]

    def _read(self, ctx, layer, value):
        if ctx.step != 0:
            return None
        s = ctx.scratch(self)
        T = s["pos"].shape[1]
        off = T - value.shape[1]  # a pass after a reused prefix holds the last Q positions
        cols = s["cols"][s["cols"] >= off]
        B = value.shape[0]
        tgt = self.targets.to(value.device)
        i = s["index"][layer]
        with torch.no_grad():
            step = max(1, CHUNK // max(1, B * s["vocab"]))
            for c in range(0, len(cols), step):
                cc = cols[c:c + step]  # [c] absolute positions
                logits = s["head"](s["norm"](value[:, cc - off])).float()  # [B, c, V]
                logp = torch.log_softmax(logits, -1)
                p = logp.gather(2, tgt[:, None, None].expand(-1, len(cc), 1))[..., 0].exp()  # [B, c]
                keep = s["pos"][:, cc]
                s["probs"][i][:, cc] = torch.where(keep, p, s["probs"][i][:, cc])
                s["top"][i][:, cc] = torch.where(keep, logits.argmax(-1), s["top"][i][:, cc])
        return None

    def finish(self, ctx):
        s = ctx.scratch(self)
        return {"probs": s["probs"].cpu(), "top": s["top"].cpu(), "layers": list(s["index"])}


def logit_lens(vlm, batch, *, targets=None, layers=None, positions="all", interventions=()) -> LogitLens:
    """The logit lens of one forward (see `LogitLens` for shapes).

    targets: [B] token ids (a list, a tensor, or one int for every row); None: the model's own next-token
    prediction at each row's last prompt position (one plain forward more). layers: decoder layers (None: all).
    positions: the token group to read (default every non-pad position). interventions: run alongside (e.g.
    an `EdgeMask`); the lens reads the residual stream they produce.
    """
    B = len(batch)
    if targets is None:
        logits = intervene(vlm, *interventions).forward(batch).logits
        last = batch.layout.last.int().argmax(1)
        targets = logits[torch.arange(B), last.to(logits.device)].argmax(-1)
    targets = torch.as_tensor(targets, dtype=torch.long).flatten().cpu()
    if targets.numel() == 1 and B > 1:
        targets = targets.expand(B).clone()
    V = vocab_size(vlm)
    if targets.numel() != B or bool((targets < 0).any()) or bool((targets >= V).any()):
        raise InputError(f"logit_lens: targets must be {B} token ids in [0, {V}), one per row; got "
                         f"{targets.tolist()[:8]}")
    lens = Lens(targets=targets, layers=None if layers is None else layer_tuple(layers, "logit_lens"),
                positions=positions)
    out = intervene(vlm, *interventions, lens).forward(batch).diagnostics[lens.name]
    return LogitLens(layers=out["layers"], probs=out["probs"], top=out["top"], targets=targets,
                     layout=batch.layout)
