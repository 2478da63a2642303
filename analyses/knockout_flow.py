"""Cross-modal information flow by attention knockout over windows of layers (Zhang et al.'s figure): where
does the answer need vision → question, vision → last and question → last attention?

    python -m analyses.knockout_flow --model toy --data toy --limit 96 --seed 0 --out figures

For each edge set and each window of k consecutive decoder layers [l, l + k) (`--window`, default a quarter of
the layers), every attention edge from the destination's queries to the source's keys is cut in those layers
only (`interp.knockout_flow`), and the relative change (p_cut − p) / p of the probability of the model's own
answer at the last prompt position is measured. Only samples the model answers right are kept (as Zhang et
al. do). Curves: mean over samples with a 95% bootstrap band. The peak of a flow is the window with the most
negative mean change; its 95% interval comes from resampling the samples. Writes OUT/knockout_flow.{json,png,pdf}.
"""

from __future__ import annotations

import numpy as np

from analyses import batching, record
from analyses.findings import verdict
from analyses.registry import Analysis, Option
from interp.stats import bootstrap_mean

NAME = "knockout_flow"
COLORS = {"vision → question": "#0173b2", "vision → last": "#029e73", "question → last": "#de8f05"}
PAIR = ("vision → question", "question → last")  # the two flows whose peaks the verdict compares
BOOT = 2000




def measure(vlm, samples, cfg, *, window=None) -> dict:
    import interp
    from interp.data.scoring import score

    rows, correct, fams = [], [], []
    flow = None
    for chunk in batching.batches(samples, cfg.batch_size, progress=cfg.progress, desc=NAME):
        batch = batching.prepare(vlm, chunk)
        flow = interp.knockout_flow(vlm, batch, window=window)
        words = vlm.tokenizer.batch_decode(flow.targets[:, None])
        correct += [bool(score(s, w.strip(), cfg.metric) >= 0.5) for s, w in zip(chunk, words)]
        rows.append(flow.rows.numpy())  # [E, W, B]
        fams += [s.family for s in chunk]
    rel = np.concatenate(rows, 2).transpose(2, 0, 1)  # [N, E, W]
    keep = np.array(correct)
    used = rel[keep] if keep.any() else rel
    return {"n": int(len(used)), "n_all": len(samples), "kept": "answered right" if keep.any() else
            "all (the model answers none right)", "edges": flow.edges, "starts": flow.starts,
            "window": flow.window, "rows": used, "families": [f for f, k in zip(fams, keep) if k or not keep.any()],
            "peaks": peaks(used, flow.edges, flow.starts, cfg.seed)}


def peaks(rows, edges, starts, seed: int = 0) -> dict:
    """Per edge set: the window start with the most negative mean change, and its bootstrap distribution over
    samples (percentile 95% interval); the difference question → last − vision → question of the peaks."""
    r = np.asarray(rows, dtype=np.float64)  # [N, E, W]
    if not len(r):
        return {}
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(r), size=(BOOT, len(r)))
    boot = np.stack([np.asarray(starts)[np.nanmean(r[i], 0).argmin(-1)] for i in idx])  # [BOOT, E]
    out = {e: {"peak": int(starts[int(np.nanmean(r, 0)[k].argmin())]), "min_change": float(np.nanmean(r, 0)[k].min()),
               "ci": [float(x) for x in np.quantile(boot[:, k], [0.025, 0.975])]} for k, e in enumerate(edges)}
    if all(e in edges for e in PAIR):
        d = boot[:, edges.index(PAIR[1])] - boot[:, edges.index(PAIR[0])]
        out["difference"] = {"value": out[PAIR[1]]["peak"] - out[PAIR[0]]["peak"],
                             "ci": [float(x) for x in np.quantile(d, [0.025, 0.975])],
                             "share_same": float((d == 0).mean())}
    return out


