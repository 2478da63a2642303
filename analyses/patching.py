"""Activation patching on mirror pairs: where does the spatial answer live, layer by layer?

    python -m analyses.patching --model toy --data toy --limit 12 --seed 0 --out figures

Pairs: a spatial question (left/right or above/below of two objects) on a scene (clean) and on its mirror image
along the asked axis (corrupt, `interp.toy.mirror`: the answer flips, the tokens stay). Only pairs whose two
sides the model answers right are kept. The decoder-layer output ("resid") of the clean run is patched into the
corrupt run, one layer and one set of positions at a time; the effect is the normalised logit difference
(m − corrupt) / (clean − corrupt) at the last prompt position (1 = the clean answer fully restored).
Four maps: layer × token group (vision, question, last); layer × token (mean over pairs: vision tokens in
raster order, then the prompt's last text tokens aligned from the end); two example pairs' maps over the image
(2 × 2-token blocks patched, drawn over the clean scene with its evidence boxes); layer × head (one head's
output before o_proj, all positions). Attribution patching (one forward and one backward) is compared with the
exact layer × token map by Pearson r. Writes OUT/patching.{json,png,pdf}.
"""

from __future__ import annotations

import warnings

import numpy as np

from analyses import batching, record
from analyses.findings import span, verdict
from analyses.registry import Analysis
from interp.stats import bootstrap_ci

NAME = "patching"
GROUPS = ("vision", "question", "last")
SIDES = {"left": "x", "right": "x", "above": "y", "below": "y"}
SHOW = 2  # example pairs drawn over the image
BLOCK = 2


def mirror_pairs(vlm, samples, cfg, limit: int):
    """(clean, corrupt) samples with a side answer, mirrored along the asked axis; those the model answers right
    on both sides first (all of them when it answers none right, e.g. a random zoo model). Returns (pairs,
    how they were selected)."""
    import torch

    import interp

    if str(cfg.data) == "toy":
        cands = interp.toy.dataset(3 * limit + 8, seed=interp.toy.EVAL_SEED + cfg.seed, families=["spatial"])
    else:
        cands = [s for s in samples if s.answer in SIDES]
    if not cands:
        from interp.errors import InputError

        raise InputError(f"{NAME} needs spatial questions answered left/right/above/below; {cfg.data} has none")
    pairs = [(s, interp.toy.mirror(s, SIDES[s.answer])) for s in cands]
    tok = vlm.tokenizer
    right = []
    for i in range(0, len(pairs), 32):
        chunk = pairs[i:i + 32]
        ok = torch.ones(len(chunk), dtype=torch.bool)
        for side in (0, 1):
            batch = batching.prepare(vlm, [p[side] for p in chunk])
            logits = interp.intervene(vlm).forward(batch).logits
            last = batch.layout.last.int().argmax(1)
            pred = logits[torch.arange(len(chunk)), last].argmax(-1).cpu()
            want = torch.tensor([tok(" " + p[side].answer, add_special_tokens=False)["input_ids"][0] for p in chunk])
            ok &= pred == want
        right += [p for p, k in zip(chunk, ok.tolist()) if k]
        if len(right) >= limit:
            break
    if right:
        return right[:limit], f"the first {min(limit, len(right))} pairs the model answers right on both sides"
    return pairs[:limit], "the first pairs (the model answers none right on both sides)"


def measure(vlm, samples, cfg) -> dict:
    from interp.errors import InterpWarning

    pairs, selection = mirror_pairs(vlm, samples, cfg, cfg.limit)
    with warnings.catch_warnings():  # pairs predicting the same token: `selection` and the JSON say so
        warnings.filterwarnings("ignore", category=InterpWarning, message="patch_sweep: clean and corrupt")
        return sweeps(vlm, pairs, selection, cfg)


