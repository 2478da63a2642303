"""VIF focus maps next to the evidence boxes, and what the injection does to deep-layer attention: entropy
over vision tokens and the share of vision attention inside the evidence boxes, before/after (VIF Fig. 3/6,
Table on attention entropy); plus the paper vs reference normalisation of the map.

    python -m analyses.vif_focus --model toy --data toy --limit 200 --seed 0 --out figures

VIF: `--vif DIR`, default the shipped toy VIF for `--model toy`, else an untrained `VIF.build` (said so). A VIF
trained jointly with its base (the shipped toy VIF) is measured on that base: "plain" is then the fine-tuned
base without the map, so before/after isolates the injection.
Statistics are over the question rows (`capture(queries="question")`) at the injection layers; "before" is the
plain model, "after" the same forward with VIF (paper normalisation) injected. The reference normalisation
(softmax over the map, the public code's choice) is compared by its map entropy, its distance to the paper
map, and its accuracy.
Writes OUT/vif_focus.{json,png,pdf}.
"""

from __future__ import annotations

import numpy as np

from analyses import common

NAME = "vif_focus"
SHOW = 4  # samples drawn with their maps


def compute(vlm, samples, args) -> dict:
    import torch

    import interp
    import interp.plot as ip
    from analyses.method_table import load_vif

    samples = common.with_boxes(samples, NAME)
    vif, vif_source, vlm = load_vif(vlm, args)  # a joint VIF: everything here runs on its fine-tuned base
    if vif.normalize != "paper":  # one mixture rendered both ways: "vif" is always the paper's normalisation
        vif_source += f" (trained with {vif.normalize} normalisation)"
        vif = vif.with_(normalize="paper")
    ref = vif.with_(normalize="reference", name="vif")
    pairs = [list(p) for p in vif.pairs_for(vlm)]
    inject = [i for _, i in pairs]
    before_ent, after_ent, before_box, after_box = [], [], [], []
    map_ent, ref_ent, tv = [], [], []
    scores = {"baseline": [], "vif": [], "vif_reference": []}
    shown, n_vision = [], []
    gk = dict(max_new_tokens=args.max_new_tokens, metric=args.metric)
    for chunk in common.batches(samples, args.batch_size, progress=not args.no_progress, desc=NAME):
        batch = common.prepare(vlm, chunk)
        lay = batch.layout
        ev = common.vision_index(lay, lay.boxes_to_mask([list(s.boxes) for s in chunk]))  # [B, Nv]
        plain = interp.capture(vlm, batch, queries="question", layers=inject)
        out = interp.intervene(vlm, vif, interp.Capture(queries="question", layers=tuple(inject))).forward(batch)
        with_vif = out.diagnostics["capture"]
        maps = out.diagnostics["vif"]["maps"]
        first = maps[pairs[0][0]] if isinstance(maps, dict) else maps[0]  # [B, Nv] paper map of the first pair
        ref_maps = interp.intervene(vlm, ref.with_(alpha=0.0)).forward(batch).diagnostics["vif"]["maps"]
        rfirst = ref_maps[pairs[0][0]] if isinstance(ref_maps, dict) else ref_maps[0]
        for st, ent, box in ((plain, before_ent, before_box), (with_vif, after_ent, after_box)):
            ent.append(st.vision_entropy.float().T.numpy())  # [B, L']
            vm = st.vision_mean.float()  # [L', B, Nv]
            share = torch.nansum(vm * ev[None].float(), -1) / torch.nansum(vm, -1).clamp(min=1e-30)
            box.append(share.T.numpy())
        n_vision += lay.num_vision.tolist()
        for b in range(len(chunk)):
            n = int(lay.num_vision[b])
            p, r = first[b, :n].double(), rfirst[b, :n].double()
            map_ent.append(float(-(p * p.clamp(min=1e-30).log()).sum()))
            ref_ent.append(float(-(r * r.clamp(min=1e-30).log()).sum()))
            tv.append(float(0.5 * (p - r).abs().sum()))
        for key, ivs in (("baseline", ()), ("vif", (vif,)), ("vif_reference", (ref,))):
            scores[key] += common.generate_scores(vlm, batch, chunk, ivs, **gk)[1]
        for b, s in enumerate(chunk):
            if len(shown) >= SHOW:
                break
            piece = lay.images[b][0].main
            pb = piece.boxes
            n = int(lay.num_vision[b])
            shown.append({"id": s.id, "question": s.question, "answer": s.answer, "family": s.family,
                          "image": ip.image_to_b64(s.images[0]), "boxes": [list(x) for x in s.boxes],
                          "extent": [float(pb[:, 0].min()), float(pb[:, 1].min()), float(pb[:, 2].max()),
                                     float(pb[:, 3].max())],
                          "map": lay.scatter(first[b, :n], row=b)[0][piece.name].numpy(),
                          "map_reference": lay.scatter(rfirst[b, :n], row=b)[0][piece.name].numpy(),
                          "map_in_box": float(first[b, :n][ev[b, :n]].sum())})
    cat = lambda xs: np.concatenate(xs, 0)  # noqa: E731
    be, ae, bb, ab = cat(before_ent), cat(after_ent), cat(before_box), cat(after_box)
    summary, paired = common.summarize_methods(samples, scores, tuple(scores), args.seed)

    def band(x):  # per injection layer: mean and 95% t-interval over samples
        m, lo, hi = _mean_ci(x)
        return {"mean": m, "lo": lo, "hi": hi}

    return {"n": len(samples), "pairs": pairs, "inject_layers": inject, "vif_source": vif_source, "vif": repr(vif),
            "entropy_before": band(be), "entropy_after": band(ae), "box_share_before": band(bb),
            "box_share_after": band(ab), "uniform_entropy": float(np.mean(np.log(n_vision))),
            "map_entropy": {"paper": _mean_ci(np.array(map_ent)[:, None]), "reference": _mean_ci(np.array(ref_ent)[:, None])},
            "map_tv_distance": _mean_ci(np.array(tv)[:, None]),
            "scores": scores, "summary": summary, "paired_vs_baseline": paired,
            "labels": {"baseline": "baseline", "vif": "VIF (paper normalisation)",
                       "vif_reference": "VIF (reference normalisation)"},
            "table": common.markdown_table(summary, paired, {"baseline": "baseline", "vif": "VIF (paper)",
                                                             "vif_reference": "VIF (reference)"}),
            "samples": shown}


