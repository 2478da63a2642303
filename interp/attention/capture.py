"""Per-layer text→vision attention statistics, reduced on device, without requiring eager attention.

Under SDPA the model keeps running SDPA; at each attention call the statistics are recomputed for the
selected query rows only (`softmax(q_rows·kᵀ·scale + mask_rows)`). Under eager the returned probabilities
are read. Injected / masked probabilities are seen as the model uses them (capture reads last).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..engine.plan import layer_tuple
from ..errors import InputError, NoEffectError
from ..layout import check_group
from ..stats import entropy
from ..engine import Intervention, ReadProbs, intervene
from ..engine.core import describe

HEADS = ("mean", "max", "none")


@dataclass
class AttentionStats:
    """Statistics per captured layer (`layers`), row and vision token; NaN where a row has fewer tokens.

    vision_ratio: [L, B] (or [L, B, H] with heads="none") attention mass on vision keys, mean over query rows;
    vision_max: [L, B, Nv] (or [L, B, H, Nv]) max over query rows (AIF's d);
    vision_mean: [L, B, Nv] mean over query rows;
    vision_entropy: [L, B] entropy of the attention over vision tokens renormalised to 1, mean over rows;
    probs: with keep_probs, per layer a [B, H, n, K] tensor of the selected rows (rows = `rows`);
    generated: per decode step, [L, B, Nv] attention of the new token to each vision token.
    """

    layers: list
    vision_ratio: torch.Tensor
    vision_max: torch.Tensor
    vision_mean: torch.Tensor
    vision_entropy: torch.Tensor
    queries: torch.Tensor  # [B, T] bool, the rows the statistics are over
    probs: list | None = None
    rows: torch.Tensor | None = None
    generated: list = field(default_factory=list)

    def layer(self, l: int) -> dict:
        i = self.layers.index(l)
        return {k: getattr(self, k)[i] for k in ("vision_ratio", "vision_max", "vision_mean", "vision_entropy")}


def reduce_rows(p: torch.Tensor, rowsel: torch.Tensor, vpos: torch.Tensor, heads: str) -> dict:
    """Reduce probabilities of candidate query rows to vision statistics.

    p: [B, H, n, K] float; rowsel: [B, n] bool (which candidate rows count for each batch row);
    vpos: [B, Nv] long vision positions (-1 = none). Returns tensors [B, (H,) Nv] / [B, (H)].
    """
    if heads == "mean":
        p = p.mean(1, keepdim=True)
    elif heads == "max":
        p = p.amax(1, keepdim=True)
    B, H, n, K = p.shape
    valid = vpos >= 0  # [B, Nv]
    idx = vpos.clamp(min=0)[:, None, None, :].expand(B, H, n, vpos.shape[1])
    pv = torch.gather(p, 3, idx) * valid[:, None, None, :]  # [B, H, n, Nv]
    sel = rowsel[:, None, :, None]
    cnt = rowsel.sum(1).clamp(min=1)[:, None]  # [B, 1]
    nan = torch.tensor(float("nan"), device=p.device)
    vmax = torch.where(sel, pv, torch.full_like(pv, -1.0)).amax(2)  # [B, H, Nv]
    vmean = (pv * sel).sum(2) / cnt[:, :, None]
    mass = pv.sum(-1)  # [B, H, n]
    ratio = (mass * rowsel[:, None]).sum(-1) / cnt
    q = pv / mass[..., None].clamp(min=1e-30)
    ent_rows = entropy(q)  # [B, H, n]
    ent = (ent_rows * rowsel[:, None]).sum(-1) / cnt
    none = ~rowsel.any(1)  # rows with no selected query: NaN, not zero
    vmax = torch.where(valid[:, None] & ~none[:, None, None], vmax, nan)
    vmean = torch.where(valid[:, None] & ~none[:, None, None], vmean, nan)
    ratio = torch.where(none[:, None], nan, ratio)
    ent = torch.where(none[:, None], nan, ent)
    if heads != "none":
        vmax, vmean, ratio, ent = vmax[:, 0], vmean[:, 0], ratio[:, 0], ent[:, 0]
    return {"vision_max": vmax, "vision_mean": vmean, "vision_ratio": ratio, "vision_entropy": ent}


@dataclass(frozen=True, eq=False)
class Capture(Intervention):
    """Record per-layer text→vision attention statistics (diagnostics key `name`, value `AttentionStats`).

    queries: a token group (`interp.layout.GROUPS`: "question" = the question's own tokens, "after_image",
    "last", ...), a bool [B, T] tensor or a callable; heads: "mean" | "max" | "none";
    layers: None = all; keep_probs: keep the selected rows' full probabilities; during generate each decode
    step's new token is captured too.
    """

    queries: object = "question"
    heads: str = "mean"
    layers: tuple | None = None
    keep_probs: bool = False
    name: str = "capture"

    def __post_init__(self):
        if self.heads not in HEADS:
            raise InputError(f"capture heads must be one of {HEADS}, got {self.heads!r}")
        check_group(self.queries, f"{self.name} queries")
        if self.layers is not None:
            layers = layer_tuple(self.layers, "capture")
            if not layers:
                raise InputError("capture: layers is empty; use None for all layers")
            object.__setattr__(self, "layers", layers)

    def _layers(self, ctx):
        L = ctx.vlm.num_layers
        return list(range(L)) if self.layers is None else sorted(l % L for l in layer_tuple(self.layers, self.name, L))

    def prepare(self, ctx):
        s = ctx.scratch(self)
        s.clear()
        T = ctx.prompt_layout.seq_len
        qg = ctx.group(self.queries).cpu()[:, :T]
        if not qg.any():
            raise NoEffectError(f"capture: query group {describe(self.queries)} selects no token in any row; "
                                "capture rows that exist (e.g. queries='after_image')")
        s["qg"] = qg.to(ctx.device)
        s["vpos"] = ctx.layout.vision_positions().to(ctx.device)
        s["prefill"], s["steps"] = {}, {}

    def edits(self, ctx):
        first = ctx.scratch(self)["qg"].any(0).nonzero()
        return [ReadProbs(layers=tuple(self._layers(ctx)), fn=self._read, start=int(first[0]))]

    def _read(self, call):
        ctx = call.ctx
        s = ctx.scratch(self)
        if ctx.step == 0:
            qg = s["qg"]  # [B, T] prompt positions
            cand = qg.any(0).nonzero().squeeze(1)  # union of rows across the batch (absolute positions)
            p = call.probs(cand - (call.K - call.Q))  # a pass after a reused prefix starts at K − Q
            stats = reduce_rows(p, qg[:, cand], s["vpos"], self.heads)
            if self.keep_probs:
                stats["probs"] = p
            s["prefill"][call.layer] = {k: v.detach().cpu() for k, v in stats.items()}
        else:  # decode step: the one new query row
            rowsel = torch.ones(call.B, 1, dtype=torch.bool, device=call.q.device)
            p = call.probs(torch.tensor([call.Q - 1], device=call.q.device))
            stats = reduce_rows(p, rowsel, s["vpos"], self.heads)
            s["steps"].setdefault(ctx.step, {})[call.layer] = stats["vision_max"].detach().cpu()

    def finish(self, ctx) -> AttentionStats:
        s = ctx.scratch(self)
        layers = self._layers(ctx)
        pre = s["prefill"]
        missing = [l for l in layers if l not in pre]
        if missing:
            raise InputError(f"capture: layers {missing} never ran; was the forward interrupted?")

        def stack(key):
            return torch.stack([pre[l][key] for l in layers])

        gen = [torch.stack([s["steps"][st][l] for l in layers]) for st in sorted(s["steps"])]
        return AttentionStats(layers=layers, vision_ratio=stack("vision_ratio"), vision_max=stack("vision_max"),
                              vision_mean=stack("vision_mean"), vision_entropy=stack("vision_entropy"),
                              queries=s["qg"].cpu(), probs=[pre[l]["probs"] for l in layers] if self.keep_probs else None,
                              rows=s["qg"].any(0).nonzero().squeeze(1).cpu(), generated=gen)


def capture(vlm, batch, *, layers=None, queries="question", heads="mean", keep_probs=False,
            interventions=()) -> AttentionStats:
    """Per-layer text→vision attention statistics of one forward (see `AttentionStats` for shapes).

    Other `interventions` (e.g. an `EdgeMask`) run alongside; capture sees the attention they produce.
    """
    cap = Capture(queries=queries, heads=heads, layers=layers, keep_probs=keep_probs)
    out = intervene(vlm, *interventions, cap).forward(batch)
    return out.diagnostics[cap.name]