def sweeps(vlm, pairs, selection, cfg) -> dict:
    """The four sweeps and attribution patching over `pairs`, in batches of --batch-size pairs."""
    import torch

    import interp
    import interp.plot as ip

    kw = dict(batch_size=256)
    group, vis, text, blocks, heads, attr_r, attr_vis, attr_text = [], [], [], [], [], [], [], []
    labels, shown = None, []
    for chunk in batching.batches(pairs, cfg.batch_size, progress=cfg.progress, desc=NAME):
        clean = batching.prepare(vlm, [p[0] for p in chunk])
        corrupt = batching.prepare(vlm, [p[1] for p in chunk])
        lay = corrupt.layout
        g = interp.patch_sweep(vlm, clean, corrupt, groups=GROUPS, **kw)
        tk = interp.patch_sweep(vlm, clean, corrupt, positions="tokens", **kw)
        at = interp.patch_sweep(vlm, clean, corrupt, positions="tokens", method="attribution", **kw)
        bl = interp.patch_sweep(vlm, clean, corrupt, positions="vision_blocks", block=BLOCK, **kw)
        hd = interp.patch_sweep(vlm, clean, corrupt, site="heads", groups=("all",), **kw)
        group.append(g.rows.numpy())  # [B, L, G]
        blocks.append(bl.rows.numpy())  # [B, L, nb]
        heads.append(hd.rows[..., 0].numpy())  # [B, L, H]
        for b in range(len(chunk)):
            vpos = lay.vision[b].nonzero().flatten()
            tpos = (~lay.vision[b] & ~lay.pad[b] & (torch.arange(lay.seq_len) > int(vpos[-1]))).nonzero().flatten()
            vis.append(tk.rows[b][:, vpos].numpy())
            text.append(tk.rows[b][:, tpos].numpy())
            attr_vis.append(at.rows[b][:, vpos].numpy())
            attr_text.append(at.rows[b][:, tpos].numpy())
            if labels is None or len(tpos) < len(labels):
                labels = vlm.tokenizer.convert_ids_to_tokens(corrupt.input_ids[b, tpos].tolist())
            x = np.concatenate([vis[-1], text[-1]], 1).ravel()
            y = np.concatenate([attr_vis[-1], attr_text[-1]], 1).ravel()
            ok = np.isfinite(x) & np.isfinite(y)
            attr_r.append(float(np.corrcoef(x[ok], y[ok])[0, 1]) if ok.sum() > 2 and x[ok].std() > 0 else None)
        for b in range(len(chunk)):
            if len(shown) < SHOW and (not shown or SIDES[chunk[b][0].answer] != shown[0]["axis"]):
                img = lay.images[b][0].main
                shown.append({"question": chunk[b][0].question, "clean": chunk[b][0].answer,
                              "corrupt": chunk[b][1].answer, "axis": SIDES[chunk[b][0].answer],
                              "image": ip.image_to_b64(chunk[b][0].images[0]),
                              "boxes": [list(x) for x in chunk[b][0].boxes],
                              "extent": batching.grid_extent(img),
                              "map": bl.rows[b].numpy()})  # [L, nb]
    K = min(t.shape[1] for t in text)  # text tokens aligned from the end of the prompt
    ex = np.concatenate([np.stack(vis), np.stack([t[:, -K:] for t in text])], 2)  # [N, L, Nv + K]
    ap = np.concatenate([np.stack(attr_vis), np.stack([t[:, -K:] for t in attr_text])], 2)
    ok = np.isfinite(ex) & np.isfinite(ap)
    pooled = float(np.corrcoef(ex[ok], ap[ok])[0, 1]) if ok.sum() > 2 and ex[ok].std() > 0 else None
    rs = [r for r in attr_r if r is not None]
    return {"n": len(pairs), "selection": selection, "layers": list(range(vlm.num_layers)), "groups": list(GROUPS),
            "group_rows": np.concatenate(group), "token_rows": ex, "attribution_rows": ap,
            "token_labels": [f"v{i}" for i in range(ex.shape[2] - K)] + labels[-K:], "num_vision": ex.shape[2] - K,
            "block": BLOCK, "blocks": list(bl.blocks), "block_rows": np.concatenate(blocks),
            "head_rows": np.concatenate(heads), "examples": shown,
            "attribution_r": {"pooled": pooled, "per_pair": attr_r,
                              "per_pair_mean": float(np.mean(rs)) if rs else None,
                              "per_pair_ci": list(bootstrap_ci(rs, seed=cfg.seed)) if rs else None},
            "transition": transition(np.concatenate(group), cfg.seed)}




def transition(rows, seed: int = 0) -> dict:
    """Where the answer leaves the vision tokens. rows: [N, L, G] normalised effects of (vision, question, last).
    d = max(question, last) − vision per pair and layer: its mean and 95% bootstrap interval per layer, and
    each pair's first layer with d > 0 (L if none)."""
    r = np.asarray(rows, dtype=np.float64)
    keep = np.isfinite(r).all((1, 2))
    d = np.maximum(r[keep, :, 1], r[keep, :, 2]) - r[keep, :, 0]  # [N, L]
    if not len(d):
        return {"n": 0, "d_mean": [], "d_ci": [], "switch": [], "switch_mean": None, "switch_ci": None}
    L = d.shape[1]
    switch = np.where((d > 0).any(1), (d > 0).argmax(1), L)
    return {"n": int(len(d)), "d_mean": d.mean(0), "d_ci": [list(bootstrap_ci(d[:, l], seed=seed)) for l in range(L)],
            "switch": switch, "switch_mean": float(switch.mean()), "switch_ci": list(bootstrap_ci(switch, seed=seed))}


