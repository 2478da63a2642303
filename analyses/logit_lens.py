"""The logit lens over the image: the answer word's probability when each vision token's residual stream after
each decoder layer is read out through the model's final norm and unembedding, drawn over the image with the
evidence boxes (llava-interp / Spectra style).

    python -m analyses.logit_lens --model toy --data toy --limit 96 --seed 0 --out figures

`interp.logit_lens(vlm, batch, targets=answer tokens, positions="vision")`: target = the first token of the
reference answer. Panels: a few samples × four layers over the image (a power colour scale over [0, max]), and
per layer the evidence-box share of the answer's probability mass over the vision tokens (Σ over box tokens /
Σ over all vision tokens) against the boxes' share of the vision tokens (area), with 95% bootstrap bands.
The verdict pools the layers: per sample, box share of Σ_l p minus area share, mean and bootstrap interval.
Samples without evidence boxes are skipped. Writes OUT/logit_lens.{json,png,pdf}.
"""

from __future__ import annotations

import textwrap

import numpy as np

from analyses import batching, loading, record
from analyses.attention_heatmaps import pick_layers
from analyses.findings import verdict
from analyses.registry import Analysis
from interp.stats import bootstrap_ci, bootstrap_mean

NAME = "logit_lens"
SHOW = 3


def measure(vlm, samples, cfg) -> dict:
    import torch

    import interp
    import interp.plot as ip

    samples = loading.with_boxes(samples, NAME)
    layers = pick_layers(vlm.num_layers, None)
    tok = vlm.tokenizer
    share, area, pooled, vis_mass, shown = [], [], [], [], []
    for chunk in batching.batches(samples, cfg.batch_size, progress=cfg.progress, desc=NAME):
        batch = batching.prepare(vlm, chunk)
        lay = batch.layout
        targets = [tok(" " + s.answer, add_special_tokens=False)["input_ids"][0] for s in chunk]
        lens = interp.logit_lens(vlm, batch, targets=targets, positions="vision")
        ev = lay.boxes_to_mask([list(s.boxes) for s in chunk])  # [B, T]
        p = torch.nan_to_num(lens.probs).double()  # [L, B, T], 0 off the vision tokens
        tot = p.sum(-1)  # [L, B]
        share.append((( p * ev).sum(-1) / tot.clamp(min=1e-30)).T.numpy())  # [B, L]
        area.append((ev.sum(1) / lay.vision.sum(1)).double().numpy())
        pooled.append(((p * ev).sum((0, 2)) / tot.sum(0).clamp(min=1e-30)).numpy())  # [B]
        vis_mass.append((tot / lay.vision.sum(1)).T.numpy())  # [B, L] mean p per vision token
        for b, s in enumerate(chunk):
            if len(shown) < SHOW:
                img = lay.images[b][0]
                shown.append({"question": s.question, "answer": s.answer, "image": ip.image_to_b64(s.images[0]),
                              "boxes": [list(x) for x in s.boxes],
                              "extent": batching.grid_extent(img.main),
                              "heat": np.stack([lens.on_grid(l, row=b)[0][img.main.name].numpy() for l in layers])})
    share, area, pooled = np.concatenate(share), np.concatenate(area), np.concatenate(pooled)
    diff = pooled - area
    ci = bootstrap_ci(diff, seed=cfg.seed)
    return {"n": len(samples), "layers": list(range(vlm.num_layers)), "shown_layers": layers, "box_share": share,
            "area_share": area, "pooled_box_share": pooled, "mean_vision_prob": np.concatenate(vis_mass),
            "families": [s.family for s in samples], "examples": shown,
            "verdict": {"pooled_share": float(pooled.mean()), "area": float(area.mean()),
                        "difference": float(diff.mean()), "ci": list(ci)}}


def finding(d) -> str:
    """The REPORT sentence, from the JSON alone: does the answer emerge at the evidence tokens more than their
    area predicts? Held when the interval of (pooled box share − area share) lies above 0."""
    v = d["verdict"]
    lo, hi = v["ci"]
    held = True if lo > 0 else False if hi <= 0 else None
    share = np.nanmean(record.arr(d["box_share"]), 0)
    cells = ", ".join(f"{l}: {x:.2f}" for l, x in zip(d["layers"], share))
    return (f"Logit lens over the image ({d['n']} samples): read through the final norm and unembedding, the answer "
            f"word's probability mass over the vision tokens lies {v['pooled_share']:.2f} inside the evidence boxes "
            f"(all layers pooled), which cover {v['area']:.2f} of the tokens: difference {v['difference']:+.3f} "
            f"[{lo:+.3f}, {hi:+.3f}] (95% bootstrap) — {verdict(held)}. Box share per layer: {cells}.")