def _mean_ci(x):
    """[N, L] → per-column (mean, lo, hi) lists with a 95% t-interval."""
    from scipy import stats

    x = np.asarray(x, dtype=np.float64)
    m = np.nanmean(x, 0)
    n = np.sum(np.isfinite(x), 0)
    se = np.nanstd(x, 0, ddof=1) / np.sqrt(np.maximum(n, 1)) if x.shape[0] > 1 else np.zeros_like(m)
    h = se * stats.t.ppf(0.975, np.maximum(n - 1, 1))
    return m.tolist(), (m - h).tolist(), (m + h).tolist()


def plot(data, out_dir=None) -> list:
    """Redraw OUT/vif_focus.{png,pdf} from the JSON (path or dict) alone."""
    import matplotlib.pyplot as plt

    import interp.plot as ip

    data, here = common.read_json(data)
    out_dir = out_dir or here
    ip.style()
    shown = data["samples"]
    k = max(1, len(shown))
    fig = plt.figure(figsize=(ip.FULL, 3.9))
    outer = fig.add_gridspec(2, 1, height_ratios=[1.0, 1.1], hspace=0.45)
    top = outer[0].subgridspec(1, 2 * k, wspace=0.08)
    vmax = max([float(np.nanmax(np.asarray(s["map"], float))) for s in shown] + [1e-12])
    for j, s in enumerate(shown):
        for col, (key, lab) in enumerate((("map", "paper"), ("map_reference", "reference"))):
            ax = fig.add_subplot(top[0, 2 * j + col])
            img = ip.image_from_b64(s["image"])
            mp = np.asarray(s[key], float)
            ip.heatmap_overlay(ax, img, mp, size=s["image"]["size"], extent=s["extent"], boxes=s["boxes"],
                               vmax=vmax if key == "map" else float(np.nanmax(mp)), cmap="viridis")
            ax.set_xlabel(lab, fontsize=5.5, labelpad=2)
            if col == 0:
                q = s["question"]
                q = (q[:28] + "…") if len(q) > 28 else q
                ax.text(1.04, 1.05, f"{q}\nmap mass in boxes {s['map_in_box']:.2f}", transform=ax.transAxes,
                        ha="center", va="bottom", fontsize=5.6)
    bottom = outer[1].subgridspec(1, 2, wspace=0.32)
    layers = data["inject_layers"]
    x = np.arange(len(layers))
    ax1, ax2 = fig.add_subplot(bottom[0, 0]), fig.add_subplot(bottom[0, 1])
    for ax, key, ylab in ((ax1, "entropy", "entropy over vision (nats)"),
                          (ax2, "box_share", "in-box share of vision attn.")):
        for when, color, dx in (("before", ip.COLORS["baseline"], -0.18), ("after", ip.COLORS["vif"], 0.18)):
            b = data[f"{key}_{when}"]
            m, lo, hi = (np.asarray(b[t], float) for t in ("mean", "lo", "hi"))
            ax.bar(x + dx, m, 0.34, color=color, label="plain" if when == "before" else "with VIF")
            ax.errorbar(x + dx, m, yerr=[m - lo, hi - m], fmt="none", ecolor="#222222", elinewidth=0.6, capsize=1.2)
        ax.set_xticks(x)
        ax.set_xticklabels([str(l) for l in layers])
        ax.set_xlabel("injection layer")
        ax.set_ylabel(ylab)
        ax.grid(axis="x", visible=False)
    ax1.axhline(data["uniform_entropy"], color="#555555", ls="--", lw=0.8, label="uniform")
    ax1.legend(fontsize=6, loc="lower center", bbox_to_anchor=(1.1, 1.02), ncol=3, frameon=False)
    acc = data["summary"]
    fig.suptitle(f"VIF focus maps (cyan: evidence boxes) and deep-layer attention of the question rows\n"
                 f"{data['model_label']}, n = {data['n']}; accuracy: plain {acc['baseline']['accuracy']:.3f}, "
                 f"VIF {acc['vif']['accuracy']:.3f}, VIF with reference norm. {acc['vif_reference']['accuracy']:.3f}"
                 f"\nVIF: {data['vif_source']}", fontsize=6.8, y=1.02)
    return ip.save(fig, out_dir, NAME)


def main(argv=None) -> dict:
    from analyses.method_table import add_args

    return common.run(NAME, __doc__, compute, plot, argv, limit=200, batch_size=50, add_args=add_args)


if __name__ == "__main__":
    main()
