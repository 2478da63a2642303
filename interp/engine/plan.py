"""Planning: the interventions' edits collected per site, validated against the model and the batch, and the
decision whether a pass may start after a reused KV prefix. No nnsight here.

What is checked once the batch is known (what can be checked earlier is checked when an intervention is built):
the batch belongs to this model's processor (`check_batch`); every edit is one of the engine's and its layers
exist; the model's attention implementation can take edits; every cut removes at least one causal edge and
leaves every row a visible key (`check_cuts`); an injection (an `EditProbs` with a `target`) keeps at least
one entry after the other interventions' cuts (`check_targets`: an error when they cut all of them, an
`InterpWarning` when they cut some; the counts go to `ctx.coverage` for its diagnostics).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from ..errors import InputError, NoEffectError, warn
from .core import Cut, EditOutput, EditProbs, TapInputs, EDITS

ATTENTION = ("sdpa", "eager")


@dataclass(frozen=True)
class Plan:
    """Edits by site. cuts: all-layer `Cut`s (mask builder); layer_cuts / probs / reads: per layer index;
    outputs: per (site, layer); taps: language-model input taps; start: first position any edit touches."""

    cuts: tuple
    layer_cuts: dict
    probs: dict
    reads: dict
    outputs: dict
    taps: tuple
    start: int
    prefill_cuts: tuple = ()  # all-layer cuts left for the prefill only: the 2D mask hides their keys after it
    unhide: torch.Tensor | None = None  # [B, T] bool: keys the 2D mask hides, visible again to the prefill's builder

    @property
    def attention_layers(self) -> list:
        return sorted(set(self.layer_cuts) | set(self.probs) | set(self.reads))

    @property
    def empty(self) -> bool:
        return self.decode_free and not self.prefill_cuts

    @property
    def decode_free(self) -> bool:
        """Nothing to apply after the prefill (what is left acts there only)."""
        return not (self.cuts or self.layer_cuts or self.probs or self.reads or self.outputs or self.taps)


def layer_tuple(layers, what: str, num_layers: int | None = None) -> tuple:
    """Normalise a layer spec (an int, or an iterable of ints; negative counts from the end when `num_layers`
    is known) to a tuple of ints, checking the range."""
    if isinstance(layers, bool) or not isinstance(layers, (int, tuple, list, range)) and not (
            isinstance(layers, torch.Tensor) and layers.dim() <= 1):
        raise InputError(f"{what}: layers must be an int or a tuple of ints, got {type(layers).__name__}")
    seq = [layers] if isinstance(layers, int) else list(layers.tolist() if isinstance(layers, torch.Tensor) else layers)
    out = []
    for l in seq:
        if isinstance(l, bool) or not isinstance(l, int):
            raise InputError(f"{what}: layer {l!r} is not an int")
        if num_layers is not None:
            if not -num_layers <= l < num_layers:
                raise InputError(f"{what}: layer {l} out of range; the model has {num_layers} layers (0..{num_layers - 1})")
            l = l % num_layers
        out.append(int(l))
    return tuple(out)


def make_plan(ctx, edits: list) -> Plan:
    """`edits`: [(intervention, [edit, ...]), ...] in composition order."""
    L = ctx.vlm.num_layers
    cuts, layer_cuts, probs, reads, outputs, taps = [], {}, {}, {}, {}, []
    start, firsts, owner = 10**12, {}, {}
    for iv, es in edits:
        for e in es:
            if not isinstance(e, EDITS):
                raise InputError(f"{iv.name}: edits() returned {type(e).__name__}; expected one of "
                                 f"{', '.join(c.__name__ for c in EDITS)}")
            start = min(start, e.start)
            firsts[iv.name] = min(firsts.get(iv.name, 10**12), e.start)
            owner[id(e)] = iv.name
            if isinstance(e, Cut):
                _check_cut(ctx.layout, e, iv.name)
                if e.layers is None:
                    cuts.append(e)
                else:
                    for l in layer_tuple(e.layers, iv.name, L):
                        layer_cuts.setdefault(l, []).append(e)
            elif isinstance(e, TapInputs):
                taps.append(e)
            elif isinstance(e, EditOutput):
                for l in layer_tuple(e.layers, iv.name, L):
                    outputs.setdefault((e.site, l), []).append(e)
            else:
                table = probs if isinstance(e, EditProbs) else reads
                for l in layer_tuple(e.layers, iv.name, L):
                    table.setdefault(l, []).append(e)
    plan = Plan(cuts=tuple(cuts), layer_cuts={k: tuple(v) for k, v in layer_cuts.items()},
                probs={k: tuple(v) for k, v in probs.items()}, reads={k: tuple(v) for k, v in reads.items()},
                outputs={k: tuple(v) for k, v in outputs.items()}, taps=tuple(taps), start=start)
    if (plan.cuts or plan.attention_layers) and not ctx.vlm.remote:
        impl = ctx.vlm.attn_implementation
        if impl not in ATTENTION:
            raise InputError(f"the model now uses attn_implementation={impl!r}, which takes no edited mask; interp "
                             f"cuts and reads attention under {ATTENTION}: vlm.hf.set_attn_implementation('sdpa')")
    for l in sorted(set(plan.layer_cuts)) or [None]:
        check_cuts(ctx.layout, plan.cuts + plan.layer_cuts.get(l, ()), layer=l)
    check_targets(ctx, plan, owner)
    _choose_prefix(ctx, plan, firsts)
    return plan


def check_batch(vlm, batch) -> None:
    """The batch is an interp `Batch` made by this model's processor (same tokenizer, image processor, image
    token and vision geometry: another checkpoint of one family may share them) and sits on the model's device."""
    if not (hasattr(batch, "inputs") and hasattr(batch, "layout")):  # duck-typed: the engine imports no models
        raise InputError(f"expected an interp Batch, got {type(batch).__name__}; make one with "
                         "vlm.prepare(images=[...], questions=[...])")
    made, mine = getattr(batch, "made_by", None), getattr(vlm, "batch_key", None)
    if made is not None and mine is not None and made[0] != mine[0]:
        raise InputError(f"this Batch was prepared by {made[1]} but is run on {mine[1]}: its token ids and pixel "
                         "values belong to the processor that made them; prepare it with this model: "
                         "vlm.prepare(images=..., questions=...)")
    if not vlm.remote and not getattr(vlm.hf, "hf_device_map", None):  # a device map moves inputs itself
        dev, bdev = torch.device(vlm.device), batch.input_ids.device
        if bdev.type != dev.type or (dev.index is not None and bdev.index != dev.index):
            raise InputError(f"the batch is on {bdev} but the model is on {dev}; use batch.to({str(dev)!r}) or "
                             "prepare it after moving the model")