def finding(d) -> str:
    """The REPORT sentence, from the JSON alone: does the answer move from the vision tokens to the question /
    last positions, and at which layer? Held when some layer's d = max(question, last) − vision is below 0 and
    a later layer's above 0, both with 95% intervals excluding 0."""
    t = d["transition"]
    if not t.get("n"):
        return ("Patching on mirror pairs: no pair whose clean and corrupt runs predict different tokens, so nothing "
                "to measure — **inconclusive**.")
    lo = [c[0] for c in t["d_ci"]]
    hi = [c[1] for c in t["d_ci"]]
    vision = [l for l, h in enumerate(hi) if h < 0]
    text = [l for l, x in enumerate(lo) if x > 0]
    held = bool(vision and text and min(text) > min(vision))
    if not held and (vision or text):
        held = False
    elif not held:
        held = None
    cells = ", ".join(f"{l}: {m:+.2f} [{a:+.2f}, {b:+.2f}]" for l, (m, a, b) in enumerate(zip(t["d_mean"], lo, hi)))
    r = d["attribution_r"]
    attr = (f" Attribution patching (one forward + one backward) against exact patching over the layer × token "
            f"map: Pearson r = {r['pooled']:.2f} pooled, {r['per_pair_mean']:.2f} "
            f"[{r['per_pair_ci'][0]:.2f}, {r['per_pair_ci'][1]:.2f}] per pair." if r.get("per_pair_ci") else "")
    where = (f"the vision tokens carry it at {span(vision)}, the question / last positions from layer "
             f"{min(text)} on (significant at {span(text)})" if held else
             "no layer where the vision tokens carry it significantly more, followed by one where the text "
             "positions do")
    return (f"Where does the spatial answer live? Patching the clean run's residual stream into the mirrored run "
            f"({t['n']} pairs): {where}; per-pair switch layer (first layer where max(question, last) exceeds vision) "
            f"{t['switch_mean']:.2f} [{t['switch_ci'][0]:.2f}, {t['switch_ci'][1]:.2f}]; d = max(question, last) − "
            f"vision per layer: {cells} — {verdict(held)}.{attr}")








def diverging(ax, values, *, vlim=None, cmap="RdBu_r", **kw):
    """imshow of signed effects with the colour scale centred at 0 (symmetric limits)."""
    v = np.asarray(values, dtype=np.float64)
    lim = vlim or max(1e-6, float(np.nanmax(np.abs(v))) if np.isfinite(v).any() else 1.0)
    return ax.imshow(v, cmap=cmap, vmin=-lim, vmax=lim, aspect="auto", interpolation="nearest", **kw)


