"""Accuracy tables shared by the method comparisons (oracle_masks, method_table, vif_focus, vif_ablation): per-method
accuracy with intervals, paired tests against a baseline, a Markdown table, the chance levels to draw."""

from __future__ import annotations

import numpy as np


def summarize_methods(samples, scores: dict, methods, seed: int, baseline: str = "baseline"):
    """Per-method accuracy with bootstrap intervals (overall and by family) and paired tests against
    `baseline`. scores: method → [N] per-sample scores. Returns (summary, paired)."""
    from interp.evaluation import EvalResult, compare

    families = [s.family for s in samples]
    ids = [s.id for s in samples]
    results = {m: EvalResult(records=[{"id": i, "family": f, "score": v, "correct": v >= 0.5}
                                      for i, f, v in zip(ids, families, scores[m])], seed=seed)
               for m in methods}
    summary = {m: results[m].summary() for m in methods}
    paired = {}
    for m in methods:
        if m == baseline:
            continue
        c = compare(results[baseline], results[m], seed=seed)
        paired[m] = {"difference": c.difference, "ci": list(c.ci), "only_baseline": c.only_a, "only_method": c.only_b,
                     "p_value": c.p_value}
    return summary, paired


def markdown_table(summary: dict, paired: dict, labels: dict) -> str:
    """Accuracy per family × method, overall with its interval, Δ vs baseline and McNemar p, as Markdown."""
    first = next(iter(summary.values()))
    fams = list(first["by_family"])
    head = "| method | " + " | ".join(fams) + " | all | Δ vs baseline [95% CI] | McNemar p |"
    lines = [head, "|---|" + "---:|" * (len(fams) + 1) + "---|---:|"]
    for m, s in summary.items():
        cells = [f"{s['by_family'][f]['accuracy']:.3f}" for f in fams]
        all_ = f"{s['accuracy']:.3f} [{s['ci'][0]:.3f}, {s['ci'][1]:.3f}]"
        if m in paired:
            p = paired[m]
            d = f"{p['difference']:+.3f} [{p['ci'][0]:+.3f}, {p['ci'][1]:+.3f}]"
            pv = f"{p['p_value']:.3g}"
        else:
            d, pv = "", ""
        lines.append(f"| {labels[m]} | " + " | ".join(cells) + f" | {all_} | {d} | {pv} |")
    return "\n".join(lines)


def chance_by_family(samples, data_spec: str) -> dict:
    """family → chance accuracy (see `chance`); families whose chance is unknown are left out."""
    fams = {}
    for s in samples:
        fams.setdefault(s.family, []).append(s)
    out = {f: chance(v, data_spec) for f, v in fams.items()}
    return {f: c for f, c in out.items() if c is not None}


def chance(samples, data_spec: str) -> float | None:
    """Mean chance accuracy of a blind guesser: the toy task's per-family chance, else 1/len(choices) for
    multiple-choice samples; None when unknown (open questions)."""
    toy_chance = None
    if str(data_spec) == "toy":
        try:
            import interp.toy

            toy_chance = interp.toy.CHANCE
        except (ImportError, AttributeError):
            toy_chance = None
    vals = []
    for s in samples:
        if toy_chance is not None and s.family in toy_chance:
            vals.append(toy_chance[s.family])
        elif s.choices:
            vals.append(1.0 / len(s.choices))
        else:
            return None
    return float(np.mean(vals)) if vals else None
