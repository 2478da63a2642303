"""The papers' premises, measured on one model: a verdict with a 95% interval for each, per layer and per family,
so a reader learns whether AIF and VIF have anything to work with here and how much any mask could gain.

    python -m analyses.premises --model toy --data toy --limit 600 --seed 0 --out figures
    python -m analyses.premises --model zoo:qwen2_vl --data toy --limit 8 --out /tmp/premises

One greedy generate per batch with two `Capture`s (heads averaged): the answer position (last prompt token) and
the question tokens (AIF's profiling rows). Evidence tokens: the vision tokens whose patch overlaps an evidence
box (`TokenLayout.boxes_to_mask`); background: the rest. Intervals: seeded 95% percentile bootstrap over samples
(`interp.stats`). "holds": the interval lies on the premise's side of its reference; "does not hold": on the
other side; else "inconclusive".

1. AIF, "seeing but not perceiving" (`seeing`): per layer, the share of the answer position's attention over
   vision (renormalised over vision tokens) inside the evidence boxes, wrong vs right answers, against the
   boxes' area share. Verdict: the wrong answers' lift, share (mean over layers) − area share, above 0.
2. AIF, token dynamics (`token_dynamics`): d[l, i] = max over question tokens of the attention to vision token
   i; its cross-layer entropy by `aif_math.token_stats`. Per sample the AUC P(entropy of an evidence token <
   entropy of a background token) (ties ½); verdict: above 0.5.
3. VIF, visual attenuation at the answer position: the share of attention on vision (`attenuation_share`,
   premise: falls) and the entropy over vision tokens (`attenuation_entropy`, "structural collapse": rises).
   Per sample: mean over the last third of the layers − mean over layers 1..third (layer 0 left out).
4. Headroom (`headroom`): Δ accuracy vs the plain model of the oracle ratio (AIF's best ratio per sample,
   answer known) and the oracle box mask from oracle_masks.json, and the oracle map (VIF) from
   vif_ablation.json, in `--headroom-from` (default: --out). A missing file reads "not measured".

Box-based parts say "no boxes" when no sample has evidence boxes. Writes OUT/premises.{json,png,pdf}; the JSON
holds the verdicts, per-sample numbers, Markdown tables and the REPORT's opening paragraph.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from analyses import batching, record
from analyses.premises_figure import plot
from analyses.registry import Analysis, Option
from interp.stats import bootstrap_mean

NAME = "premises"
KEYS = ("seeing", "token_dynamics", "attenuation_share", "attenuation_entropy", "headroom")
SHORT = {"seeing": "AIF's seeing-but-not-perceiving", "token_dynamics": "AIF's token dynamics",
         "attenuation_share": "VIF's falling vision share", "attenuation_entropy": "VIF's rising vision entropy",
         "headroom": "oracle-ratio headroom"}
HOLDS, FAILS, UNSURE, NO_BOXES, NOT_MEASURED = "holds", "does not hold", "inconclusive", "no boxes", "not measured"
MARK = {HOLDS: "✓", FAILS: "✗", UNSURE: "?", NO_BOXES: "–", NOT_MEASURED: "–"}
VCOLOR = {HOLDS: "#029e73", FAILS: "#d55e00", UNSURE: "#555555", NO_BOXES: "#999999", NOT_MEASURED: "#999999"}
PHRASE = {"seeing": "attention that stays on the evidence when the answer is wrong",
          "token_dynamics": "evidence tokens singled out by low cross-layer entropy",
          "attenuation_share": "a vision share that falls with depth",
          "attenuation_entropy": "attention over vision that spreads out with depth",
          "headroom": "room for a better AIF ratio"}
# which premises each REPORT section rests on (`refer`)
REFERS = {"vision_attention_ratio": ("attenuation_share",), "attenuation_violin": ("attenuation_entropy",),
          "attention_heatmaps": ("seeing",), "token_dynamics": ("token_dynamics",),
          "mu_masking": ("seeing", "token_dynamics"), "aif_ratios": ("token_dynamics", "headroom"),
          "oracle_masks": ("seeing", "headroom"), "vif_focus": ("attenuation_entropy",),
          "vif_ablation": ("attenuation_entropy", "headroom"), "method_table": KEYS}


# ------------------------------------------------------------------------------------ per-sample numbers


def evidence_share(w, ev, valid) -> np.ndarray:
    """w: [B, L, Nv] attention to each vision token (NaN padding); ev, valid: [B, Nv] bool → [B, L] share of the
    row's vision attention on evidence tokens (NaN for a row without evidence tokens)."""
    w = np.nan_to_num(np.asarray(w, dtype=np.float64)) * valid[:, None]
    den = w.sum(-1)
    out = (w * ev[:, None]).sum(-1) / np.where(den > 0, den, np.nan)
    out[~ev.any(1)] = np.nan
    return out


