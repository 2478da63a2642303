"""Where the answer position looks in the image, layer by layer (VIF Fig. 3 / Fig. 6 style), with the evidence
boxes drawn.

    python -m analyses.attention_heatmaps --model toy --data toy --limit 4 --seed 0 --out figures

For each of a few samples and each chosen layer: the attention (mean over heads) from the last prompt position
to every vision token, renormalised over the vision tokens (so each panel sums to 1 and shows *where* the
model looks; the share of all attention that goes to the image is printed under the panel), mapped onto the
token grid (`TokenLayout.scatter`) and stretched over the image region that grid covers. Cyan: evidence boxes.
Under each panel: "img" = share of the row's attention on vision tokens, "box" = share of the vision
attention inside the evidence boxes (the boxes cover "area" of the vision tokens).
--layers picks the layers (default: four spread from first to last). Writes OUT/attention_heatmaps.{json,png,pdf}.
"""

from __future__ import annotations

import textwrap

import numpy as np

from analyses import batching, record
from analyses.registry import Analysis, Option

NAME = "attention_heatmaps"
MIN_SHARE = 0.05  # panels with less attention on the image do not set the colour scale




def ints(text: str) -> list[int]:
    """'0,3,7' → [0, 3, 7] (the --layers flag)."""
    return [int(x) for x in text.split(",") if x.strip()]


def pick_layers(num_layers: int, layers=None, k: int = 4) -> list[int]:
    """The layers given (a list, or '0,3,7'), checked against the model; else k spread from first to last."""
    if layers:
        layers = ints(layers) if isinstance(layers, str) else [int(l) for l in layers]
        bad = [l for l in layers if not 0 <= l < num_layers]
        if bad:
            from interp.errors import InputError

            raise InputError(f"layers {bad} out of range; the model has {num_layers} decoder layers "
                             f"(0..{num_layers - 1})")
        return layers
    if num_layers <= k:
        return list(range(num_layers))
    return sorted({int(round(x)) for x in np.linspace(0, num_layers - 1, k)})


def measure(vlm, samples, cfg, *, layers=None) -> dict:
    """Per sample: the image (base64 PNG), grid extent, heat [n_layers, rows, cols], shares, texts."""
    import interp
    import interp.plot as ip
    from interp.attention.capture import Capture
    from interp.data.scoring import score

    layers = pick_layers(vlm.num_layers, layers)
    rows = []
    for chunk in batching.batches(samples, cfg.batch_size, progress=cfg.progress, desc=NAME):
        batch = batching.prepare(vlm, chunk)
        lay = batch.layout
        cap = Capture(queries="last", layers=tuple(layers), name="capture")
        out = interp.intervene(vlm, cap).generate(batch, max_new_tokens=cfg.max_new_tokens)
        stats = out.diagnostics["capture"]
        w = stats.vision_mean.float()  # [L', B, Nv]
        ratio = stats.vision_ratio.float()  # [L', B]
        ev = batching.evidence(lay, chunk)  # [B, Nv]
        for b, s in enumerate(chunk):
            img = lay.images[b][0]
            piece = img.main
            extent = batching.grid_extent(piece)
            n = int(lay.num_vision[b])
            heats, box_share = [], []
            for i in range(len(layers)):
                v = w[i, b, :n]
                v = v / v.sum().clamp(min=1e-30)  # share of the vision attention
                heats.append(lay.scatter(v, row=b)[0][piece.name].numpy())
                box_share.append(float(v[ev[b, :n]].sum()) if s.boxes else None)
            rows.append({
                "id": s.id, "family": s.family, "question": s.question, "answer": s.answer,
                "prediction": out.texts[b], "correct": bool(score(s, out.texts[b], cfg.metric) >= 0.5),
                "image": ip.image_to_b64(s.images[0]), "boxes": [list(x) for x in s.boxes],
                "extent": extent, "grid": list(piece.grid), "heat": np.stack(heats),  # [n_layers, rows, cols]
                "vision_share": ratio[:, b].numpy(), "box_share": box_share,
                "box_area": float(ev[b, :n].float().mean()) if s.boxes else None,
            })
    return {"n": len(samples), "layers": layers, "samples": rows}


