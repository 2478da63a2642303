"""figures/REPORT.md from the analyses' JSON files alone: tables, every figure, the model card, and one
sentence per finding saying whether the papers' claim held on this model, with its interval.

    python -m analyses.report --out figures      # after the analyses have written figures/*.json

Every number in the report is read from the JSON next to it (nothing is recomputed from the model).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np
from scipy import stats

ORDER = ("vision_attention_ratio", "attenuation_violin", "attention_heatmaps", "token_dynamics", "mu_masking",
         "aif_ratios", "oracle_masks", "vif_focus", "vif_ablation", "method_table", "patching", "knockout_flow",
         "logit_lens", "premises")
# premises runs last (it reads oracle_masks.json and vif_ablation.json) but its paragraph and section open REPORT.md


def _load(out: Path, name: str):
    p = out / f"{name}.json"
    return json.loads(p.read_text()) if p.exists() else None


def _ci(x) -> tuple[float, float, float]:
    """Mean and 95% t-interval of a 1-D sample."""
    x = np.asarray(x, dtype=np.float64)
    x = x[np.isfinite(x)]
    m = float(x.mean())
    if len(x) < 2:
        return m, m, m
    h = float(stats.sem(x) * stats.t.ppf(0.975, len(x) - 1))
    return m, m - h, m + h


def _fmt(m, lo, hi, digits=3) -> str:
    return f"{m:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def _verdict(held: bool | None) -> str:
    return {True: "**held**", False: "**did not hold**", None: "**inconclusive**"}[held]


def _diff_verdict(lo: float, hi: float, want_positive: bool) -> bool | None:
    if lo > 0:
        return want_positive
    if hi < 0:
        return not want_positive
    return None


# ------------------------------------------------------------------------------------------ findings


def f_vision_attention_ratio(d) -> str:
    r = np.asarray(d["ratio_answer"], dtype=np.float64)  # [N, L]
    means = np.nanmean(r, 0)
    peak = int(np.nanargmax(means))
    last = r.shape[1] - 1
    diff = _ci(r[:, last] - r[:, peak])
    held = None if peak == last else _diff_verdict(diff[1], diff[2], want_positive=False)
    return (f"VIF (Fig. 1/2): attention to vision tokens attenuates in deep layers. At the answer position the "
            f"vision share peaks at layer {peak} ({_fmt(*_ci(r[:, peak]))}) and is {_fmt(*_ci(r[:, last]))} at the "
            f"last layer {last}: change {_fmt(*diff)} — {_verdict(held)} (the mean curve rises until layer {peak} of "
            f"0–{last}, then falls).")


def f_attenuation_violin(d) -> str:
    e = np.asarray(d["entropy"], dtype=np.float64)  # [N, L]
    L = e.shape[1]
    third = max(1, (L - 1) // 3)
    early = np.nanmean(e[:, 1:1 + third], 1)  # layer 0 attends almost nothing to vision: excluded
    late = np.nanmean(e[:, L - third:], 1)
    diff = _ci(late - early)
    return (f"VIF (Fig. 2): attention over vision tokens becomes more diffuse (higher entropy) in deep layers. Mean "
            f"entropy over layers 1–{third} is {_fmt(*_ci(early))} nats, over the last {third} layers "
            f"{_fmt(*_ci(late))} nats; difference {_fmt(*diff)} — {_verdict(_diff_verdict(diff[1], diff[2], True))}.")


def f_attention_heatmaps(d) -> str:
    shares = [s["box_share"] for s in d["samples"] if s.get("box_share")]
    if not shares:
        return "No evidence boxes in these samples."
    sh = np.asarray(shares, dtype=np.float64)  # [S, layers]
    area = np.mean([s["box_area"] for s in d["samples"] if s.get("box_area") is not None])
    cells = ", ".join(f"layer {l}: {v:.2f}" for l, v in zip(d["layers"], np.nanmean(sh, 0)))
    return (f"Share of the last prompt token's vision attention inside the evidence boxes, mean over the "
            f"{len(sh)} samples drawn ({cells}); the boxes cover {area:.2f} of the vision tokens. Descriptive "
            "(a handful of samples), no claim tested.")


def f_token_dynamics(d) -> str:
    s = d["top_evidence_share_summary"]
    le, hm = s["low_entropy"], s["high_mu"]
    held = None
    if le["ci"][0] > hm["ci"][1]:
        held = True
    elif le["ci"][1] < hm["ci"][0]:
        held = False
    k = d["aif_kept_summary"]
    return (f"AIF (Table 6): ranking tokens by low cross-layer entropy recovers evidence tokens better than ranking "
            f"by attention. Share of evidence tokens among the top {int(100 * d['top_fraction'])}%: low entropy "
            f"{_fmt(le['mean'], *le['ci'])}, high μ {_fmt(hm['mean'], *hm['ci'])}, random "
            f"{_fmt(s['random']['mean'], *s['random']['ci'])} — {_verdict(held)} (both beat random; AIF keeps "
            f"{k['evidence'][0]:.2f} of evidence and {k['background'][0]:.2f} of background tokens).")


def f_mu_masking(d) -> str:
    fr = [round(float(x), 2) for x in d["fractions"]]
    acc = d["accuracy"]
    i9, i1 = fr.index(0.9), fr.index(0.1)
    lo9 = (acc["lowest"]["mean"][i9], acc["lowest"]["lo"][i9], acc["lowest"]["hi"][i9])
    hi1 = (acc["highest"]["mean"][i1], acc["highest"]["lo"][i1], acc["highest"]["hi"][i1])
    held = True if lo9[1] > hi1[2] else (False if lo9[2] < hi1[1] else None)
    b = d["baseline_accuracy"]
    return (f"AIF (μ-based masking): cutting the 90% lowest-μ vision tokens hurts less than cutting the 10% "
            f"highest-μ ones. Plain {_fmt(*b)}; 90% lowest-μ cut {_fmt(*lo9)}; 10% highest-μ cut {_fmt(*hi1)}; "
            f"blind {_fmt(*d['blind_accuracy'])} — {_verdict(held)}.")


def f_aif_ratios(d) -> str:
    sh = d["chosen_share"]
    paper = sh["paper"].get("0.9", 0.0)
    norm = sh["normalized"]
    spread = ", ".join(f"{k}: {v:.2f}" for k, v in norm.items() if v > 0)
    return (f"Known drift of the paper's criterion (DESIGN.md): argmax_r |S(r) − S0| picks r = 0.9 for "
            f"{paper:.0%} of the {d['n']} samples — **confirmed**; the normalised criterion spreads its choices "
            f"({spread}).")


def _paired_sentence(d, m, label) -> str:
    p = d["paired_vs_baseline"][m]
    lead = f"{label} " if label else ""
    return f"{lead}{p['difference']:+.3f} [{p['ci'][0]:+.3f}, {p['ci'][1]:+.3f}] (McNemar p = {p['p_value']:.2g})"


def f_oracle_masks(d) -> str:
    s = d["summary"]
    fams = s["oracle_box"]["by_family"]
    base = s["baseline"]["by_family"]
    ups = [f for f in fams if fams[f]["ci"][0] > base[f]["accuracy"]]
    downs = [f for f in fams if fams[f]["ci"][1] < base[f]["accuracy"]]
    p = d["paired_vs_baseline"]["aif"]
    held = _diff_verdict(p["ci"][0], p["ci"][1], True)
    return (f"AIF (Table 1): masking background vision tokens from text improves accuracy. Oracle box mask vs "
            f"plain: {_paired_sentence(d, 'oracle_box', 'overall')}; it helps {', '.join(ups) or 'no family'} and "
            f"hurts {', '.join(downs) or 'no family'}"
            + (" (counting and existence need context beyond the evidence boxes). " if {"count", "exists"} & set(downs)
               else ". ") +
            f"Oracle ratio (best AIF ratio per sample, an upper bound): {_paired_sentence(d, 'oracle_ratio', '')}. "
            f"AIF with the paper's criterion: {_paired_sentence(d, 'aif', '')} — {_verdict(held)} on this model.")


def f_vif_focus(d) -> str:
    b, a = d["entropy_before"], d["entropy_after"]
    eb, ea = np.mean(b["mean"]), np.mean(a["mean"])
    sb, sa = np.mean(d["box_share_before"]["mean"]), np.mean(d["box_share_after"]["mean"])
    acc = d["paired_vs_baseline"]["vif"]
    def moved(after, before):  # True: up at every layer, False: down at every layer (non-overlapping), else None
        if all(x > y for x, y in zip(after["lo"], before["hi"])):
            return True
        if all(x < y for x, y in zip(after["hi"], before["lo"])):
            return False
        return None

    ent_moved = moved(a, b)
    lower = None if ent_moved is None else not ent_moved
    higher = moved(d["box_share_after"], d["box_share_before"])
    me = d["map_entropy"]
    return (f"VIF (entropy 5.36 → 3.23 on LLaVA-1.5): injecting the focus map sharpens deep-layer attention over "
            f"vision tokens. Mean entropy at the injection layers {d['inject_layers']}: {eb:.2f} → {ea:.2f} nats "
            f"({_verdict(lower)}; verdicts need non-overlapping intervals at every injection layer); share of vision "
            f"attention inside the evidence boxes {sb:.3f} → {sa:.3f} ({_verdict(higher)}); accuracy "
            f"{_paired_sentence(d, 'vif', 'VIF vs plain')}, {_verdict(_diff_verdict(acc['ci'][0], acc['ci'][1], True))}. "
            f"Map entropy, paper normalisation {me['paper'][0][0]:.2f} vs reference (softmax) "
            f"{me['reference'][0][0]:.2f} nats (uniform {d['uniform_entropy']:.2f}); total-variation distance "
            f"between the two maps {d['map_tv_distance'][0][0]:.2f}; accuracy with the reference map "
            f"{_paired_sentence(d, 'vif_reference', '')}. VIF: {d['vif_source']}.")


def f_vif_ablation(d) -> str:
    from analyses.vif_ablation import finding  # its verdicts are computed there, from the JSON alone

    return finding(d)


def f_method_table(d) -> str:
    parts = []
    for m, label in (("aif", "AIF"), ("aif_cap", "AIF (r ≤ 0.5)"), ("vif", "VIF"), ("aif_vif", "AIF + VIF")):
        p = d["paired_vs_baseline"][m]
        parts.append(f"{_paired_sentence(d, m, label)} {_verdict(_diff_verdict(p['ci'][0], p['ci'][1], True))}")
    return ("The papers report gains over the plain model (AIF +2 to +8 points, VIF +6 to +9). Here: "
            + "; ".join(parts) + ".")


def f_patching(d) -> str:
    from analyses.patching import finding  # the information-flow analyses compute their verdicts there

    return finding(d)


def f_knockout_flow(d) -> str:
    from analyses.knockout_flow import finding

    return finding(d)


def f_logit_lens(d) -> str:
    from analyses.logit_lens import finding

    return finding(d)


def f_premises(d) -> str:
    return ("Each premise's verdict with its 95% interval (✓ holds, ✗ does not hold, ? inconclusive), per family and "
            "per layer; the statistics are defined in `analyses/premises.py`. The paragraph above is computed from "
            "this table.")


FINDINGS = {name: globals()[f"f_{name}"] for name in ORDER}
TITLES = {
    "vision_attention_ratio": "Vision attention ratio per layer",
    "attenuation_violin": "Attention over vision tokens per layer",
    "attention_heatmaps": "Attention over the image",
    "token_dynamics": "AIF token dynamics",
    "mu_masking": "μ-based masking",
    "aif_ratios": "AIF's adaptive ratio",
    "oracle_masks": "Oracle masks vs AIF",
    "vif_focus": "VIF focus maps and deep-layer attention",
    "vif_ablation": "VIF ablation: the focus map vs the extra fine-tuning",
    "method_table": "Methods compared",
    "patching": "Activation patching on mirror pairs",
    "knockout_flow": "Attention knockout over layer windows",
    "logit_lens": "Logit lens over the image",
    "premises": "The papers' premises, measured",
}


def model_card_section(card_path: Path) -> str:
    if not card_path.exists():
        return ""
    card = json.loads(card_path.read_text())
    ev = card.get("eval", {})
    acc = ev.get("accuracy", {})
    lines = ["## The model", ""]
    lines.append(f"The shipped toy LLaVA (`interp.toy.load()`): {card.get('parameters', '?'):,} parameters, "
                 f"{card.get('decoder_layers', '?')} decoder layers; model card `interp/toy/checkpoint/model_card.json`.")
    blocked = ev.get("accuracy_vision_blocked", {})
    chance = ev.get("chance", {})
    default = set(_default_families())
    fams = [f for f in acc if f != "overall"]
    if fams:
        lines += ["", f"Held-out accuracy ({ev.get('per_family', '?')} per family; {ev.get('metric', '')}):", "",
                  "| family | accuracy [95% CI] | by true answer | vision blocked | chance | in the default families |",
                  "|---|---|---|---|---|---|"]
        split = ev.get("accuracy_by_answer", {})
        for f in fams:
            v, bl = acc[f], blocked.get(f, {})
            ci = v.get("ci95", [float("nan")] * 2)
            parts = " · ".join(f"{a} {r['acc']:.2f}" for a, r in split.get(f, {}).items()) or "–"
            lines.append(f"| {f} | {v['acc']:.3f} [{ci[0]:.3f}, {ci[1]:.3f}] | {parts} | "
                         f"{bl.get('acc', float('nan')):.3f} | {chance.get(f, float('nan')):.3f} | "
                         f"{'yes' if f in default else 'no (missed its target)'} |")
    if card.get("notes"):  # the training history (stages, selections, wall time) stays in the card
        lines += ["", "How it was trained (stages, what each taught, how the checkpoint was chosen): the card's "
                      "`notes` and `commands`."]
    return "\n".join(lines) + "\n"


def _default_families():
    import interp.toy

    return list(interp.toy.FAMILIES)


def build(out: str | os.PathLike, card: str | os.PathLike | None = None) -> Path:
    out = Path(out)
    if card is None:
        import interp.toy

        card = Path(interp.toy.CHECKPOINT_DIR) / "model_card.json"
    from analyses import premises

    pre = _load(out, "premises")
    parts = ["# interp on the toy model: the papers' analyses", ""]
    if pre is not None:
        parts += ["## What this model can and cannot show", "", premises.paragraph(pre) + " Figure and per-family "
                  "table: [the papers' premises, measured](#the-papers-premises-measured).", ""]
    parts += ["Generated by `bash scripts/main.sh` (`python -m analyses.main`); every number below is read from "
              "the JSON next to its figure, every figure is redrawn by `python -m analyses.<name>` or its "
              "`plot()` from that JSON. The toy model is tiny (8 decoder layers, 64 vision tokens): a finding that "
              "does not hold here says something about this model, not about the papers' models.", ""]
    parts.append(model_card_section(Path(card)))
    for name in ("premises", *[n for n in ORDER if n != "premises"]):
        d = _load(out, name)
        if d is None:
            continue
        refer = " " + premises.refer(pre, name) if pre is not None and name != "premises" else ""
        parts += [f"## {TITLES[name]}", "", f"![{name}]({name}.png)", "", FINDINGS[name](d) + refer, ""]
        if d.get("table"):
            parts += [d["table"], ""]
        parts += [f"<sub>`{d['command']}` — {d['n']} samples, seed {d['seed']}, git {d.get('git_revision')}</sub>", ""]
    path = out / "REPORT.md"
    path.write_text("\n".join(parts))
    return path


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="figures")
    ap.add_argument("--card", default=None, help="model card JSON (default: the shipped toy model's)")
    args = ap.parse_args(argv)
    print(f"wrote {build(args.out, args.card)}")


if __name__ == "__main__":
    main()