def entropy_auc(ent, ev, bg) -> np.ndarray:
    """ent: [B, Nv] cross-layer entropy; ev, bg: [B, Nv] bool → [B] P(ent of an evidence token < ent of a
    background token), ties ½ (the Mann–Whitney U of the background tokens / pairs); NaN without both."""
    from scipy.stats import rankdata

    out = np.full(len(ent), np.nan)
    for b in range(len(ent)):
        e, g = ent[b, ev[b]], ent[b, bg[b]]
        if e.size and g.size:
            r = rankdata(np.concatenate([e, g]))  # midranks: a tie scores ½
            out[b] = (r[e.size:].sum() - g.size * (g.size + 1) / 2) / (e.size * g.size)
    return out


def masked_mean(x, sel) -> np.ndarray:
    """[B] mean of x [B, Nv] over sel [B, Nv] (NaN where a row selects nothing)."""
    n = sel.sum(1)
    return np.where(n > 0, (np.nan_to_num(x) * sel).sum(1) / np.maximum(n, 1), np.nan)


def depth_layers(L: int) -> tuple[list, list]:
    """(early, late) layers of the attenuation contrast: 1..third and the last third; the same split as
    REPORT's attenuation finding. Fewer than 3 layers: no contrast (two empty lists)."""
    if L < 3:
        return [], []
    third = max(1, (L - 1) // 3)
    return list(range(1, 1 + third)), list(range(L - third, L))


def measure(vlm, samples, cfg, *, headroom_from=None) -> dict:
    """Per-sample numbers ([N] or [N, L]), the premises' verdicts, the headroom read from the other analyses."""
    import torch

    from interp.attention.capture import Capture
    from interp.methods.aif_math import token_stats

    cols, correct, preds = {}, [], []
    for chunk in batching.batches(samples, cfg.batch_size, progress=cfg.progress, desc=NAME):
        batch = batching.prepare(vlm, chunk)
        lay = batch.layout
        caps = (Capture(queries="last", name="answer"), Capture(queries="question", name="question"))
        texts, scores, out = batching.generate_scores(vlm, batch, chunk, caps, max_new_tokens=cfg.max_new_tokens,
                                                    metric=cfg.metric)
        ans, que = out.diagnostics["answer"], out.diagnostics["question"]
        d = que.vision_max.permute(1, 0, 2).double()  # [B, L, Nv] AIF's token dynamics
        valid = lay.vision_valid() & torch.isfinite(d).all(1)
        ev = (batching.evidence(lay, chunk) & valid).numpy()
        valid = valid.numpy()
        bg = valid & ~ev & ev.any(1, keepdims=True)  # background exists only where boxes do
        ent = token_stats(d, valid=torch.from_numpy(valid))[1].numpy()  # [B, Nv]
        for k, v in (("evidence_share", evidence_share(ans.vision_mean.permute(1, 0, 2).numpy(), ev, valid)),
                     ("area_share", np.where(ev.any(1), ev.sum(1) / np.maximum(valid.sum(1), 1), np.nan)),
                     ("entropy_auc", entropy_auc(ent, ev, bg)), ("entropy_evidence", masked_mean(ent, ev)),
                     ("entropy_background", masked_mean(ent, bg)),
                     ("vision_ratio", ans.vision_ratio.T.double().numpy()),  # [B, L]
                     ("vision_entropy", ans.vision_entropy.T.double().numpy()), ("num_vision", valid.sum(1))):
            cols.setdefault(k, []).append(v)
        correct += [v >= 0.5 for v in scores]
        preds += texts
    rec = {k: np.concatenate(v) for k, v in cols.items()}
    L = rec["vision_ratio"].shape[1]
    early, late = depth_layers(L)
    rec.update(n=len(samples), layers=list(range(L)), depth={"early": early, "late": late},
               correct=np.asarray(correct), predictions=preds, families=[s.family for s in samples],
               ids=[s.id for s in samples])
    rec["premises"] = premise_stats(rec, cfg.seed)
    folder = headroom_from or cfg.out
    rec["premises"]["headroom"] = headroom(Path(folder) if folder else None, cfg.seed)
    rec["paragraph"] = paragraph(rec)
    rec["table"] = table(rec)
    return rec


# ------------------------------------------------------------------------------------ statistics, verdicts


def band(x, seed: int) -> dict:
    """{"mean", "ci", "n"} of the finite values of x: mean and 95% bootstrap interval (`interp.stats`)."""
    x = np.asarray(x, dtype=np.float64).ravel()
    m, lo, hi = bootstrap_mean(x, seed=seed)
    return {"mean": m, "ci": [lo, hi], "n": int(np.isfinite(x).sum())}


def verdict(b: dict, ref: float, want: int) -> str:
    """HOLDS when the interval lies on the `want` side (+1 above, −1 below) of `ref`, FAILS on the other side."""
    lo, hi = b["ci"]
    if b["n"] < 2 or not (np.isfinite(lo) and np.isfinite(hi)):
        return UNSURE
    if (lo > ref) if want > 0 else (hi < ref):
        return HOLDS
    if (hi < ref) if want > 0 else (lo > ref):
        return FAILS
    return UNSURE


def _premise(stat, families, seed, ref, want, **extra) -> dict:
    """An effect [N] (NaN = not measured for that sample) → overall and per-family bands with verdicts."""
    fam = np.asarray(families)
    by = {}
    for f in sorted(set(families)):
        b = band(stat[fam == f], seed)
        by[f] = {**b, "verdict": verdict(b, ref, want)}
    b = band(stat, seed)
    return {**b, "reference": ref, "verdict": verdict(b, ref, want), "by_family": by, **extra}


def _layer_bands(x, seed) -> dict:
    bs = [band(x[:, l], seed) for l in range(x.shape[1])]
    return {"mean": [b["mean"] for b in bs], "lo": [b["ci"][0] for b in bs], "hi": [b["ci"][1] for b in bs],
            "n": [b["n"] for b in bs]}


def premise_stats(rec: dict, seed: int) -> dict:
    """The first four premises from the per-sample arrays of `compute` (numpy), as plain dicts."""
    from interp.stats import bootstrap_diff_ci

    share, area, correct = rec["evidence_share"], rec["area_share"], np.asarray(rec["correct"], bool)
    fams, has = rec["families"], np.isfinite(area)
    wrong, right = has & ~correct, has & correct
    mean_share = np.nanmean(np.where(has[:, None], share, 0.0), 1) if share.size else np.zeros(0)
    mean_share[~has] = np.nan
    out = {}
    lift = np.where(wrong, mean_share - area, np.nan)
    out["seeing"] = _premise(
        lift, fams, seed, 0.0, +1,
        statistic="wrong answers: evidence share of vision attention − area share (mean over layers)",
        per_layer={"wrong": _layer_bands(share[wrong], seed), "right": _layer_bands(share[right], seed)},
        area_share=band(area, seed), wrong_share=band(mean_share[wrong], seed),
        right_share=band(mean_share[right], seed),
        wrong_minus_right={"mean": float(np.mean(mean_share[wrong]) - np.mean(mean_share[right]))
                           if wrong.any() and right.any() else np.nan,
                           "ci": list(bootstrap_diff_ci(mean_share[wrong], mean_share[right], seed=seed))})
    auc = rec["entropy_auc"]
    out["token_dynamics"] = _premise(
        auc, fams, seed, 0.5, +1,
        statistic="P(cross-layer entropy of an evidence token < that of a background token)",
        entropy_evidence=band(rec["entropy_evidence"], seed), entropy_background=band(rec["entropy_background"], seed),
        entropy_difference=band(rec["entropy_evidence"] - rec["entropy_background"], seed))
    early, late = rec["depth"]["early"], rec["depth"]["late"]
    for key, x, want, what in (("attenuation_share", rec["vision_ratio"], -1, "share of attention on vision"),
                               ("attenuation_entropy", rec["vision_entropy"], +1, "entropy over vision (nats)")):
        contrast = x[:, late].mean(1) - x[:, early].mean(1) if early else np.full(len(x), np.nan)
        out[key] = _premise(contrast, fams, seed, 0.0, want, per_layer=_layer_bands(x, seed),
                            statistic=f"answer position, {what}: mean over layers {_span(late)} − over {_span(early)}")
    for key in ("seeing", "token_dynamics"):
        if not has.any():
            out[key]["verdict"] = NO_BOXES
    if has.any() and not wrong.any():
        out["seeing"]["verdict"] = "no wrong answers"
    return out


def _span(layers) -> str:
    return "–" if not layers else f"{layers[0]}–{layers[-1]}" if len(layers) > 1 else str(layers[0])


def headroom(folder: Path | None, seed: int) -> dict:
    """Oracle ratio / box (oracle_masks.json) and oracle map (vif_ablation.json) in `folder`, as Δ accuracy
    (None: no folder to read, every row "not measured")."""
    out = {"statistic": "Δ accuracy of the oracle ratio vs the plain model", "reference": 0.0,
           "source": None if folder is None else str(folder)}
    where = "(no folder given: pass out= or headroom_from=)" if folder is None else f"in {folder}"
    for m in ("oracle_ratio", "oracle_box"):
        out[m] = {"verdict": NOT_MEASURED, "why": f"no oracle_masks.json {where} (run python -m "
                                                  f"analyses.oracle_masks --out {folder or 'DIR'})"}
    if folder is not None and (folder / "oracle_masks.json").exists():
        om = folder / "oracle_masks.json"
        d = json.loads(om.read_text())
        base, fam = np.asarray(d["scores"]["baseline"], float), d["families"]
        for m in ("oracle_ratio", "oracle_box"):
            p = d["paired_vs_baseline"][m]
            b = {"mean": p["difference"], "ci": p["ci"], "n": d["n"]}
            by = _premise(np.asarray(d["scores"][m], float) - base, fam, seed, 0.0, +1)["by_family"]
            out[m] = {**b, "verdict": verdict(b, 0.0, +1), "p_value": p["p_value"], "versus": "plain model",
                      "by_family": by, "file": "oracle_masks.json"}
    out["oracle_map"] = {"verdict": NOT_MEASURED, "why": f"no vif_ablation.json {where}"}
    if folder is not None and (folder / "vif_ablation.json").exists():
        va = folder / "vif_ablation.json"
        d = json.loads(va.read_text())
        found = [(k, m, p) for k, v in d.items() if k.startswith("paired") and isinstance(v, dict)
                 for m, p in v.items() if "oracle" in m and "map" in m and isinstance(p, dict) and "ci" in p]
        if found:
            k, m, p = found[0]
            b = {"mean": p["difference"], "ci": p["ci"], "n": d.get("n", 0)}
            out["oracle_map"] = {**b, "verdict": verdict(b, 0.0, +1), "p_value": p.get("p_value"),
                                 "versus": k.removeprefix("paired_vs_").replace("_", " ") or "its control",
                                 "file": f"vif_ablation.json: {k}.{m}"}
        else:
            out["oracle_map"]["why"] = "vif_ablation.json has no paired oracle-map row"
    r = out["oracle_ratio"]
    out.update({k: r[k] for k in ("mean", "ci", "n", "by_family") if k in r}, verdict=r["verdict"])
    return out


# ------------------------------------------------------------------------------------ text


def ci_text(b, digits=3, sign=None) -> str:
    """'m [lo, hi]'; signed (a difference) unless the band's reference is not 0 (an AUC) or sign=False."""
    sign = b.get("reference", 0.0) == 0.0 if sign is None else sign
    f = f"{{:{'+' if sign else ''}.{digits}f}}"
    return f"{f.format(b['mean'])} [{f.format(b['ci'][0])}, {f.format(b['ci'][1])}]"


def _state(*verdicts) -> str:
    if all(v == HOLDS for v in verdicts):
        return "holds"
    if any(v == HOLDS for v in verdicts):
        return "holds only in part"
    return "does not hold" if any(v == FAILS for v in verdicts) else "is not established"


def lead(d) -> str:
    """One bold sentence: whether AIF's and VIF's premises hold on this model, and the oracle ratio's headroom."""
    P = d["premises"]
    s, t, a, e, h = (P[k] for k in KEYS)
    boxes = s["verdict"] != NO_BOXES
    aif = f"AIF's premise {_state(s['verdict'], t['verdict'])} here" if boxes else "AIF's premise cannot be checked"
    r = h["oracle_ratio"]
    return (f"**{aif}, VIF's {_state(a['verdict'], e['verdict'])}; " + (
        f"the headroom of the best AIF ratio per sample is {ci_text(r)}.**" if r["verdict"] != NOT_MEASURED
        else "the headroom is not measured.**"))


def paragraph(d) -> str:
    """What this model can and cannot show, computed from the premises' verdicts; opens with `lead`."""
    P = d["premises"]
    s, t, a, e, h = (P[k] for k in KEYS)
    boxes = s["verdict"] != NO_BOXES
    if not boxes:
        aif = "No sample has evidence boxes, so AIF's premises cannot be checked."
    else:
        seen = (f"When the model answers wrongly, {s['wrong_share']['mean']:.2f} of its answer-position attention over "
                f"vision lies in the evidence boxes (area share {s['area_share']['mean']:.2f}; lift {ci_text(s)}, "
                f"{s['verdict']}" + (f"; right answers {s['right_share']['mean']:.2f}, wrong − right "
                                     f"{ci_text(s['wrong_minus_right'])})" if s["right_share"]["n"] else "; none right)")
                if s["wrong_share"]["n"] else "The model answers no sample wrongly, so 'seeing but not perceiving' "
                                              "cannot be tested")
        aif = (f"{seen}, and evidence tokens rank below background tokens in cross-layer entropy with probability "
               f"{ci_text(t)} (0.5 = no signal; {t['verdict']}).")
    ea, la = d["depth"]["early"], d["depth"]["late"]
    vif = (f"From layers {_span(ea)} to {_span(la)} the answer position's share of attention on vision changes by "
           f"{ci_text(a)} ({a['verdict']}) and its entropy over vision by {ci_text(e)} nats ({e['verdict']}).")
    om = [h[m] for m in ("oracle_ratio", "oracle_box")]
    head = ("The oracle ratio and oracle box mask are not measured (no oracle_masks.json)."
            if om[0]["verdict"] == NOT_MEASURED else
            f"Against the plain model ({om[0]['n']} samples), the oracle ratio (AIF's best ratio per sample, answer "
            f"known: a bound on any ratio rule) gains {ci_text(om[0])}, the oracle box mask {ci_text(om[1])}.")
    x = h["oracle_map"]
    head += (" The oracle map (VIF): not measured." if x["verdict"] == NOT_MEASURED else
             f" The oracle map (VIF) vs {x['versus']}: {ci_text(x)} ({x['n']} samples).")
    unshown = [PHRASE[k] for k in KEYS if P[k]["verdict"] in (FAILS, UNSURE)]
    end = (f"This model does not show {'; '.join(unshown)}: a method built to exploit or repair that cannot be "
           "tested on it." if unshown else "")
    return " ".join(x for x in (lead(d), aif, vif, head, end) if x)


def refer(d, section: str) -> str:
    """One sentence for a REPORT section: the premises it rests on and their verdicts."""
    keys = REFERS.get(section)
    if not keys:
        return ""
    P = d["premises"]
    parts = [f"{SHORT[k]} {P[k]['verdict']}" + (f" ({ci_text(P[k])})" if P[k].get("n") else "") for k in keys]
    return ("Premises ([the papers' premises, measured](#the-papers-premises-measured)): " + "; ".join(parts) + ".")


def table(d) -> str:
    """Markdown: premises × (overall with interval, verdict, per family), then the per-layer curves."""
    P = d["premises"]
    fams = sorted(set(d["families"]))
    fams = fams if len(fams) > 1 else []
    lines = ["| premise | statistic | all [95% CI] | verdict |" + "".join(f" {f} |" for f in fams),
             "|---|---|---|---|" + "---:|" * len(fams)]
    for k in KEYS:
        p = P[k]
        val = ci_text(p) if p.get("n") else "–"
        fmt = "{:+.2f}" if p.get("reference", 0.0) == 0.0 else "{:.2f}"
        cells = [f"{fmt.format(v['mean'])} {MARK.get(v['verdict'], '?')}" if v["n"] else "–"
                 for v in (p.get("by_family", {}).get(f, {"n": 0}) for f in fams)]
        lines.append(f"| {SHORT[k]} | {p['statistic']} | {val} | {p['verdict']} |" + "".join(f" {c} |" for c in cells))
    L = d["layers"]
    rows = [("evidence share, wrong answers", P["seeing"]["per_layer"]["wrong"]),
            ("evidence share, right answers", P["seeing"]["per_layer"]["right"]),
            ("share of attention on vision", P["attenuation_share"]["per_layer"]),
            ("entropy over vision (nats)", P["attenuation_entropy"]["per_layer"])]
    lines += ["", "| per layer (answer position) | " + " | ".join(map(str, L)) + " |", "|---|" + "---:|" * len(L)]
    for name, r in rows:
        lines.append(f"| {name} | " + " | ".join(f"{m:.2f}" if np.isfinite(m) else "–" for m in record.arr(r["mean"]))
                     + " |")
    return "\n".join(lines)


def finding(d) -> str:
    """REPORT's premises section: the computed paragraph, then how to read the table."""
    return (paragraph(d) + " Each premise's verdict with its 95% interval (✓ holds, ✗ does not hold, ? inconclusive), "
            "per family and per layer, is in the table below; the statistics are defined in `analyses/premises.py`.")


ANALYSIS = Analysis(NAME, __doc__, title="The papers' premises, measured", measure=measure, plot=plot,
                    finding=finding, limit=600, batch_size=100, main_limit=1200, notebook_limit=24,
                    options=(Option("headroom_from", None, "folder holding oracle_masks.json / vif_ablation.json "
                                    "(default: --out)"),))
compute, run, main = ANALYSIS.compute, ANALYSIS.run, ANALYSIS.main

if __name__ == "__main__":
    main()
