"""Accuracy as the x% lowest-μ or highest-μ vision tokens are cut from the text queries, with random cuts as
the control (AIF's μ-based masking: "cutting 90% low-μ barely hurts, cutting 10% high-μ hurts a lot").

    python -m analyses.mu_masking --model toy --data toy --limit 240 --seed 0 --out figures

μ per vision token: a profiling forward captures d[l, i] = max over the question tokens of the attention
(mean over heads) to vision token i in layer l; μ[i] = mean over layers (`aif_math.token_stats`). For each
x in --fractions the lowest-μ, highest-μ or a seeded random x% of the vision tokens (`aif_math.mu_keep`) are
cut from every text query — question and generated tokens — in every layer (`EdgeMask("text", cut)`;
vision→vision attention untouched), the answer is decoded greedily and scored (`interp.data.scoring`).
Reference lines: the plain model (x = 0), every text→vision edge cut (blind), and chance.
Writes OUT/mu_masking.{json,png,pdf}.
"""

from __future__ import annotations

from analyses import batching, record, tables
from analyses.findings import fmt, verdict
from analyses.registry import Analysis, Option
from interp.stats import bootstrap_mean

NAME = "mu_masking"
WHICH = ("lowest", "highest", "random")
FRACTIONS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def floats(text: str) -> list[float]:
    """'0,0.1,0.5' → [0.0, 0.1, 0.5] (the --fractions flag)."""
    return [float(x) for x in text.split(",") if x.strip()]




def measure(vlm, samples, cfg, *, fractions=FRACTIONS) -> dict:
    """scores[which][f] [N] per fraction; baseline [N]; blind [N]; accuracy with 95% bootstrap intervals."""
    import torch

    import interp
    from interp.methods import aif_math

    fractions = [float(x) for x in (floats(fractions) if isinstance(fractions, str) else fractions)]
    gen = torch.Generator().manual_seed(cfg.seed)
    base, blind = [], []
    scores = {w: [[] for _ in fractions] for w in WHICH}
    cut_counts = {w: [[] for _ in fractions] for w in WHICH}
    texts = {"baseline": []}
    gk = dict(max_new_tokens=cfg.max_new_tokens, metric=cfg.metric)
    for chunk in batching.batches(samples, cfg.batch_size, progress=cfg.progress, desc=NAME):
        batch = batching.prepare(vlm, chunk)
        lay = batch.layout
        stats = interp.capture(vlm, batch, queries="question")
        d = stats.vision_max.permute(1, 0, 2).float()  # [B, L, Nv]
        valid = lay.vision_valid()
        mu, _ = aif_math.token_stats(d, valid)  # [B, Nv]
        t, s0, _ = batching.generate_scores(vlm, batch, chunk, **gk)
        base += s0
        texts["baseline"] += t
        blind += batching.generate_scores(vlm, batch, chunk, (interp.EdgeMask("text", "vision"),), **gk)[1]
        for w in WHICH:
            for j, x in enumerate(fractions):
                kept = aif_math.mu_keep(mu, x, which=w, generator=gen, valid=valid)
                cut = valid & ~kept.cpu()
                cut_counts[w][j] += cut.sum(1).tolist()
                if not cut.any():  # x = 0 (or rounds to no token): the plain model
                    scores[w][j] += s0
                    continue
                mask = interp.EdgeMask("text", batching.vision_group(lay, cut), name="mu_cut")
                scores[w][j] += batching.generate_scores(vlm, batch, chunk, (mask,), **gk)[1]
    acc = {w: [bootstrap_mean(s, seed=cfg.seed) for s in scores[w]] for w in WHICH}
    return {
        "n": len(samples),
        "fractions": fractions,
        "scores": scores,  # which → [F][N]
        "cut_tokens": cut_counts,  # which → [F][N] vision tokens actually cut per sample
        "baseline": base,
        "blind": blind,
        "accuracy": {w: {"mean": [a[0] for a in acc[w]], "lo": [a[1] for a in acc[w]], "hi": [a[2] for a in acc[w]]}
                     for w in WHICH},
        "baseline_accuracy": bootstrap_mean(base, seed=cfg.seed),
        "blind_accuracy": bootstrap_mean(blind, seed=cfg.seed),
        "chance": tables.chance(samples, cfg.data),
        "families": [s.family for s in samples],
        "predictions_baseline": texts["baseline"],
    }