def _check_cut(layout, c: Cut, name: str) -> None:
    """A cut's masks are bool [B*, T+N] over the run's layout and remove at least one causal, non-pad edge."""
    for what, m in (("queries", c.queries), ("keys", c.keys)):
        if not isinstance(m, torch.Tensor) or m.dtype != torch.bool or tuple(m.shape) != layout.shape:
            got = f"{m.dtype} {tuple(m.shape)}" if isinstance(m, torch.Tensor) else type(m).__name__
            raise InputError(f"{name}: a Cut's {what} must be bool {layout.shape} (the run's rows × positions), "
                             f"got {got}")
    ok = ~layout.pad
    if not bool((((c.keys.cpu() & ok).long().cumsum(1)) * (c.queries.cpu() & ok)).any()):
        raise NoEffectError(f"{name}: its cut removes no causal edge in this batch (no selected key at or before "
                            "a selected query); an intervention that does nothing is an error")


def coverage(layout, queries: torch.Tensor, keys: torch.Tensor, cuts) -> tuple[int, int, list]:
    """(entries, kept, cut per cut): the causal, non-pad (query, key) entries with `queries[b, q] & keys[b, k]`,
    how many of them no cut in `cuts` removes, and how many each cut alone removes. Linear in T (query rows
    grouped by which cuts select them, as in `check_cuts`)."""
    ok = ~layout.pad
    tq, tk = queries.cpu() & ok, keys.cpu() & ok  # [B, S]
    entries = int((tk.long().cumsum(1) * tq).sum())
    if not cuts or not entries:
        return entries, entries, [0] * len(cuts)
    qs = torch.stack([c.queries.cpu() for c in cuts])  # [E, B, S]
    ks = torch.stack([c.keys.cpu() for c in cuts])
    per_cut = ((tk[None] & ks).long().cumsum(2) * (tq[None] & qs)).sum((1, 2)).tolist()  # [E]
    kept = 0
    for b in range(layout.batch_size):
        for sig, rows in _signatures(qs[:, b]):
            rows = tq[b] & rows
            if rows.any():
                left = tk[b] & ~ks[sig, b].any(0)
                kept += int((left.long().cumsum(0) * rows).sum())
    return entries, kept, [int(n) for n in per_cut]


