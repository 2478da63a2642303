"""Per-layer distribution of the answer position's attention weights over vision tokens (VIF Fig. 2 violins),
and the per-layer entropy of that attention renormalised over vision tokens.

    python -m analyses.attenuation_violin --model toy --data toy --limit 600 --seed 0 --out figures

Top: one violin per decoder layer of the attention weights (mean over heads) from the last prompt position
to every vision token of every sample (log scale; the dashed line is 1/Nv, a uniform spread of all attention
over the image). VIF's "structural collapse": the long upper tail shrinks in deep layers. Bottom: entropy of
the attention over vision tokens (renormalised to sum 1) per layer, mean and 95% band; dashed: log Nv, the
entropy of a uniform spread. Writes OUT/attenuation_violin.{json,png,pdf}.
"""

from __future__ import annotations

import numpy as np

from analyses import batching, record
from analyses.findings import diff_verdict, fmt, verdict
from analyses.registry import Analysis
from interp.stats import mean_ci

NAME = "attenuation_violin"
MAX_VALUES_PER_LAYER = 3_000  # beyond this the JSON keeps a seeded subsample per layer (violins look the same)


def measure(vlm, samples, cfg) -> dict:
    """weights: per layer a flat list of attention weights (samples × vision tokens); entropy [N, L]."""
    import interp

    per_layer, ent, nv = None, [], []
    for chunk in batching.batches(samples, cfg.batch_size, progress=cfg.progress, desc=NAME):
        batch = batching.prepare(vlm, chunk)
        stats = interp.capture(vlm, batch, queries="last")
        w = stats.vision_mean.float().numpy()  # [L, B, Nv], NaN past a row's vision tokens
        if per_layer is None:
            per_layer = [[] for _ in range(w.shape[0])]
        for l in range(w.shape[0]):
            v = w[l].ravel()
            per_layer[l].append(v[np.isfinite(v)])
        ent.append(stats.vision_entropy.T.float().numpy())  # [B, L]
        nv.append(batch.layout.num_vision.numpy())
    rng = np.random.default_rng(cfg.seed)
    weights, subsampled = [], False
    for chunks in per_layer:
        v = np.concatenate(chunks)
        if v.size > MAX_VALUES_PER_LAYER:
            v = rng.choice(v, MAX_VALUES_PER_LAYER, replace=False)
            subsampled = True
        weights.append(v.astype(np.float32))
    nv = np.concatenate(nv)
    return {
        "n": len(samples),
        "layers": list(range(len(weights))),
        "weights": [record.round_sig(w, 4) for w in weights],  # [L][n_values]
        "weights_subsampled": subsampled,
        "weights_quantiles": {q: [float(np.quantile(w, q)) for w in weights] for q in (0.5, 0.9, 0.99)},
        "entropy": np.concatenate(ent),  # [N, L] nats
        "num_vision": nv,  # [N]
        "families": [s.family for s in samples],
    }


def plot(data, out_dir=None) -> list:
    """Redraw OUT/attenuation_violin.{png,pdf} from the JSON (path or dict) alone."""
    import interp.plot as ip

    data, here = record.read_json(data)
    out_dir = out_dir or here
    ip.style()
    layers = data["layers"]
    nv = record.arr(data["num_vision"])
    fig, (ax, ax2) = ip.figure(1, 2, aspect=0.5, sharex=True, height_ratios=(1.6, 1))
    ip.violins(ax, [record.arr(w) for w in data["weights"]], layers, color=ip.COLORS["answer"], log=True,
               inner="quartile")
    ax.axhline(1.0 / np.nanmedian(nv), color="#777777", ls="--", lw=0.8,
               label=f"uniform over vision (1/{int(np.nanmedian(nv))})")
    ax.set_ylabel("attention weight\n(answer pos. → vision token)")
    ax.set_xlabel("")
    ax.legend(loc="upper right")
    ax.set_title(ip.model_title("Attention over vision tokens per layer", data["model_label"], data["n"]))
    ip.layer_curve(ax2, layers, record.arr(data["entropy"]), color=ip.COLORS["question"],
                   label="mean, 95% CI")
    top = float(np.log(np.nanmedian(nv)))
    ax2.axhline(top, color="#777777", ls="--", lw=0.8, label="uniform (log Nv)")
    ax2.set_ylim(0, max(top, float(np.nanmax(record.arr(data["entropy"])))) * 1.12)
    ax2.set_ylabel("entropy over vision\ntokens (nats)")
    ax2.set_xlabel("decoder layer")
    ax2.legend(loc="lower right", ncol=2, columnspacing=1.0, handlelength=1.6)
    ip.integer_ticks(ax2, layers)
    return ip.save(fig, out_dir, NAME)


def finding(d) -> str:
    """REPORT: is the entropy over vision tokens higher in the last third of the layers than in layers 1..third?"""
    e = np.asarray(d["entropy"], dtype=np.float64)  # [N, L]
    L = e.shape[1]
    third = max(1, (L - 1) // 3)
    early = np.nanmean(e[:, 1:1 + third], 1)  # layer 0 attends almost nothing to vision: excluded
    late = np.nanmean(e[:, L - third:], 1)
    diff = mean_ci(late - early)
    return (f"VIF (Fig. 2): attention over vision tokens becomes more diffuse (higher entropy) in deep layers. Mean "
            f"entropy over layers 1–{third} is {fmt(*mean_ci(early))} nats, over the last {third} layers "
            f"{fmt(*mean_ci(late))} nats; difference {fmt(*diff)} — {verdict(diff_verdict(diff[1], diff[2], True))}.")


ANALYSIS = Analysis(NAME, __doc__, title="Attention over vision tokens per layer", measure=measure, plot=plot,
                    finding=finding, limit=600, batch_size=100, notebook_limit=24,
                    claim="VIF: attention over vision grows more diffuse (higher entropy) with depth")
compute, run, main = ANALYSIS.compute, ANALYSIS.run, ANALYSIS.main

if __name__ == "__main__":
    main()
