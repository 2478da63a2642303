"""Does VIF's learned map add anything beyond the extra fine-tuning? Seven variants on the same held-out
scenes: the base model; fine-tune only; VIF on the frozen base; VIF joint (paper / reference softmax
normalisation); a uniform map and the oracle map (evidence boxes) injected with joint fine-tuning.

    python -m analyses.vif_ablation --model toy --data toy --limit 400 --seed 0 --out figures

The trained variants are the shipped checkpoints interp/vif/checkpoints/ablation/<variant>/ (same scenes, steps,
seed and learning rates for each; trained once by `python -m analyses.vif_ablation_train`, their cards give
the exact commands); this analysis only evaluates them. Another model (`--model zoo:llava`, the tests) has no
shipped variants: each is then trained in-process for `--train-steps` steps on toy scenes (a smoke path).
Reported: accuracy per family; the paired difference against fine-tune only (the right control) with a 95%
bootstrap interval and exact McNemar p; the injected map's mass in the evidence boxes against the boxes'
area share, its entropy; the KL trajectory of training; the answer position's attention entropy over vision
per layer (does the toy show VIF's attenuation at all?). All variants use the paper's settings; options the
paper does not have are off: prior mean at inference (the reference samples z), injection at prefill only
(the reference's choice), no KL annealing, no free bits. Writes OUT/vif_ablation.{json,png,pdf}.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from analyses import batching, loading, record, tables
from analyses.registry import Analysis, Option
from interp.stats import mean_ci

NAME = "vif_ablation"
ORDER = ("base", "finetune", "vif_frozen", "vif_joint", "vif_joint_ref", "uniform_map", "oracle_map")
LABELS = {"base": "base model (no training)", "finetune": "fine-tune only", "vif_frozen": "VIF, frozen base",
          "vif_joint": "VIF joint (paper norm.)", "vif_joint_ref": "VIF joint (reference softmax norm.)",
          "uniform_map": "uniform map + fine-tune", "oracle_map": "oracle map (boxes) + fine-tune"}
COLORS = {"base": "#4d4d4d", "finetune": "#949494", "vif_frozen": "#cc78bc", "vif_joint": "#0173b2",
          "vif_joint_ref": "#56b4e9", "uniform_map": "#de8f05", "oracle_map": "#029e73"}
CONTROL = "finetune"
REPO = Path(__file__).resolve().parent.parent
SHIPPED = REPO / "interp" / "vif" / "checkpoints" / "ablation"
SHORT = {"vif_frozen": "VIF\nfrozen", "vif_joint": "VIF\njoint", "vif_joint_ref": "VIF\nj. ref",
         "uniform_map": "unif.\nmap", "oracle_map": "oracle\nmap"}
THIN = 10  # steps between the KL-trajectory points kept in the JSON


def _variants(vlm, cfg, variants, train_steps):
    """{variant: (vlm, intervention, card, log)}: the shipped checkpoints, or in-process smoke runs."""
    import interp

    root = Path(variants) if variants else (SHIPPED if cfg.model == "toy" else None)
    kw = {}
    if cfg.dtype is not None:
        import torch

        kw["dtype"] = getattr(torch, cfg.dtype)
    if cfg.device is not None:
        kw["device"] = cfg.device
    if root is None:
        root = _train_smoke(cfg, train_steps)
    out = {"base": (vlm, None, {"what": LABELS["base"]}, None)}
    for v in ORDER[1:]:
        d = root / v
        if not d.exists():
            raise FileNotFoundError(f"{d} is missing: train the variants with python -m analyses.vif_ablation_train")
        if not (d / "base.json").exists():
            vv, iv = vlm, interp.VIF.load(d, vlm)
        elif cfg.model == "toy":
            vv, iv = interp.vif.load_joint(d, **kw)
        else:
            vv, iv = _apply(d, cfg)
        card = json.loads((d / "card.json").read_text()) if (d / "card.json").exists() else {}
        log = json.loads((d / "log.json").read_text()) if (d / "log.json").exists() else None
        out[v] = (vv, iv, card, log)
    return out, str(root)


def _fresh(cfg):
    import interp

    if cfg.model.startswith("zoo:"):
        return interp.zoo.tiny(cfg.model[4:], seed=cfg.seed)
    return interp.toy.load() if cfg.model == "toy" else interp.load(cfg.model)


def _apply(d, cfg):
    """A joint checkpoint on a fresh copy of a non-toy model (load_joint needs a saved source)."""
    import interp
    from interp.vif.joint import read_base

    vlm = interp.vif.apply_base(d, _fresh(cfg))
    if (d / "vif.json").exists():
        return vlm, interp.VIF.load(d, vlm)
    info = read_base(d)
    return vlm, (interp.vif.FixedMap(**info["inject"]) if info.get("inject") else None)


def _train_smoke(cfg, steps: int) -> Path:
    """Each variant trained in-process for `steps` steps on toy scenes (no shipped variants), under OUT (or a
    temporary folder)."""
    import tempfile

    import interp
    from analyses.vif_ablation_train import compact_log
    from interp.vif.trainer import toy_stream

    root = Path(cfg.out or tempfile.mkdtemp(prefix="vif_ablation_")) / "vif_ablation_runs"
    specs = {"finetune": ("joint", "none", "paper"), "vif_frozen": ("frozen", "cvae", "paper"),
             "vif_joint": ("joint", "cvae", "paper"), "vif_joint_ref": ("joint", "cvae", "reference"),
             "uniform_map": ("joint", "uniform", "paper"), "oracle_map": ("joint", "oracle", "paper")}
    for v, (base, focus, norm) in specs.items():
        vlm = _fresh(cfg)
        vif = (interp.VIF.build(vlm, seed=cfg.seed, normalize=norm, width=32, latent=8, n_queries=4,
                                n_components=4) if focus == "cvae" else None)
        train = interp.vif.TrainConfig(steps=steps, batch_size=2, warmup=1, save_every=0, base=base, focus=focus,
                                       seed=cfg.seed)
        interp.vif.train(vlm, toy_stream(cfg.seed), train, out=root / v, vif=vif, progress=False)
        (root / v / "log.json").write_text(json.dumps(compact_log(root / v)))
        (root / v / "card.json").write_text(json.dumps({"what": LABELS[v], "steps": steps,
                                                        "command": f"in-process smoke run ({cfg.model})"}))
    return root


def _band(x) -> dict:
    """mean and 95% t-interval of a 1-D sample (NaN left out; none finite: NaN, written null)."""
    m, lo, hi = mean_ci(x)
    return {"mean": m, "ci": [lo, hi]}


def measure(vlm, samples, cfg, *, variants=None, train_steps=2) -> dict:
    import interp
    from interp.vif.diagnostics import evidence_mask, map_stats
    from interp.vif.trainer import _with_samples

    samples = loading.with_boxes(samples, NAME)
    runs, root = _variants(vlm, cfg, variants, train_steps)
    repo = str(REPO) + os.sep  # the JSON names the checkpoints relative to the repository
    root = root[len(repo):] if root.startswith(repo) else root
    scores = {v: [] for v in ORDER}
    mass, area, ent = ({v: [] for v in ORDER} for _ in range(3))
    attn = {v: [] for v in ORDER}  # [B, L] entropy of the answer position's attention over vision
    gk = dict(max_new_tokens=cfg.max_new_tokens, metric=cfg.metric)
    for chunk in batching.batches(samples, cfg.batch_size, progress=cfg.progress, desc=NAME):
        batch = batching.prepare(vlm, chunk)  # one processor: the same batch serves every variant
        ev, has = evidence_mask(batch.layout, chunk)
        for v, (vv, iv, _, _) in runs.items():
            ivs = _with_samples(iv, chunk)
            _, sc, out = batching.generate_scores(vv, batch, chunk, ivs, **gk)
            scores[v] += sc
            st = interp.capture(vv, batch, queries="last", interventions=ivs)
            attn[v].append(st.vision_entropy.float().T.numpy())  # [B, L]
            if iv is not None:  # the map injected at prefill (VIF: prior mean)
                r = map_stats(out.diagnostics[iv.name]["maps"], ev, has, rows=True)
                mass[v] += r["map_mass"].tolist()
                area[v] += r["box_area"].tolist()
                ent[v] += r["map_entropy"].tolist()
    summary, paired = tables.summarize_methods(samples, scores, ORDER, cfg.seed, baseline=CONTROL)
    _, vs_base = tables.summarize_methods(samples, scores, ORDER, cfg.seed, baseline="base")
    maps_out = {}
    for v in ORDER:
        if mass[v]:
            d = np.asarray(mass[v]) - np.asarray(area[v])
            maps_out[v] = {"mass": _band(mass[v]), "area": _band(area[v]), "entropy": _band(ent[v]),
                           "mass_minus_area": _band(d)}
    attention = {}
    for v in ORDER:
        e = np.concatenate(attn[v], 0)  # [N, L]
        L = e.shape[1]
        third = max(1, (L - 1) // 3)
        early, late = np.nanmean(e[:, 1:1 + third], 1), np.nanmean(e[:, L - third:], 1)
        attention[v] = {"per_layer": np.nanmean(e, 0), "late_minus_early": _band(late - early),
                        "early_layers": [1, third], "late_layers": [L - third, L - 1]}
    logs, cards = {}, {}
    for v, (_, _, card, log) in runs.items():
        cards[v] = card
        if log:
            keep = [i for i, s in enumerate(log["step"]) if s % THIN == 0 or s == 1 or i == len(log["step"]) - 1]
            logs[v] = {k: ([log[k][i] for i in keep] if isinstance(log[k], list) and len(log[k]) == len(log["step"])
                           else log[k]) for k in log}
            if "kl" in log:
                tail = [x for x in log["kl"][-50:] if x is not None]
                logs[v]["kl_final"] = float(np.mean(tail)) if tail else None
    n_vis = int(batch.layout.num_vision[0])
    return {"n": len(samples), "variants": list(ORDER), "methods": list(ORDER), "labels": LABELS, "control": CONTROL,
            "checkpoints": root, "scores": scores, "summary": summary, "paired_vs_finetune": paired,
            "paired_vs_base": vs_base, "maps": maps_out, "uniform_entropy": float(np.log(n_vis)),
            "attention": attention, "logs": logs, "cards": cards,
            "pairs": [list(p) for p in runs["vif_joint"][1].pairs_for(runs["vif_joint"][0])],
            "options": {"inference": "prior mean (reference: z sampled)", "injection": "prefill only (reference)",
                        "kl_anneal": "off (not in the paper)", "free_bits": "off (not in the paper)"},
            "families": [s.family for s in samples], "ids": [s.id for s in samples],
            "table": table({"summary": summary, "paired_vs_finetune": paired, "maps": maps_out, "logs": logs})}


def table(d) -> str:
    """Markdown: accuracy per family, overall [CI], Δ vs fine-tune only [CI], McNemar p, map mass vs area,
    map entropy, KL at the end of training."""
    summ = d["summary"]
    fams = list(summ[ORDER[0]]["by_family"])
    head = ("| variant | " + " | ".join(f.replace("_", " ") for f in fams) + " | all [95% CI] | Δ vs fine-tune "
            "only [95% CI] | McNemar p | map mass in boxes (area) | map entropy (nats) | KL at the end |")
    lines = [head, "|---|" + "---:|" * (len(fams) + 1) + "---|---:|---|---:|---:|"]
    for v in ORDER:
        s = summ[v]
        cells = [f"{s['by_family'][f]['accuracy']:.3f}" for f in fams]
        p = d["paired_vs_finetune"].get(v)
        delta = f"{p['difference']:+.3f} [{p['ci'][0]:+.3f}, {p['ci'][1]:+.3f}]" if p else "(control)"
        pv = f"{p['p_value']:.3g}" if p else ""
        m = d["maps"].get(v)
        mm = f"{m['mass']['mean']:.3f} ({m['area']['mean']:.3f})" if m else "–"
        me = f"{m['entropy']['mean']:.2f}" if m else "–"
        kl = (d["logs"].get(v) or {}).get("kl_final")
        lines.append(f"| {LABELS[v]} | " + " | ".join(cells) + f" | {s['accuracy']:.3f} [{s['ci'][0]:.3f}, "
                     f"{s['ci'][1]:.3f}] | {delta} | {pv} | {mm} | {me} | {'–' if kl is None else f'{kl:.2g}'} |")
    return "\n".join(lines)


def _verdict(lo, hi, point, worse="it lowers accuracy") -> str:
    """A gain claim from a paired 95% interval: held (lo > 0); did not hold (hi < 0, or an estimate ≤ 0 whose
    interval spans 0: no gain seen); inconclusive (an estimate > 0 whose interval spans 0)."""
    if lo > 0:
        return "**held**"
    if hi < 0:
        return f"**did not hold** ({worse})"
    if point <= 0:
        return "**did not hold**"
    return "**inconclusive**"


def _lift(m) -> str:
    x = m["mass_minus_area"]
    return _verdict(x["ci"][0], x["ci"][1], x["mean"], "less than the area share")


def finding(d) -> str:
    """The REPORT's paragraph, every number and verdict from the JSON."""
    p, s, m = d["paired_vs_finetune"], d["summary"], d["maps"]

    def pair(v):
        x = p[v]
        return f"{x['difference']:+.3f} [{x['ci'][0]:+.3f}, {x['ci'][1]:+.3f}] (McNemar p = {x['p_value']:.2g})"

    def where(v):
        x = m[v]
        return (f"{x['mass']['mean']:.3f} of the map in the boxes (area share {x['area']['mean']:.3f}, "
                f"×{x['mass']['mean'] / max(x['area']['mean'], 1e-12):.2f}; difference "
                f"{x['mass_minus_area']['mean']:+.3f} [{x['mass_minus_area']['ci'][0]:+.3f}, "
                f"{x['mass_minus_area']['ci'][1]:+.3f}]), entropy {x['entropy']['mean']:.2f} nats")

    vifs = [v for v in ("vif_joint", "vif_joint_ref", "vif_frozen") if v in p]
    parts = [f"Against fine-tune only ({s[CONTROL]['accuracy']:.3f}; base model {s['base']['accuracy']:.3f}, "
             f"fine-tuning vs base {d['paired_vs_base'][CONTROL]['difference']:+.3f}), the learned map adds: "
             + "; ".join(f"{LABELS[v]} {pair(v)} {_verdict(p[v]['ci'][0], p[v]['ci'][1], p[v]['difference'])}"
                         for v in vifs) + "."]
    parts.append(f"Controls: uniform map {pair('uniform_map')}; oracle map {pair('oracle_map')} "
                 + ("— the toy rewards a map on the evidence, so the learned map is what falls short."
                    if p["oracle_map"]["ci"][0] > 0 else
                    "— even the evidence boxes as a map add nothing detectable here, so this testbed cannot "
                    "reward a better map."))
    parts.append("Where the maps sit: " + "; ".join(f"{LABELS[v]} {where(v)}" for v in vifs if v in m)
                 + f" (uniform {d['uniform_entropy']:.2f}); the learned map puts more than the area share on the "
                 "evidence: " + ", ".join(f"{v} {_lift(m[v])}" for v in vifs if v in m)
                 + "; a near-uniform map can pass this by a hair: read the ratio and the entropy.")
    kl = {v: d["logs"].get(v, {}).get("kl_final") for v in vifs}
    fired = {v: d["logs"].get(v, {}).get("collapse") for v in vifs}
    parts.append("KL(posterior ‖ prior) over the last 50 training steps: " + ", ".join(
        f"{v} {k:.2g}" + (f" (collapse warning at step {fired[v][0]})" if fired[v] else "")
        for v, k in kl.items() if k is not None) + ".")
    a = d["attention"]["base"]["late_minus_early"]
    att = a["ci"][0] is not None and a["ci"][0] > 0
    parts.append(f"Attenuation on the base model (answer position's attention entropy over vision, last third of "
                 f"layers minus layers {d['attention']['base']['early_layers'][0]}–"
                 f"{d['attention']['base']['early_layers'][1]}): {a['mean']:+.3f} [{a['ci'][0]:+.3f}, "
                 f"{a['ci'][1]:+.3f}] nats — "
                 + ("the toy shows it." if att else "**the toy does not show attenuation**, the phenomenon VIF is "
                    "built to fix: a finding about this testbed, and a reason its VIF numbers cannot speak for "
                    "the paper's models."))
    o = d["options"]
    return " ".join(parts) + (f" Settings: inference {o['inference']}; injection {o['injection']}; KL annealing "
                              f"{o['kl_anneal']}; free bits {o['free_bits']}. Checkpoints: {d['checkpoints']}.")