def check_targets(ctx, plan, owner: dict) -> None:
    """Every injection (`EditProbs` with a target) keeps some entries after the other interventions' cuts: none
    left → `NoEffectError`; some cut → `InterpWarning`. Records {layer: (entries, kept)} in `ctx.coverage`."""
    seen = {}
    for l in sorted(plan.probs):
        cuts = plan.cuts + plan.layer_cuts.get(l, ())
        for e in plan.probs[l]:
            if e.target is None:
                continue
            name = owner[id(e)]
            mine = [c for c in cuts if owner[id(c)] != name]
            key = (id(e), tuple(id(c) for c in mine))
            if key not in seen:
                seen[key] = coverage(ctx.layout, *e.target, mine)
            n, kept, per_cut = seen[key]
            cov = ctx.coverage.setdefault(name, {"layers": {}, "cutters": set()})
            cov["layers"][l] = (n, kept)
            cov["cutters"] |= {owner[id(c)] for c, k in zip(mine, per_cut) if k}
    for name, cov in ctx.coverage.items():
        layers = cov["layers"]
        total, kept = sum(n for n, _ in layers.values()), sum(k for _, k in layers.values())
        where = f"layer{'s' if len(layers) > 1 else ''} {', '.join(map(str, layers))}"
        cutters = ", ".join(sorted(cov["cutters"]))
        if total == 0:
            raise NoEffectError(f"{name}: no causal (query, key) entry to inject into at {where} (every selected "
                                "key comes after every selected query); an intervention that does nothing is an error")
        if kept == 0:
            raise NoEffectError(
                f"{name} injects into {total} (query, key) entries at {where} and {cutters} cut{'' if ',' in cutters else 's'} "
                "every one of them (cut edges stay cut: masks win), so the injection would do nothing; cut fewer "
                "edges (e.g. EdgeMask('template', 'vision')), inject into rows the cut keeps, or drop one of them")
        if kept < total:
            warn(f"{cutters} cut{'' if ',' in cutters else 's'} some of the entries {name} injects into at {where}; "
                 f"those stay zero (masks win). out.diagnostics[{name!r}]['kept'] counts what survives per layer")


def check_cuts(layout, cuts, layer=None) -> None:
    """Every non-pad query row keeps at least one visible key. Linear in T: rows are grouped by which cuts
    select them; such a row is empty iff it comes before the first key those cuts leave."""
    if not cuts:
        return
    qs = torch.stack([c.queries.cpu() for c in cuts])  # [E, B, S]
    ks = torch.stack([c.keys.cpu() for c in cuts])
    ok = ~layout.pad
    for b in range(layout.batch_size):
        for sig, rows in _signatures(qs[:, b]):
            if not sig.any():
                continue
            rows = (rows & ok[b]).nonzero().squeeze(1)
            if not len(rows):
                continue
            allowed = (ok[b] & ~ks[sig, b].any(0)).nonzero().squeeze(1)
            if not len(allowed) or int(rows[0]) < int(allowed[0]):
                where = "" if layer is None else f" in layer {layer}"
                raise InputError(f"the edge cuts leave row {b}, position {int(rows[0])} with no visible key{where}; "
                                 "keep at least one key (e.g. do not cut text queries from all text keys)")


