"""Attention knockout over windows of layers (Zhang et al., "Cross-modal Information Flow in Multimodal Large
Language Models"): cut every attention edge from one token group (queries) to another (keys) in layers
[l, l + k) only, and measure the relative change of the answer's probability at the last prompt position.

    flow = interp.knockout_flow(vlm, batch, window=3)
    flow.change          # [E, L − k + 1]: mean over rows of (p_cut − p) / p, one curve per edge set
    flow.rows            # [E, L − k + 1, B]
    flow.edges           # ["vision → question", "vision → last", "question → last"]

The variants share forwards through the batch dimension: the batch is repeated once per edge set, each copy
cut with its own edges (a `Cut`'s masks are per row), every forward continuing from the plain run's KV cache
up to the first query it cuts and skipping the layers before the window (nothing there changed).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .engine import Cut, EditOutput, Intervention
from .engine.core import describe
from .errors import InputError
from .patching import Record
from .variants import base_run, chunks, replay

# Zhang et al.'s three flows, named as the information moves (source → destination): the destination's queries
# are cut from the source's keys. Values: (queries, keys).
EDGES = {"vision → question": ("question", "vision"), "vision → last": ("last", "vision"),
         "question → last": ("last", "question")}


@dataclass(frozen=True)
class KnockoutFlow:
    """edges: the edge sets' names (E); starts: the window starts l (W = L − k + 1), window k: layers [l, l+k);
    change: [E, W] mean over rows of (p_cut − p) / p; rows: [E, W, B] per row; probs: [E, W, B] p_cut;
    base: [B] p, the target's probability at the last prompt position without cuts; targets: [B]."""

    edges: list
    starts: list
    window: int
    change: torch.Tensor
    rows: torch.Tensor
    probs: torch.Tensor
    base: torch.Tensor
    targets: torch.Tensor


@dataclass(frozen=True, eq=False)
class _Knockouts(Intervention):
    """Copy v of every row: variant v = (queries [B, T], keys [B, T], first layer l), cut in layers [l, l+k);
    every copy shares l here, so the layers before it do not run (their outputs are `below`'s)."""

    variants: tuple = ()
    window: int = 1
    start: int = 1
    below: dict = None
    name: str = "knockout_flow"

    def edits(self, ctx):
        n = len(self.variants)
        B = ctx.batch.layout.batch_size // n
        T = ctx.layout.seq_len
        l0 = self.variants[0][2]
        q = torch.stack([v[0] for v in self.variants], 1).reshape(B * n, T).to(ctx.device)  # row b·n + v
        k = torch.stack([v[1] for v in self.variants], 1).reshape(B * n, T).to(ctx.device)
        out = [Cut(q, k, layers=tuple(range(l0, min(l0 + self.window, ctx.vlm.num_layers))))]
        if l0 > 0:
            out.append(EditOutput("resid", tuple(range(l0)), self._skip, start=self.start, skip=True))
        return out

    def _skip(self, ctx, layer, _):
        return self.below[layer][:, self.start:].repeat_interleave(len(self.variants), 0)


def knockout_flow(vlm, batch, *, window: int | None = None, edges=None, targets=None,
                  batch_size: int = 64) -> KnockoutFlow:
    """Cut each edge set in each window of `window` consecutive layers; see `KnockoutFlow` for the shapes.

    window: k (default: a quarter of the layers, at least 1, as Zhang et al.'s 9 of 32); edges: {name:
    (queries, keys)} token groups (names from `interp.layout.GROUPS`, bool [B, T] tensors or callables; default
    `EDGES`, named source → destination as information flows: vision → question (the question's queries cut
    from the vision keys), vision → last, question → last; "last" = the last prompt position); targets:
    [B] token ids (default: the model's own prediction at the last prompt position); batch_size: rows per
    forward.
    """
    L = vlm.num_layers
    k = max(1, round(L / 4)) if window is None else window
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= L:
        raise InputError(f"knockout_flow: window must be an int in 1..{L} (the model has {L} layers), got {window!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InputError(f"knockout_flow: batch_size (rows per forward) must be an int ≥ 1, got {batch_size!r}")
    edges = dict(EDGES if edges is None else edges)
    if not edges:
        raise InputError("knockout_flow: edges is empty; give {name: (queries, keys)} token groups")
    lay = batch.layout
    B, T = lay.shape
    masks = {}
    for name, pair in edges.items():
        if not (isinstance(pair, (tuple, list)) and len(pair) == 2):
            raise InputError(f"knockout_flow: edges[{name!r}] must be (queries, keys) token groups, got {pair!r}")
        qm, km = (lay.group(g) & ~lay.pad for g in pair)
        qm[:, 0] = False  # position 0 sees only itself: it has no edge to cut but its own (every forward reuses it)
        causal = (km.long().cumsum(1) * qm).sum(1)  # [B] edges with the key at or before the query
        if not bool((causal > 0).all()):
            rows = (causal == 0).nonzero().flatten().tolist()
            raise InputError(f"knockout_flow: edge set {name!r} ({describe(pair[0])} → {describe(pair[1])}) has no "
                             f"causal edge in rows {rows}: its keys all come after its queries; swap them or drop it")
        masks[name] = (qm, km)
    base = base_run(vlm, batch, Record("resid", tuple(range(L))))
    below = base.diagnostics["record"]
    last = lay.last.int().argmax(1).to(base.logits.device)
    b = torch.arange(B, device=base.logits.device)
    p0 = torch.softmax(base.logits[b, last].float(), -1)
    if targets is None:
        targets = p0.argmax(-1)
    targets = torch.as_tensor(targets, dtype=torch.long, device=p0.device).flatten()
    if targets.numel() != B:
        raise InputError(f"knockout_flow: targets must hold {B} token ids (one per row), got {targets.numel()}")
    p = p0.gather(1, targets[:, None])[:, 0]  # [B]
    names, starts = list(masks), list(range(L - k + 1))
    probs = torch.zeros(len(names), len(starts), B)
    for s in starts:
        vs = [(masks[nm][0], masks[nm][1], s, e) for e, nm in enumerate(names)]
        first = [int(q.any(0).int().argmax()) for q, _, _, _ in vs]
        for idx, P in chunks(first, max(1, batch_size // B), T, B):
            chunk = tuple(vs[i][:3] for i in idx)
            out = replay(vlm, base, len(chunk), P, _Knockouts(chunk, k, P, below)).logits
            lg = out.view(B, len(chunk), T, -1)[b, :, last].float()  # [B, n, V]
            pc = torch.softmax(lg, -1).gather(2, targets[:, None, None].expand(-1, len(chunk), 1))[..., 0]
            for j, i in enumerate(idx):
                probs[vs[i][3], s] = pc[:, j].cpu()
    rel = (probs - p.cpu()) / p.cpu()
    return KnockoutFlow(edges=names, starts=starts, window=k, change=rel.mean(-1), rows=rel, probs=probs,
                        base=p.cpu(), targets=targets.cpu())
