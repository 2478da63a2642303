"""`patch_sweep`: patch one site from a clean run into a corrupt run, for every layer × position column
(× head), and measure how much of the clean answer comes back.

    sweep = interp.patch_sweep(vlm, clean, corrupt)                              # .effect [L, G]: groups
    sweep = interp.patch_sweep(vlm, clean, corrupt, positions="tokens")          # .effect [L, T]
    sweep = interp.patch_sweep(vlm, clean, corrupt, positions="vision_blocks")   # .effect [L, nb]; .block_map(l)
    sweep = interp.patch_sweep(vlm, clean, corrupt, site="heads")                # .effect [L, H, G]
    sweep = interp.patch_sweep(vlm, clean, corrupt, positions="tokens", method="attribution")

Metric (default): the logit of the clean run's top token minus the corrupt run's top token at the last prompt
position, per row; normalised to `(m − corrupt) / (clean − corrupt)` (1 = the clean answer fully restored,
0 = nothing moved). Exact patching runs many variants per forward through the batch dimension (the corrupt
batch repeated, copy v of every row patched with variant v), each forward continuing from the corrupt run's KV
cache up to the first position its variants touch (`interp.variants`). `method="attribution"` is the
first-order estimate `(clean − corrupt) · ∂metric/∂act` from one forward and one backward of the corrupt run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .engine import EditOutput, Intervention, intervene
from .engine.core import describe
from .engine.plan import layer_tuple
from .errors import InputError, warn
from .patching import SITES, Record, logit_diff
from .variants import base_run, chunks, replay

POSITIONS = ("groups", "tokens", "vision_blocks")
METHODS = ("exact", "attribution")
GROUPS = ("vision", "question", "last")


@dataclass(frozen=True)
class PatchSweep:
    """What a sweep measured. P = position columns (`labels`), H = heads (site "heads" only).

    effect: [L, P] or [L, H, P]: with `normalize`, `(mean m − mean corrupt) / (mean clean − mean corrupt)` over
    the rows the column touches whose clean and corrupt top tokens differ; else the mean metric.
    rows: [B, L, P] or [B, L, H, P]: the same per row (NaN where a column patches nothing in the row, e.g. a
    pad position, or, normalised, where the row's clean and corrupt runs predict the same token); None when a
    custom metric returns one number for the batch.
    clean, corrupt: the clean and corrupt runs in the units of `effect` (1 and 0 when normalised).
    clean_rows, corrupt_rows: [B] the raw metric of each row (None for a batch-level metric).
    same_token: [B] bool, rows whose clean and corrupt runs predict the same token (a custom metric: give the
    same value), left out when normalised.
    blocks: (rows, cols) of the block grid for positions "vision_blocks" (column k = block k // cols, k % cols).
    Dict-style access (`sweep["effect"]`, `sweep["groups"]` = labels) keeps the old return value working.
    """

    effect: torch.Tensor
    rows: torch.Tensor | None
    clean: float
    corrupt: float
    clean_rows: torch.Tensor | None
    corrupt_rows: torch.Tensor | None
    same_token: torch.Tensor
    layers: list
    labels: list
    heads: list | None
    site: str
    positions: str
    method: str
    normalize: bool
    blocks: tuple | None = None

    def __getitem__(self, key):
        return getattr(self, "labels" if key == "groups" else key)

    def block_map(self, layer: int, head: int | None = None, row: int | None = None) -> torch.Tensor:
        """The effect of patching each block at decoder `layer` (of `head`; of one `row`) on the block grid:
        [rows, cols] (block rows and columns over the image's main grid)."""
        if self.blocks is None:
            raise InputError("block_map needs a sweep with positions='vision_blocks'")
        x = self.effect if row is None else self.rows[row]
        x = x[self.layers.index(layer)]
        if self.heads is not None:
            if head is None:
                raise InputError("this sweep is per head: pass head=")
            x = x[head]
        return x.reshape(self.blocks)


@dataclass(frozen=True, eq=False)
class _Copies(Intervention):
    """Copy v of every row gets variant v: (layer, head or None, positions bool [B, T]) patched from `acts`.
    `below` ({layer: the corrupt run's resid [B, T, D]}, all copies at one layer l): layers before l do not run
    (their outputs are the corrupt run's), nor does l itself for site "resid" (its output is the corrupt one,
    patched). `start`: the first position the run computes (a replay's prefix length)."""

    site: str = "resid"
    acts: dict = None
    variants: tuple = ()
    start: int = 0
    below: dict | None = None
    name: str = "patch_copies"

    def prepare(self, ctx):
        s = ctx.scratch(self)
        s.clear()
        n = len(self.variants)
        B = ctx.batch.layout.batch_size // n
        for layer in sorted({v[0] for v in self.variants}):
            copies = [k for k, v in enumerate(self.variants) if v[0] == layer]
            rows = (torch.arange(B)[:, None] * n + torch.tensor(copies)[None]).flatten()  # [B·c], row b·n + v
            src = torch.arange(B).repeat_interleave(len(copies))
            mask = torch.stack([self.variants[k][2] for k in copies], 1).flatten(0, 1)  # [B·c, T]
            heads = torch.tensor([self.variants[k][1] if self.variants[k][1] is not None else -1
                                  for k in copies] * B)
            s[layer] = tuple(x.to(ctx.device) for x in (rows, src, mask, heads))

    def edits(self, ctx):
        layers = tuple(sorted(ctx.scratch(self)))
        if self.below is None:
            return [EditOutput(self.site, layers, self._patch, start=self.start)]
        if len(layers) != 1:
            raise InputError("patch_sweep: skipped layers need every copy at one layer")
        l = layers[0]
        skipped = tuple(range(l + 1 if self.site == "resid" else l))
        out = [EditOutput("resid", skipped, self._skip, start=self.start, skip=True)] if skipped else []
        if self.site != "resid":
            out.append(EditOutput(self.site, layers, self._patch, start=self.start))
        return out

    def _skip(self, ctx, layer, _):
        resid = self.below[layer]  # [B, T, D]
        value = resid[:, self.start:].repeat_interleave(len(self.variants), 0)  # [B·n, Q, D]
        return self._patch(ctx, layer, value) if layer in ctx.scratch(self) else value

    def _patch(self, ctx, layer, value):
        rows, src_rows, mask, heads = ctx.scratch(self)[layer]
        Q = value.shape[1]
        m = mask[:, mask.shape[1] - Q:]  # [r, Q]: a pass after a reused prefix holds the last Q positions
        acts = self.acts[layer]
        src = acts[src_rows][:, acts.shape[1] - Q:].to(value.dtype)
        if self.site == "heads":
            hs = torch.arange(value.shape[2], device=value.device)[None] == heads[:, None]  # [r, H]
            sel = (m[:, :, None] & hs[:, None, :])[..., None]  # [r, Q, H, 1]
        else:
            sel = m[..., None]  # [r, Q, 1]
        out = value.clone()
        out[rows] = torch.where(sel, src, value[rows])
        return out


def _default_metric(last, good, bad):
    def metric(logits):  # [B, T, V] → [B]
        return logit_diff(logits, last, good, bad)

    return metric


def patch_sweep(vlm, clean, corrupt, *, site: str = "resid", positions: str = "groups", layers=None,
                groups=GROUPS, block=2, metric=None, normalize: bool = True, method: str = "exact",
                batch_size: int = 64) -> PatchSweep:
    """Patch `site` from `clean` into `corrupt` for every layer in `layers` (None: all) × position column (×
    head for site "heads") and measure `metric`; returns a `PatchSweep` (see its fields for shapes).

    positions: "groups" (one column per token group in `groups`), "tokens" (one per sequence position), or
    "vision_blocks" (the image's main vision grid cut into `block` × `block` blocks, int or (rows, cols); a
    block also takes the other pieces' tokens whose pixel box centre falls in it). site: "resid" | "attn_out" |
    "mlp_out" | "heads" (one head's output before the output projection, all positions of the column).
    metric: None (clean-top minus corrupt-top logit at the last prompt position, per row) or a function of
    logits [B, T, V] returning [B] or one number. normalize: report `(m − corrupt)/(clean − corrupt)`; rows
    whose clean and corrupt runs predict the same token are left out (with an `InterpWarning`).
    method: "exact" or "attribution" (gradient estimate). batch_size: rows per forward (variants × batch rows).
    Clean and corrupt must share the token layout (same prompts and image sizes, e.g. `interp.toy.mirror`).
    """
    _check_args(site, positions, method, normalize, batch_size)
    if tuple(clean.input_ids.shape) != tuple(corrupt.input_ids.shape) or not torch.equal(
            clean.layout.vision, corrupt.layout.vision) or not torch.equal(clean.layout.pad, corrupt.layout.pad):
        raise InputError(f"patch_sweep: clean {tuple(clean.input_ids.shape)} and corrupt "
                         f"{tuple(corrupt.input_ids.shape)} batches differ in token layout; patching needs the same "
                         "positions in both: same questions and image sizes (e.g. interp.toy.mirror pairs)")
    L = vlm.num_layers
    layers = list(range(L)) if layers is None else list(layer_tuple(layers, "patch_sweep", L))
    if not layers:
        raise InputError("patch_sweep: layers is empty; use None for every layer")
    cols, labels, blocks = columns(vlm, corrupt, positions, groups, block)
    H = vlm.hf.config.get_text_config().num_attention_heads if site == "heads" else None
    variants = [(l, h, c) for l in layers for h in (range(H) if H else [None]) for c in cols]
    rec = Record(site=site, layers=tuple(layers))
    clean_out = intervene(vlm, rec).forward(clean)
    acts = clean_out.diagnostics[rec.name]
    B, T = corrupt.layout.shape
    last = corrupt.layout.last.int().argmax(1)
    b = torch.arange(B)
    base = base_run(vlm, corrupt, Record("resid", tuple(range(L)))) if method == "exact" else None
    corrupt_logits = base.logits if base is not None else intervene(vlm).forward(corrupt).logits
    good = clean_out.logits[b, last].argmax(-1)
    bad = corrupt_logits[b, last].argmax(-1)
    fn = metric or _default_metric(last.to(corrupt_logits.device), good, bad)
    C, c = _value(fn(clean_out.logits)), _value(fn(corrupt_logits))
    # rows with clean − corrupt = 0 cannot be normalised: for the default metric, those whose top tokens agree
    same = (good == bad).cpu() if metric is None else (C == c) if C.dim() else torch.zeros(B, dtype=torch.bool)
    if same.any():
        rows = same.nonzero().flatten().tolist()
        what = "predict the same token" if metric is None else "give the same metric"
        warn(f"patch_sweep: clean and corrupt {what} in rows {rows} of {B}; their clean − corrupt difference is "
             "0, so they are left out of the normalised effect (NaN in .rows): pick pairs whose answers differ")
    if method == "exact":
        raw = _exact(vlm, base, corrupt, site, acts, variants, fn, metric is None, (last, good, bad), batch_size)
    else:
        raw = _attribution(vlm, corrupt, site, layers, acts, variants, fn, c)
    touched = torch.stack([m.any(1) for _, _, m in variants])  # [V, B]
    effect, rows, clean_v, corrupt_v = _normalise(raw, C, c, touched, same, normalize)
    shape = [len(layers)] + ([H] if H else []) + [len(cols)]
    return PatchSweep(effect=effect.reshape(shape), rows=None if rows is None else rows.T.reshape([B] + shape),
                      clean=clean_v, corrupt=corrupt_v, clean_rows=C if C.dim() else None,
                      corrupt_rows=c if c.dim() else None, same_token=same, layers=layers, labels=labels,
                      heads=list(range(H)) if H else None, site=site, positions=positions, method=method,
                      normalize=normalize, blocks=blocks)


def _check_args(site, positions, method, normalize, batch_size):
    if site not in SITES:
        raise InputError(f"patch_sweep: site must be one of {SITES}, got {site!r}")
    if positions not in POSITIONS:
        raise InputError(f"patch_sweep: positions must be one of {POSITIONS}, got {positions!r}")
    if method not in METHODS:
        raise InputError(f"patch_sweep: method must be one of {METHODS}, got {method!r}")
    if not isinstance(normalize, bool):
        raise InputError(f"patch_sweep: normalize must be True or False, got {normalize!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InputError(f"patch_sweep: batch_size (rows per forward) must be an int ≥ 1, got {batch_size!r}")


def _value(x) -> torch.Tensor:
    x = torch.as_tensor(x).detach().float().cpu()
    if x.dim() > 1:
        raise InputError(f"patch_sweep: metric must return [B] or one number, got shape {tuple(x.shape)}")
    return x


def _exact(vlm, base, corrupt, site, acts, variants, fn, default, lgb, batch_size) -> torch.Tensor:
    """[V, B] (or [V]) metric of every variant. Per layer l, variants sorted by their first patched position go
    in chunks of batch_size // B copies, each one forward that continues from the corrupt run's KV cache up to
    the chunk's first position and skips the layers before l (nothing there changed); variants that touch
    position 0 run one forward each (no prefix to continue from)."""
    B, T = corrupt.layout.shape
    below = base.diagnostics["record"]  # {layer: corrupt resid [B, T, D]}
    starts = [int(m.any(0).int().argmax()) if m.any() else T for _, _, m in variants]
    out = [None] * len(variants)
    for i, s in enumerate(starts):
        if s == 0:
            iv = _Copies(site, acts, (variants[i],), 0, below)
            out[i] = _value(fn(intervene(vlm, iv).forward(corrupt).logits))
    for l in sorted({v[0] for v in variants}):
        at = [i for i, (vl, _, _) in enumerate(variants) if vl == l and starts[i] > 0]
        for idx, P in chunks([starts[i] for i in at], max(1, batch_size // B), T, B):
            vs = tuple(variants[at[j]] for j in idx)
            logits = replay(vlm, base, len(vs), P, _Copies(site, acts, vs, P, below)).logits
            logits = logits.view(B, len(vs), *logits.shape[1:])  # [B, n, T, V]
            if default:  # the clean-top − corrupt-top logit of every copy at once
                last, good, bad = lgb
                row = logits[torch.arange(B), :, last]  # [B, n, V]
                vals = (row.gather(2, good[:, None, None].expand(-1, len(vs), 1))
                        - row.gather(2, bad[:, None, None].expand(-1, len(vs), 1)))[..., 0].T  # [n, B]
                for k, j in enumerate(idx):
                    out[at[j]] = vals[k].detach().float().cpu()
            else:
                for k, j in enumerate(idx):
                    out[at[j]] = _value(fn(logits[:, k]))
    return torch.stack(out)


def _attribution(vlm, corrupt, site, layers, acts, variants, fn, c) -> torch.Tensor:
    """Attribution patching: metric(corrupt) + Σ over the variant's positions (and head) of
    (clean − corrupt) · ∂metric/∂act, from one forward and one backward of the corrupt run. [V, B] or [V]."""
    rec = Record(site=site, layers=tuple(layers), keep_graph=True, name="attribution")
    with torch.enable_grad():
        out = intervene(vlm, rec).forward(corrupt, grad=True)
        m = fn(out.logits)
        saved = out.diagnostics[rec.name]
        grads = torch.autograd.grad(m.sum(), [saved[l] for l in layers])
    contrib = {}
    for l, g in zip(layers, grads):
        delta = acts[l].float() - saved[l].detach().float()
        contrib[l] = (delta * g.float()).sum(-1).cpu()  # [B, T] or [B, T, H]
    vals = []
    for l, h, mask in variants:
        x = contrib[l] if h is None else contrib[l][..., h]
        est = (x * mask).sum(1)  # [B]: one row's activations move only that row's metric
        vals.append(c + (est if c.dim() else est.sum()))
    return torch.stack(vals)


def _normalise(raw, C, c, touched, same, normalize):
    """(effect [V], rows [V, B] or None, clean, corrupt) in the reported units (see `PatchSweep`)."""
    nan = torch.tensor(math.nan)
    if raw.dim() == 1:  # one number per variant for the batch
        if normalize:
            return (raw - c) / (C - c), None, 1.0, 0.0
        return raw, None, float(C), float(c)
    if not normalize:
        rows = torch.where(touched, raw, nan)
        return rows.nanmean(1), rows, float(C.mean()), float(c.mean())
    ok = touched & ~same[None]  # [V, B]
    rows = torch.where(ok, (raw - c) / (C - c), nan)
    n = ok.sum(1)
    num = torch.where(ok, raw - c, 0.0).sum(1) / n
    den = torch.where(ok, (C - c).expand_as(raw), 0.0).sum(1) / n
    return torch.where(n > 0, num / den, nan), rows, 1.0, 0.0


def columns(vlm, batch, positions, groups=GROUPS, block=2):
    """The position columns of a sweep: (list of bool [B, T], labels, block grid or None)."""
    lay = batch.layout
    B, T = lay.shape
    if positions == "groups":
        if isinstance(groups, str) or isinstance(groups, torch.Tensor):
            groups = (groups,)
        cols = [lay.group(g) for g in groups]
        labels = [g if isinstance(g, str) else describe(g) for g in groups]
        for g, m in zip(labels, cols):
            if not m.any():
                raise InputError(f"patch_sweep: group {g} selects no token in this batch; drop it from groups=")
        return cols, labels, None
    if positions == "tokens":
        real = ~lay.pad
        cols = []
        for t in range(T):
            m = torch.zeros(B, T, dtype=torch.bool)
            m[:, t] = real[:, t]
            cols.append(m)
        first = real.int().argmax(0)  # per position: a row where it is a real token
        toks = [vlm.tokenizer.convert_ids_to_tokens(int(batch.input_ids[first[t], t])) for t in range(T)]
        return cols, [f"{t}:{tok}" for t, tok in enumerate(toks)], None
    return vision_blocks(lay, block)


def vision_blocks(layout, block=2):
    """Blocks of `block` × `block` cells (int or (rows, cols)) over each row's first image's main grid → (list of
    bool [B, T] per block, labels "(i, j)", (block rows, block cols)). A block takes the main piece's tokens in
    it and every other piece's tokens whose pixel box centre lies in the block's pixel region."""
    bh, bw = (block, block) if isinstance(block, int) else tuple(block)
    if min(bh, bw) < 1:
        raise InputError(f"vision_blocks: block must be ≥ 1 cell, got {block!r}")
    if any(not row for row in layout.images):
        raise InputError("vision_blocks: a row has no image")
    grids = sorted({row[0].grid for row in layout.images})
    if len(grids) != 1:
        raise InputError(f"vision_blocks: the rows' images have vision grids {grids}; the block map needs one grid: "
                         "use images of one size")
    R, Cc = grids[0]
    nr, nc = -(-R // bh), -(-Cc // bw)
    B, T = layout.shape
    cols, labels = [], []
    for i in range(nr):
        for j in range(nc):
            m = torch.zeros(B, T, dtype=torch.bool)
            for b, row in enumerate(layout.images):
                img = row[0]
                main = img.main
                cell = torch.zeros(R, Cc, dtype=torch.bool)
                cell[i * bh:(i + 1) * bh, j * bw:(j + 1) * bw] = True
                cell = cell.flatten()
                m[b, main.positions[cell]] = True
                bx = main.boxes[cell]
                x0, y0, x1, y1 = bx[:, 0].min(), bx[:, 1].min(), bx[:, 2].max(), bx[:, 3].max()
                for p in img.pieces:
                    if p is main:
                        continue
                    cx, cy = (p.boxes[:, 0] + p.boxes[:, 2]) / 2, (p.boxes[:, 1] + p.boxes[:, 3]) / 2
                    m[b, p.positions[(cx >= x0) & (cx < x1) & (cy >= y0) & (cy < y1)]] = True
            cols.append(m)
            labels.append(f"({i}, {j})")
    return cols, labels, (nr, nc)