def plot(data, out_dir=None) -> list:
    """Redraw OUT/mu_masking.{png,pdf} from the JSON (path or dict) alone."""
    import interp.plot as ip

    data, here = record.read_json(data)
    out_dir = out_dir or here
    ip.style()
    x = 100 * record.arr(data["fractions"])
    fig, ax = ip.figure(aspect=0.78)
    labels = {"lowest": "lowest-μ tokens cut", "highest": "highest-μ tokens cut", "random": "random tokens cut"}
    markers = {"lowest": "o", "highest": "v", "random": "s"}
    for w in WHICH:
        a = data["accuracy"][w]
        ip.layer_curve(ax, x, mean=record.arr(a["mean"]), lo=record.arr(a["lo"]), hi=record.arr(a["hi"]),
                       label=labels[w], color=ip.COLORS[w], marker=markers[w], band_alpha=0.15)
    b = data["blind_accuracy"][0]
    ax.axhline(b, color=ip.COLORS["blind"], ls=":", lw=1.0, label=f"all cut (blind) {b:.2f}")
    if data.get("chance") is not None:
        ax.axhline(data["chance"], color="#999999", ls="--", lw=0.8, label=f"chance {data['chance']:.2f}")
    ax.set_xlabel("vision tokens cut from text queries (%)")
    ax.set_ylabel("accuracy (95% CI)")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xticks(x)
    ax.set_xticklabels([f"{v:.0f}" for v in x])
    ax.set_title(ip.model_title("Accuracy under μ-ranked attention cuts", data["model_label"], data["n"]))
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.24), ncol=2, fontsize=6.5)
    return ip.save(fig, out_dir, NAME)


def finding(d) -> str:
    """REPORT: does cutting the 90% lowest-μ tokens hurt less than cutting the 10% highest-μ ones?"""
    fr = [round(float(x), 2) for x in d["fractions"]]
    acc = d["accuracy"]
    i9, i1 = fr.index(0.9), fr.index(0.1)
    lo9 = (acc["lowest"]["mean"][i9], acc["lowest"]["lo"][i9], acc["lowest"]["hi"][i9])
    hi1 = (acc["highest"]["mean"][i1], acc["highest"]["lo"][i1], acc["highest"]["hi"][i1])
    held = True if lo9[1] > hi1[2] else (False if lo9[2] < hi1[1] else None)
    b = d["baseline_accuracy"]
    return (f"AIF (μ-based masking): cutting the 90% lowest-μ vision tokens hurts less than cutting the 10% "
            f"highest-μ ones. Plain {fmt(*b)}; 90% lowest-μ cut {fmt(*lo9)}; 10% highest-μ cut {fmt(*hi1)}; "
            f"blind {fmt(*d['blind_accuracy'])} — {verdict(held)}.")


ANALYSIS = Analysis(NAME, __doc__, title="μ-based masking", measure=measure, plot=plot, finding=finding, limit=240,
                    batch_size=120, main_limit=400, notebook_limit=12,
                    claim="AIF: cutting the 90% lowest-μ tokens hurts less than cutting the 10% highest-μ",
                    options=(Option("fractions", FRACTIONS, "comma-separated fractions of vision tokens to cut "
                                    "(0 = the plain model)", floats),))
compute, run, main = ANALYSIS.compute, ANALYSIS.run, ANALYSIS.main

if __name__ == "__main__":
    main()