def finding(d) -> str:
    """The REPORT sentence, from the JSON alone: do vision → question and question → last peak in different
    windows, vision → question first (Zhang et al. on LLaVA)? Held when the bootstrap interval of the
    difference of the peaks lies above 0; did not hold when it lies below 0 or every resample puts them together."""
    pk = d["peaks"]
    if "difference" not in pk:
        return "Attention knockout: the two flows compared were not measured — **inconclusive**."
    a, b, diff = pk[PAIR[0]], pk[PAIR[1]], pk["difference"]
    lo, hi = diff["ci"]
    held = True if lo > 0 else False if (hi < 0 or diff["share_same"] == 1.0) else None
    k = d["window"]
    w = lambda s: f"layers {s}–{s + k - 1}" if k > 1 else f"layer {s}"  # noqa: E731
    vl = pk.get("vision → last")
    extra = f" vision → last peaks at {w(vl['peak'])} ({100 * vl['min_change']:+.0f}%)." if vl else ""
    return (f"Zhang et al. (LLaVA): vision → question flow acts in shallower layers than question → last. Here "
            f"({d['n']} samples, {d['kept']}; windows of {k} layer{'s' if k > 1 else ''}): vision → question peaks at "
            f"{w(a['peak'])} "
            f"({100 * a['min_change']:+.0f}% p(answer); peak window start 95% CI "
            f"[{a['ci'][0]:.0f}, {a['ci'][1]:.0f}]), "
            f"question → last at {w(b['peak'])} ({100 * b['min_change']:+.0f}%; [{b['ci'][0]:.0f}, {b['ci'][1]:.0f}]); "
            f"difference of the peaks {diff['value']:+d} layers [{lo:+.0f}, {hi:+.0f}] "
            f"({100 * diff['share_same']:.0f}% of resamples put them in the same window) — {verdict(held)}.{extra}")


def plot(data, out_dir=None) -> list:
    """Redraw OUT/knockout_flow.{png,pdf} from the JSON (path or dict) alone."""
    import interp.plot as ip

    data, here = record.read_json(data)
    out_dir = out_dir or here
    ip.style()
    r = 100 * record.arr(data["rows"])  # [N, E, W] percent
    starts, k = data["starts"], data["window"]
    fig, ax = ip.figure(width="column", aspect=0.8)
    ax.axhline(0, color="#555555", lw=0.7, ls="--")
    for e, name in enumerate(data["edges"]):
        if not len(r):
            break
        m, lo, hi = bootstrap_mean(r[:, e], seed=data["seed"], axis=0)  # [W] each
        ip.layer_curve(ax, starts, mean=m, lo=lo, hi=hi, label=name, color=COLORS.get(name))
        p = data["peaks"].get(name)
        if p:
            ax.plot([p["peak"]], [100 * p["min_change"]], marker="v", color=COLORS.get(name), ms=5, zorder=5)
    ip.integer_ticks(ax, starts)
    ax.set_xticks(starts, [f"{s}–{s + k - 1}" for s in starts], rotation=45 if len(starts) > 8 else 0)
    ax.set_xlabel(f"knocked-out layers (window of {k})")
    ax.set_ylabel("change in p(answer) at the last position, %")
    ax.legend(title="edges cut (source → destination)", loc="lower right")
    ax.set_title(ip.model_title("Attention knockout over layer windows (95% bootstrap bands; ▼ peak)",
                                data["model_label"], data["n"]))
    return ip.save(fig, out_dir, NAME)


ANALYSIS = Analysis(NAME, __doc__, title="Attention knockout over layer windows", measure=measure, plot=plot,
                    finding=finding, limit=48, batch_size=16, main_limit=96, notebook_limit=16,
                    claim="Zhang et al.: vision → question acts in shallower layers than question → last",
                    options=(Option("window", None, "layers per window (default: a quarter of them)", int),))
compute, run, main = ANALYSIS.compute, ANALYSIS.run, ANALYSIS.main

if __name__ == "__main__":
    main()