def plot(data, out_dir=None) -> list:
    """Redraw OUT/patching.{png,pdf} from the JSON (path or dict) alone."""
    import matplotlib.pyplot as plt

    import interp.plot as ip

    data, here = record.read_json(data)
    out_dir = out_dir or here
    ip.style()
    L = len(data["layers"])
    warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns (no usable pair) stay blank
    g = np.nanmean(record.arr(data["group_rows"]), 0) if data["n"] else np.full((L, 3), np.nan)  # [L, G]
    tk = np.nanmean(record.arr(data["token_rows"]), 0)  # [L, P]
    hd = np.nanmean(record.arr(data["head_rows"]), 0)  # [L, H]
    ex = data["examples"]
    # the image maps at the two layers where the vision tokens carry the most (the group map's first column)
    show = sorted(np.argsort(-np.nan_to_num(g[:, 0], nan=-1))[:2].tolist())
    fig = plt.figure(figsize=(ip.FULL, 5.8), layout="constrained")
    top, bottom = fig.subfigures(2, 1, height_ratios=[1.05, 1])
    left, right = top.subfigures(1, 2, width_ratios=[1.15, 1])
    axg, axh = left.subplots(1, 2, width_ratios=[1.1, 1.3])
    im = diverging(axg, g, vlim=1.0)
    axg.set_xticks(range(len(data["groups"])), data["groups"])
    for (l, j), v in np.ndenumerate(g):
        if np.isfinite(v):
            axg.text(j, l, f"{v:.2f}", ha="center", va="center", fontsize=5.5, color="white" if abs(v) > .6 else "k")
    axg.set(ylabel="decoder layer", xlabel="patched positions", title="layer × token group")
    diverging(axh, hd, vlim=1.0)
    axh.set_xticks(range(hd.shape[1]))
    axh.set(xlabel="head (output before o_proj)", title="layer × head (all positions)")
    for ax in (axg, axh):
        ax.set_yticks(range(L))
        ax.grid(False)
    left.colorbar(im, ax=[axg, axh], shrink=0.85, aspect=25, location="bottom",
                  label="normalised effect (1 = clean answer restored)")
    nr, nc = data["blocks"]
    maps = [record.arr(e["map"]) for e in ex]  # [L, nb] each
    lim = max([float(np.nanmax(np.abs(m[show]))) for m in maps if np.isfinite(m[show]).any()] + [1e-3])
    axi = np.atleast_2d(right.subplots(max(1, len(ex)), len(show), squeeze=False))
    for i, (e, m) in enumerate(zip(ex, maps)):
        for j, layer in enumerate(show):
            ax = axi[i, j]
            sm = _overlay(ax, e, m[layer].reshape(nr, nc), lim)
            ax.set_title(f"layer {layer}" if i == 0 else "", fontsize=7)
            if j == 0:
                ax.set_ylabel(f"{e['clean']} ↔ {e['corrupt']}", fontsize=7)
    if ex:
        right.colorbar(sm, ax=axi, shrink=0.8, aspect=20, label=f"effect of patching a {data['block']}×"
                       f"{data['block']}-token block")
        right.suptitle("over the image (clean scene; cyan: the two objects)", fontsize=7.5)
    ax = bottom.subplots()
    imt = diverging(ax, tk, vlim=1.0)
    nv = data["num_vision"]
    labels = data["token_labels"]
    ticks = list(range(0, nv, 8)) + list(range(nv, len(labels)))
    ax.set_xticks(ticks, [labels[i] for i in ticks], rotation=90, fontsize=6)
    ax.axvline(nv - 0.5, color="k", lw=0.6)
    ax.set_yticks(range(L))
    ax.grid(False)
    ax.set(ylabel="decoder layer", xlabel=f"patched token (v0–v{nv - 1}: vision tokens in raster order; then the "
                                          "prompt's last text tokens)")
    r = data["attribution_r"]
    note = (f"attribution patching vs exact over this map: Pearson r = {r['pooled']:.2f} pooled, "
            f"{r['per_pair_mean']:.2f} per pair" if r["pooled"] is not None and r["per_pair_mean"] is not None else "")
    ax.set_title(f"layer × token, mean over pairs   {note}", fontsize=7.5)
    bottom.colorbar(imt, ax=ax, shrink=0.9, aspect=20, label="normalised effect")
    none = "" if data["transition"].get("n") else " (no pair where clean and corrupt predict different tokens)"
    fig.suptitle(f"Activation patching of the residual stream, clean scene → mirrored scene — {data['model_label']}, "
                 f"n = {data['n']} pairs{none}", fontsize=8.5)
    return ip.save(fig, out_dir, NAME, dpi=200)


def _overlay(ax, e, heat, lim):
    """The block map over the clean scene: signed colours centred at 0 in [−lim, lim], opacity with |effect|.
    Returns a ScalarMappable for the colorbar."""
    import matplotlib as mpl
    from matplotlib.patches import Rectangle

    import interp.plot as ip

    img = np.asarray(ip.image_from_b64(e["image"]).convert("L").convert("RGB"))
    W, H = e["image"]["size"]
    x0, y0, x1, y1 = e["extent"]
    norm = mpl.colors.Normalize(-lim, lim)
    h = np.nan_to_num(heat)
    rgba = mpl.colormaps["RdBu_r"](norm(h))
    rgba[..., 3] = 0.1 + 0.85 * np.clip(np.abs(h) / lim, 0, 1)
    ax.imshow(img, extent=(0, W, H, 0))
    ax.imshow(rgba, extent=(x0, x1, y1, y0), interpolation="nearest")
    for bx in e["boxes"]:
        ax.add_patch(Rectangle((bx[0], bx[1]), bx[2] - bx[0], bx[3] - bx[1], fill=False, ec=ip.BOX_COLOR, lw=1.0))
    ax.set(xlim=(0, W), ylim=(H, 0), xticks=[], yticks=[])
    ax.grid(False)
    return mpl.cm.ScalarMappable(norm=norm, cmap="RdBu_r")


ANALYSIS = Analysis(NAME, __doc__, title="Activation patching on mirror pairs", measure=measure, plot=plot,
                    finding=finding, limit=8, batch_size=8, main_limit=12, notebook_limit=2,
                    claim="the spatial answer moves from the vision tokens to the text positions with depth")
compute, run, main = ANALYSIS.compute, ANALYSIS.run, ANALYSIS.main

if __name__ == "__main__":
    main()
