"""What an intervention is: a small value that, given the batch, declares a few frozen edits.

An intervention has three optional methods: `prepare(ctx)` (profiling passes, scratch space), `edits(ctx)`
(the list of edits below) and `finish(ctx)` (its diagnostics). The engine owns how edits are applied, in which
order, at which step, and whether a pass may start after a reused KV prefix: every edit states the first
position it touches (`start`), and a prefix of P positions is reused only when every edit starts at ≥ P.

| edit | what it does | where |
|---|---|---|
| `Cut(queries, keys, layers)` | cut attention from query to key positions | mask builder (all layers) or layer's attention call |
| `EditProbs(layers, fn, start)` | `fn(call, probs, visible) → probs` after masks | attention call |
| `ReadProbs(layers, fn, start)` | `fn(call)` sees the final probabilities | attention call, after every edit |
| `EditOutput(site, layers, fn, start)` | `fn(ctx, layer, value) → value/None` | "heads", "attn_out", "mlp_out", "resid" |
| `TapInputs(fn)` | `fn(ctx, kwargs)` sees what the language model receives | language model input |

No nnsight here: this module is the vocabulary shared by the engine and every intervention.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any, Callable

import torch

from ..errors import InputError

SITES = ("resid", "attn_out", "mlp_out", "heads")


@dataclass(frozen=True, eq=False)
class Cut:
    """Cut every (query, key) pair with `queries[b, q] & keys[b, k]`: bool `[B, T+N]` over the run's layout.
    `layers=None`: every layer, applied once per forward at the mask builder."""

    queries: torch.Tensor
    keys: torch.Tensor
    layers: tuple | None = None

    @property
    def start(self) -> int:
        sel = self.queries.any(0).nonzero()
        return int(sel[0]) if len(sel) else 10**12


@dataclass(frozen=True, eq=False)
class EditProbs:
    """`fn(call, probs [B, H, Q, K] float32, visible [B, Q, K] bool) → probs` at `layers`, applied in order after
    the masks; `start`: the first query position whose row may change; `decode`: also at decode steps.
    `target`: (queries, keys) bool `[B*, T+N]`, the entries it writes (an injection), if it has such; the plan
    then refuses a composition whose cuts remove every one of them and warns when they remove some."""

    layers: tuple
    fn: Callable
    start: int = 0
    decode: bool = True
    target: tuple | None = None


@dataclass(frozen=True, eq=False)
class ReadProbs:
    """`fn(call)` at `layers` after every edit; `call.probs(rows)` gives the final probabilities. `start`: the
    first query position read (a pass after a reused prefix has no rows before it)."""

    layers: tuple
    fn: Callable
    start: int = 0


@dataclass(frozen=True, eq=False)
class EditOutput:
    """`fn(ctx, layer, value [B, Q, D]) → new value or None` at a module output of `layers`: "resid" (decoder
    layer), "attn_out" (attention block), "mlp_out"; or "heads": each attention head's output before the
    output projection, value [B, Q, H, Dh] (the projection's input, one slice per head). `start`: first
    position read or written. `skip`: the module does not run at all; site "resid": the decoder layer, and
    `fn(ctx, layer, None)` gives its output, e.g. a stored run's where nothing before it changed; site
    "mlp_out": the MLP, and `fn(ctx, layer, x)` gives its output from its input x [B, Q, D] (e.g. a pass that
    reads only attention skips the last MLP)."""

    site: str
    layers: tuple
    fn: Callable
    start: int = 0
    skip: bool = False

    def __post_init__(self):
        if self.site not in SITES:
            raise InputError(f"site must be one of {SITES}, got {self.site!r}")
        if self.skip and self.site not in ("resid", "mlp_out"):
            raise InputError(f"EditOutput(skip=True) replaces a whole module: site must be 'resid' (the decoder "
                             f"layer) or 'mlp_out' (its MLP), got {self.site!r}")


@dataclass(frozen=True, eq=False)
class TapInputs:
    """`fn(ctx, kwargs)` sees the language model's keyword inputs (inputs_embeds [B, Q, D], position_ids, ...)."""

    fn: Callable
    start: int = 0


EDITS = (Cut, EditProbs, ReadProbs, EditOutput, TapInputs)


class Intervention:
    """Base of every intervention: override `prepare`, `edits` and `finish` as needed. `name` keys its
    diagnostics."""

    name = "intervention"

    def prepare(self, ctx: "Context") -> None:
        pass

    def edits(self, ctx: "Context") -> list:
        return []

    def finish(self, ctx: "Context") -> dict:
        return {}


@dataclass
class Prefix:
    """A profiling pass's KV cache cropped to its first `length` positions, with the embeddings the language
    model received (`embeds` [B, T, D], image features merged), its `positions` (None when the model computes
    them) and the pass's `logits` [B, T, V] (valid on the prefix: no edit touches it; None where the pass did not
    compute them, for generate, which needs none)."""

    cache: Any
    length: int
    embeds: torch.Tensor
    positions: Any
    logits: torch.Tensor


@dataclass
class Context:
    """What interventions see while a run is planned and applied.

    layout: the run's `TokenLayout` over prompt + `max_new_tokens` positions, rows repeated `expand` times
    the way HF generate expands a batch for beams / return sequences ([B·expand, T+N]); prompt_layout: the
    batch's own [B, T] layout; inputs: the model inputs of the main pass (with generate's position_ids), which
    a profiling pass should reuse; step: 0 = prefill / forward, k = k-th decode step.
    """

    vlm: Any
    batch: Any
    layout: Any
    inputs: dict
    mode: str = "forward"
    max_new_tokens: int = 0
    expand: int = 1
    step: int = 0
    store: dict = field(default_factory=dict)
    interventions: tuple = ()
    offered: "Prefix | None" = None
    prefix: "Prefix | None" = None
    prefix_reason: str = ""
    coverage: dict = field(default_factory=dict)  # plan: {name: {"layers": {layer: (entries, kept)}, "cutters"}}

    @property
    def device(self):
        return self.vlm.device

    @property
    def prompt_layout(self):
        return self.batch.layout

    def group(self, g) -> torch.Tensor:
        """A token group (name, bool [B, T] or [B, T+N] tensor, callable of the layout) as bool
        [B·expand, T+N] on the model device."""
        lay = self.layout
        if isinstance(g, torch.Tensor):
            if g.dtype != torch.bool:
                raise InputError(f"a token group tensor must be bool, got dtype {g.dtype}; use e.g. mask > 0")
            if g.dim() != 2:
                raise InputError(f"a token group tensor must be [B, T], got shape {tuple(g.shape)}")
            g = self.rows(g.cpu())
            if g.shape[1] < lay.seq_len and g.shape[1] == self.prompt_layout.seq_len:
                g = torch.cat([g, torch.zeros(g.shape[0], lay.seq_len - g.shape[1], dtype=torch.bool)], 1)
        elif callable(g):
            g = g(lay)
        return lay.group(g).to(self.device)

    def rows(self, x):
        """A per-row tensor [B, ...] (B prompt rows) repeated to the run's [B·expand, ...] rows."""
        if self.expand == 1 or not isinstance(x, torch.Tensor) or x.shape[0] != len(self.batch):
            return x
        return x.repeat_interleave(self.expand, dim=0)

    def scratch(self, iv) -> dict:
        return self.store.setdefault(id(iv), {})

    def offer_prefix(self, prefix: Prefix) -> None:
        """A profiling pass offers its KV cache; the engine uses it if no edit touches its positions."""
        self.offered = prefix


def describe(g) -> str:
    """A token group as a message names it: its name, or its type and shape (never the dumped tensor)."""
    if isinstance(g, torch.Tensor):
        return f"a {str(g.dtype).replace('torch.', '')} tensor [{', '.join(map(str, g.shape))}]"
    return repr(g) if isinstance(g, str) else type(g).__name__


def repeat_layout(layout, n: int):
    """A `TokenLayout` with every row repeated `n` times in place (HF's `repeat_interleave` expansion)."""
    if n == 1:
        return layout
    B = layout.batch_size
    rep = {f.name: v.repeat_interleave(n, dim=0) for f in fields(layout)
           if isinstance(v := getattr(layout, f.name), torch.Tensor) and v.dim() >= 1 and v.shape[0] == B}
    images = tuple(img for img in layout.images for _ in range(n))
    return replace(layout, images=images, **rep)