def plot(data, out_dir=None) -> list:
    """Redraw OUT/vif_ablation.{png,pdf} from the JSON (path or dict) alone."""
    import matplotlib.pyplot as plt

    import interp.plot as ip

    data, here = record.read_json(data)
    out_dir = out_dir or here
    ip.style()
    fig, axes = plt.subplots(2, 3, figsize=(ip.FULL, 5.2), gridspec_kw={"hspace": 0.62, "wspace": 0.62,
                                                                         "width_ratios": [1.15, 1.0, 1.0]})
    (a_acc, a_d, a_map), (a_kl, a_mass, a_att) = axes
    order = data["variants"]
    y = np.arange(len(order))[::-1]
    summ, pair = data["summary"], data["paired_vs_finetune"]
    for yi, v in zip(y, order):
        s = summ[v]
        a_acc.barh(yi, s["accuracy"], color=COLORS[v], height=0.7)
        a_acc.errorbar(s["accuracy"], yi, xerr=[[s["accuracy"] - s["ci"][0]], [s["ci"][1] - s["accuracy"]]],
                       fmt="none", ecolor="#222222", elinewidth=0.7, capsize=1.5)
        if v in pair:
            p = pair[v]
            a_d.errorbar(p["difference"], yi, xerr=[[p["difference"] - p["ci"][0]], [p["ci"][1] - p["difference"]]],
                         fmt="o", color=COLORS[v], ms=3.5, elinewidth=1.0, capsize=1.5)
            pv = "p<0.001" if p["p_value"] < 1e-3 else f"p={p['p_value']:.2g}"
            a_d.text(1.02, yi, pv, transform=a_d.get_yaxis_transform(), va="center", fontsize=5.5)
    lo = min(summ[v]["ci"][0] for v in order)
    a_acc.set_xlim(max(0.0, lo - 0.05), min(1.0, max(summ[v]["ci"][1] for v in order) + 0.03))
    a_acc.axvline(summ[data["control"]]["accuracy"], color="#555555", ls="--", lw=0.7)
    a_acc.set_yticks(y)
    a_acc.set_yticklabels([data["labels"][v] for v in order], fontsize=6)
    a_acc.set_xlabel("accuracy (95% CI)")
    a_acc.set_title("(a) accuracy", fontsize=7)
    a_d.axvline(0, color="#555555", lw=0.7)
    a_d.set_yticks(y)
    a_d.set_yticklabels([])
    a_d.set_ylim(a_acc.get_ylim())
    a_d.set_xlabel("Δ accuracy vs fine-tune only")
    a_d.set_title("(b) paired difference, 95% CI", fontsize=7)
    mv = [v for v in order if v in data["maps"]]
    x = np.arange(len(mv))
    for xi, v in zip(x, mv):
        m = data["maps"][v]
        a_map.bar(xi, m["mass"]["mean"], color=COLORS[v], width=0.7)
        a_map.errorbar(xi, m["mass"]["mean"], yerr=[[m["mass"]["mean"] - m["mass"]["ci"][0]],
                                                    [m["mass"]["ci"][1] - m["mass"]["mean"]]],
                       fmt="none", ecolor="#222222", elinewidth=0.7, capsize=1.5)
        a_map.plot([xi - 0.4, xi + 0.4], [m["area"]["mean"]] * 2, color="#000000", lw=1.0,
                   label="area share of the boxes" if xi == 0 else None)
    a_map.set_xticks(x)
    a_map.set_xticklabels([SHORT[v] + f"\n{data['maps'][v]['entropy']['mean']:.2f}" for v in mv], fontsize=4.8)
    a_map.set_ylim(0, 1.12)
    a_map.set_ylabel("map mass in the boxes")
    a_map.set_title(f"(c) injected map; below: entropy (uniform {data['uniform_entropy']:.2f})", fontsize=7)
    a_map.legend(fontsize=5.5, loc="upper left", frameon=False)
    a_map.grid(axis="x", visible=False)
    areas = []
    for v, log in data["logs"].items():
        if "kl" in log:
            kl = np.asarray(record.arr(log["kl"]), float)
            a_kl.plot(log["step"], np.maximum(kl, 1e-6), color=COLORS[v], lw=0.9, label=data["labels"][v])
        if "map_mass" in log and v != "oracle_map":  # the oracle's mass is 1 by construction
            a_mass.plot(log["step"], record.arr(log["map_mass"]), color=COLORS[v], lw=0.8, label=data["labels"][v])
            areas += list(record.arr(log.get("box_area", [])))
    if areas:  # the training batches' box share (what a uniform map puts in the boxes)
        a_mass.axhline(float(np.nanmean(areas)), color="#000000", ls="--", lw=0.7, label="area share")
    a_kl.set_yscale("log")
    a_kl.set_xlabel("training step")
    a_kl.set_ylabel("KL(posterior ‖ prior), nats")
    a_kl.set_title("(d) KL during training", fontsize=7)

    a_mass.set_xlabel("training step")
    a_mass.set_ylabel("map mass in boxes (train)")
    a_mass.set_title("(e) posterior map on the evidence", fontsize=7)
    a_mass.legend(handles=a_mass.get_lines()[-1:], fontsize=5.2, frameon=False, loc="upper right")
    for v in ("base", "finetune", "vif_joint", "oracle_map"):
        per = np.asarray(record.arr(data["attention"][v]["per_layer"]), float)
        a_att.plot(np.arange(len(per)), per, marker="o", ms=2.2, lw=0.9, color=COLORS[v], label=data["labels"][v])
    a_att.axhline(data["uniform_entropy"], color="#555555", ls="--", lw=0.7, label="uniform")
    a_att.set_xlabel("layer")
    a_att.set_ylabel("attention entropy over vision (nats)")
    at = data["attention"]["base"]["late_minus_early"]
    a_att.set_title(f"(f) attenuation? base late−early {at['mean']:+.2f}", fontsize=7)
    a_att.legend(handles=a_att.get_lines()[-1:], fontsize=5.2, frameon=False)
    fig.suptitle(f"VIF ablation: does the learned map add anything beyond fine-tuning? {data['model_label']}, "
                 f"n = {data['n']} held-out scenes", fontsize=7.5, y=0.995)
    from matplotlib.patches import Patch

    fig.legend(handles=[Patch(color=COLORS[v], label=data["labels"][v]) for v in order], loc="lower center",
               ncol=4, fontsize=5.8, frameon=False, bbox_to_anchor=(0.5, -0.07))
    fig.text(0.5, -0.12, "Off by default (not in the paper, or not the reference's choice): prior sampling at "
             "inference (prior mean used), injection at every decode step (prefill only),\nKL annealing, free bits. "
             "Same scenes, steps, seed and learning rates for every trained variant.", ha="center", fontsize=5.5)
    return ip.save(fig, out_dir, NAME)


ANALYSIS = Analysis(NAME, __doc__, title="VIF ablation: the focus map vs the extra fine-tuning", measure=measure,
                    plot=plot, finding=finding, limit=400, batch_size=100, main_limit=400, notebook_limit=12,
                    claim="VIF's map adds accuracy beyond fine-tuning (joint · joint ref. · frozen); its map "
                          "favours the evidence (the same three)",
                    options=(Option("variants", None, "folder of trained variants (default for --model toy: "
                                    "interp/vif/checkpoints/ablation; otherwise each is trained in-process for "
                                    "--train-steps steps)"),
                             Option("train_steps", 2, "in-process smoke training steps (no shipped variants)", int)))
compute, run, main = ANALYSIS.compute, ANALYSIS.run, ANALYSIS.main

if __name__ == "__main__":
    main()
