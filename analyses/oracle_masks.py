"""Accuracy per family: plain model vs oracle box mask vs oracle ratio vs AIF (paper criterion) vs AIF
(normalised criterion) — AIF Table 1 style, with 95% bootstrap intervals and paired tests against the plain
model.

    python -m analyses.oracle_masks --model toy --data toy --limit 300 --seed 0 --out figures

- baseline: the plain model, greedy decoding.
- oracle box: text queries (question + generated tokens) see only the vision tokens whose patch overlaps an
  evidence box (`TokenLayout.boxes_to_mask`); every other text→vision edge is cut in every layer.
- oracle ratio: AIF run with each single ratio r in 0.1..0.9 (`AIF(ratios=(r,))`); a sample counts correct
  if any r answers it correctly — the best ratio given the answer, an upper bound on any ratio rule.
- AIF: `AIF()` (argmax_r |S(r) − S0|) and `AIF(criterion="normalized")`.
Also stored: the accuracy of every fixed ratio. Samples without evidence boxes are skipped.
Writes OUT/oracle_masks.{json,png,pdf}; the JSON holds a Markdown table.
"""

from __future__ import annotations

import numpy as np

from analyses import batching, figures, loading, record, tables
from analyses.findings import diff_verdict, paired_text, verdict
from analyses.registry import Analysis

NAME = "oracle_masks"
METHODS = ("baseline", "oracle_box", "oracle_ratio", "aif", "aif_normalized")
LABELS = {"baseline": "baseline", "oracle_box": "oracle box mask", "oracle_ratio": "oracle ratio (upper bound)",
          "aif": "AIF (paper criterion)", "aif_normalized": "AIF (normalised criterion)"}


def measure(vlm, samples, cfg) -> dict:
    """scores[method] [N]; per-ratio scores [R][N]; per-family and overall accuracy with intervals."""
    import interp
    from interp.methods import aif_math

    samples = loading.with_boxes(samples, NAME)
    ratios = list(aif_math.DEFAULT_RATIOS)
    scores = {m: [] for m in METHODS}
    per_ratio = [[] for _ in ratios]
    chosen = {"aif": [], "aif_normalized": []}
    preds = {m: [] for m in ("baseline", "oracle_box", "aif")}
    kept_frac = []  # share of vision tokens the oracle box mask leaves visible to text
    gk = dict(max_new_tokens=cfg.max_new_tokens, metric=cfg.metric)
    for chunk in batching.batches(samples, cfg.batch_size, progress=cfg.progress, desc=NAME):
        batch = batching.prepare(vlm, chunk)
        lay = batch.layout
        t, s, _ = batching.generate_scores(vlm, batch, chunk, **gk)
        scores["baseline"] += s
        preds["baseline"] += t
        inside = lay.boxes_to_mask([list(x.boxes) for x in chunk])  # [B, T] vision tokens touching a box
        outside = lay.vision & ~inside
        kept_frac += ((lay.vision & inside).sum(1).float() / lay.num_vision.float()).tolist()
        if outside.any():
            cut = interp.EdgeMask("text", outside, name="oracle")
            t, s, _ = batching.generate_scores(vlm, batch, chunk, (cut,), **gk)
        scores["oracle_box"] += s
        preds["oracle_box"] += t
        for j, r in enumerate(ratios):
            per_ratio[j] += batching.generate_scores(vlm, batch, chunk, (interp.AIF(ratios=(r,)),), **gk)[1]
        for key, iv in (("aif", interp.AIF()), ("aif_normalized", interp.AIF(criterion="normalized"))):
            t, s, out = batching.generate_scores(vlm, batch, chunk, (iv,), **gk)
            scores[key] += s
            chosen[key] += out.diagnostics["aif"]["ratio"].tolist()
            if key == "aif":
                preds["aif"] += t
    scores["oracle_ratio"] = np.max(np.asarray(per_ratio), axis=0).tolist()

    families = [s.family for s in samples]
    ids = [s.id for s in samples]
    summary, paired = tables.summarize_methods(samples, scores, METHODS, cfg.seed)
    return {
        "n": len(samples),
        "methods": list(METHODS),
        "labels": LABELS,
        "scores": scores,
        "ratios": ratios,
        "per_ratio_scores": per_ratio,  # [R][N]
        "per_ratio_accuracy": [float(np.mean(s)) for s in per_ratio],
        "chosen_ratio": chosen,
        "oracle_kept_fraction": kept_frac,
        "summary": summary,  # method → {accuracy, ci, by_family: {f: {n, accuracy, ci}}}
        "paired_vs_baseline": paired,
        "chance": tables.chance(samples, cfg.data),
        "chance_by_family": tables.chance_by_family(samples, cfg.data),
        "families": families,
        "ids": ids,
        "predictions": preds,
        "table": tables.markdown_table(summary, paired, LABELS),
    }


def plot(data, out_dir=None) -> list:
    """Redraw OUT/oracle_masks.{png,pdf} from the JSON (path or dict) alone."""
    import interp.plot as ip

    data, here = record.read_json(data)
    out_dir = out_dir or here
    ip.style()
    fig, ax, wide = figures.method_bars(data, "Oracle masks vs AIF")
    if wide:
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=6.5)
    else:
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), fontsize=6.5, ncol=2)
    return ip.save(fig, out_dir, NAME)


def finding(d) -> str:
    """REPORT: does masking background vision tokens from text help (oracle box, oracle ratio, AIF)?"""
    s = d["summary"]
    fams = s["oracle_box"]["by_family"]
    base = s["baseline"]["by_family"]
    ups = [f for f in fams if fams[f]["ci"][0] > base[f]["accuracy"]]
    downs = [f for f in fams if fams[f]["ci"][1] < base[f]["accuracy"]]
    p = d["paired_vs_baseline"]
    held = diff_verdict(p["aif"]["ci"][0], p["aif"]["ci"][1], True)
    return (f"AIF (Table 1): masking background vision tokens from text improves accuracy. Oracle box mask vs "
            f"plain: {paired_text(p['oracle_box'], 'overall')}; it helps {', '.join(ups) or 'no family'} and "
            f"hurts {', '.join(downs) or 'no family'}"
            + (" (counting and existence need context beyond the evidence boxes). " if {"count", "exists"} & set(downs)
               else ". ") +
            f"Oracle ratio (best AIF ratio per sample, an upper bound): {paired_text(p['oracle_ratio'])}. "
            f"AIF with the paper's criterion: {paired_text(p['aif'])} — {verdict(held)} on this model.")


ANALYSIS = Analysis(NAME, __doc__, title="Oracle masks vs AIF", measure=measure, plot=plot, finding=finding,
                    limit=300, batch_size=100, main_limit=400, notebook_limit=12,
                    claim="AIF: masking background vision tokens from text improves accuracy")
compute, run, main = ANALYSIS.compute, ANALYSIS.run, ANALYSIS.main

if __name__ == "__main__":
    main()