def lower_cuts(ctx, plan, prompt_len: int) -> tuple[Plan, torch.Tensor | None]:
    """All-layer cuts that are, for this pass, a key mask move into HF's own 2D `attention_mask`: a cut whose
    query group holds every position the pass computes (from the reused prefix on; pads aside) and whose keys
    all lie in the prompt hides those keys from every query. A cut that holds every generated position but not
    every prefill query (no prefix: the vision queries; a padded batch: a row's image ending after the shared
    prefix) is such a mask for the decode steps: it stays an edit for the prefill only, whose mask builder is
    given the unhidden 2D mask back. Returns (the plan without them, bool [B, prompt_len] keys to hide in the
    batch's un-expanded rows, or None)."""
    if not plan.cuts:
        return plan, None
    lay, start = ctx.layout, ctx.prefix.length if ctx.prefix is not None else 0
    B, e, T = len(ctx.batch), ctx.expand, prompt_len
    computed = ~lay.pad.to(ctx.device)
    computed[:, :start] = False
    computed[:, T:] = False  # the prefill's queries
    generate = ctx.mode == "generate"
    hide, keep, lowered, partial = None, [], [], False
    for c in plan.cuts:
        keys = c.keys.view(B, e, -1)
        mask_like = not bool(c.keys[:, T:].any()) and bool((keys == keys[:, :1]).all())  # HF expands 2D rows
        full = bool((c.queries | ~computed).all())
        every_generated = bool(c.queries[:, T:].all())  # a forward has no positions past T: True
        if not (mask_like and every_generated and (full or generate)):
            keep.append(c)
            continue
        lowered.append(c)
        partial |= not full
        k = keys[:, 0, :T]
        hide = k if hide is None else hide | k
    if hide is None:
        return plan, None
    hide = hide & ctx.batch.inputs["attention_mask"].to(hide.device).bool()  # pads are hidden already
    if not partial:
        return replace(plan, cuts=tuple(keep)), hide
    # the prefill's builder sees every hidden key again, so every lowered cut is applied there as an edit
    return replace(plan, cuts=tuple(keep), prefill_cuts=tuple(lowered), unhide=hide), hide


def hide_keys(mask: torch.Tensor, hide: torch.Tensor | None) -> torch.Tensor:
    """A 2D attention mask [B, T] with the `hide` keys zeroed (same dtype)."""
    return mask if hide is None else mask * (~hide).to(mask.device, mask.dtype)


def _signatures(sel: torch.Tensor):
    """Positions grouped by which cuts select them. sel: [E, S] bool → [(which cuts: [E] bool, positions: [S]
    bool)], one per distinct column. Columns are coded as integers (a 1-D unique: `unique(dim=0)` over
    16,384 planned positions costs tens of ms)."""
    E = sel.shape[0]
    if E > 62:
        sig, inv = torch.unique(sel.T, dim=0, return_inverse=True)
        return [(sig[u], inv == u) for u in range(len(sig))]
    code = (sel.long() << torch.arange(E)[:, None]).sum(0)  # [S]
    bits = torch.arange(E)
    return [(((u >> bits) & 1).bool(), code == u) for u in torch.unique(code).tolist()]


def _choose_prefix(ctx, plan, firsts) -> None:
    pre = ctx.offered
    if pre is None:
        return
    if plan.start < pre.length:
        users = sorted(n for n, s in firsts.items() if s < pre.length)
        ctx.prefix_reason = (f"{', '.join(users)} must see position {plan.start}, before the reusable prefix of "
                             f"{pre.length} positions: two full passes")
        ctx.prefix = None
    else:
        ctx.prefix = pre