def plot(data, out_dir=None) -> list:
    """Redraw OUT/attention_heatmaps.{png,pdf} from the JSON (path or dict) alone."""
    import interp.plot as ip

    data, here = record.read_json(data)
    out_dir = out_dir or here
    ip.style()
    layers, rows = data["layers"], data["samples"]
    ncols = 1 + len(layers)
    width = ip.FULL if ncols >= 4 else ip.COLUMN * ncols / 3
    fig, axes = ip.figure(ncols, len(rows), width=width, aspect=1.42, squeeze=False)
    heats = [record.arr(r["heat"]) for r in rows]
    # Colour scale: the largest value among panels where the image gets ≥ 5% of the attention; a panel where
    # it gets almost none is renormalised noise and would otherwise wash out every other panel (it saturates).
    looked = [float(np.nanmax(h[j])) for r, h in zip(rows, heats) for j in range(len(layers))
              if (r["vision_share"][j] or 0) >= MIN_SHARE]
    vmax = max(looked) if looked else max(float(np.nanmax(h)) for h in heats)
    im = None
    for i, (r, heat) in enumerate(zip(rows, heats)):
        img = ip.image_from_b64(r["image"])
        ax = axes[i, 0]
        ip.heatmap_overlay(ax, img, np.zeros((1, 1)), size=r["image"]["size"], boxes=r["boxes"], alpha=(0, 0),
                           gray=False)
        q = textwrap.fill(r["question"], 26)
        ax.set_title(q, fontsize=6.5, loc="left")
        ok = "(correct)" if r["correct"] else "(wrong)"
        ax.set_xlabel(f"answer: {r['answer']}\nmodel: {r['prediction'][:18] or '∅'} {ok}", fontsize=6.5)
        for j, l in enumerate(layers):
            ax = axes[i, 1 + j]
            im = ip.heatmap_overlay(ax, img, heat[j], size=r["image"]["size"], extent=r["extent"], boxes=r["boxes"],
                                    vmin=0.0, vmax=vmax)
            if i == 0:
                ax.set_title(f"layer {l}")
            lab = f"img {r['vision_share'][j]:.2f}"
            if r["box_share"][j] is not None:
                lab += f" · box {r['box_share'][j]:.2f}"
            ax.set_xlabel(lab, fontsize=6.5)
    cb = fig.colorbar(im, ax=axes[:, 1:], shrink=0.8, pad=0.02, aspect=30, extend="max")
    cb.set_label("share of the vision attention per token (power scale)", fontsize=7)
    cb.ax.tick_params(labelsize=6)
    area = [r["box_area"] for r in rows if r["box_area"] is not None]
    note = (f"cyan: evidence boxes ({np.mean(area):.0%} of vision tokens); img: share of attention on the image; "
            "box: share of the image attention inside the boxes") if area else "img: share of attention on the image"
    fig.suptitle(f"Answer-position attention over the image per layer — {data['model_label']}\n{note}",
                 fontsize=7.5)
    return ip.save(fig, out_dir, NAME, dpi=200)  # many image panels: 200 dpi keeps the PNG small


def finding(d) -> str:
    """REPORT: the evidence boxes' share of the last prompt token's vision attention, per layer (descriptive)."""
    shares = [s["box_share"] for s in d["samples"] if s.get("box_share")]
    if not shares:
        return "No evidence boxes in these samples."
    sh = record.arr(shares)  # [S, layers]
    area = np.mean([s["box_area"] for s in d["samples"] if s.get("box_area") is not None])
    cells = ", ".join(f"layer {l}: {v:.2f}" for l, v in zip(d["layers"], np.nanmean(sh, 0)))
    return (f"Share of the last prompt token's vision attention inside the evidence boxes, mean over the "
            f"{len(sh)} samples drawn ({cells}); the boxes cover {area:.2f} of the vision tokens. Descriptive "
            "(a handful of samples), no claim tested.")


ANALYSIS = Analysis(NAME, __doc__, title="Attention over the image", measure=measure, plot=plot, finding=finding,
                    limit=4, batch_size=8, notebook_limit=4,
                    options=(Option("layers", None, "comma-separated decoder layers (default: 4 spread over depth)",
                                    ints),))
compute, run, main = ANALYSIS.compute, ANALYSIS.run, ANALYSIS.main

if __name__ == "__main__":
    main()