def plot(data, out_dir=None) -> list:
    """Redraw OUT/logit_lens.{png,pdf} from the JSON (path or dict) alone."""
    import matplotlib.pyplot as plt

    import interp.plot as ip

    data, here = record.read_json(data)
    out_dir = out_dir or here
    ip.style()
    ex, layers = data["examples"], data["shown_layers"]
    fig = plt.figure(figsize=(ip.FULL, 0.9 + 1.45 * max(1, len(ex))), layout="constrained")
    fig.get_layout_engine().set(h_pad=0.12, hspace=0.1)  # room for the labels under each row (`_under`)
    left, right = fig.subfigures(1, 2, width_ratios=[1 + len(layers), 3.2])
    axes = np.atleast_2d(left.subplots(max(1, len(ex)), 1 + len(layers), squeeze=False))
    heats = [record.arr(e["heat"]) for e in ex]
    vmax = max([float(np.nanmax(h)) for h in heats if np.isfinite(h).any()] + [1e-6])
    im = None
    for i, (e, heat) in enumerate(zip(ex, heats)):
        img = ip.image_from_b64(e["image"])
        ax = axes[i, 0]
        ip.heatmap_overlay(ax, img, np.zeros((1, 1)), size=e["image"]["size"], boxes=e["boxes"], alpha=(0, 0),
                           gray=False)
        if i == 0:
            ax.set_title("scene")
        _under(ax, "\n".join(textwrap.wrap(e["question"], 22)[:2]) + f"\nanswer: {e['answer']}")
        for j, l in enumerate(layers):
            im = ip.heatmap_overlay(axes[i, 1 + j], img, heat[j], size=e["image"]["size"], extent=e["extent"],
                                    boxes=e["boxes"], vmin=0.0, vmax=vmax)
            _under(axes[i, 1 + j], f"max {np.nanmax(heat[j]):.2f}")
            if i == 0:
                axes[i, 1 + j].set_title(f"layer {l}")
    if im is not None:
        cb = left.colorbar(im, ax=axes[:, 1:], shrink=0.8, aspect=30, location="bottom", panchor=False)
        cb.set_label("p(answer word) read from the vision token (power scale)", fontsize=7)
    ax = right.subplots()
    share, area = record.arr(data["box_share"]), record.arr(data["area_share"])
    L = data["layers"]
    m, lo, hi = bootstrap_mean(share, seed=data["seed"], axis=0)  # [L] each
    ip.layer_curve(ax, L, mean=m, lo=lo, hi=hi, label="evidence-box share of p(answer)", color=ip.COLORS["evidence"])
    a = bootstrap_mean(area, seed=data["seed"])
    ax.axhline(a[0], color=ip.COLORS["background"], ls="--", lw=1.0, label=f"box area share ({a[0]:.2f})")
    ip.integer_ticks(ax, L)
    top = float(np.nanmax(np.append(hi, a[0]))) if np.isfinite(hi).any() else 1.0
    ax.set(xlabel="decoder layer", ylabel="share over the vision tokens", ylim=(0, min(1.0, 1.4 * top + 0.02)))
    v = data["verdict"]
    ax.set_title(f"all layers pooled: {v['pooled_share']:.2f} vs area {v['area']:.2f}\n"
                 f"difference {v['difference']:+.2f} [{v['ci'][0]:+.2f}, {v['ci'][1]:+.2f}] (95% CI)", fontsize=7.5)
    ax.legend(loc="upper right")
    fig.suptitle(f"Logit lens over the image: the answer word read from each vision token — {data['model_label']}, "
                 f"n = {data['n']} (cyan: evidence boxes)", fontsize=8.5)
    return ip.save(fig, out_dir, NAME, dpi=200)


def _under(ax, text):
    """A label under an image panel that the layout ignores, so every panel of a row keeps the same box."""
    t = ax.text(0.5, -0.04, text, transform=ax.transAxes, ha="center", va="top", fontsize=6)
    t.set_in_layout(False)


ANALYSIS = Analysis(NAME, __doc__, title="Logit lens over the image", measure=measure, plot=plot, finding=finding,
                    limit=48, batch_size=16, main_limit=96, notebook_limit=16,
                    claim="the answer emerges at the evidence tokens more than their area predicts")
compute, run, main = ANALYSIS.compute, ANALYSIS.run, ANALYSIS.main

if __name__ == "__main__":
    main()
