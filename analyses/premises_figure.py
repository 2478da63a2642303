"""The figure of `analyses.premises`, drawn from its JSON alone: (a) evidence share of the answer position's vision
attention, wrong vs right answers, per layer; (b) the token-dynamics AUC per family; (c) the oracles' headroom;
(d, e) the vision share and the entropy over vision per layer, early and late layers shaded; (f) the verdicts."""

from __future__ import annotations

import numpy as np

from analyses import record


def plot(data, out_dir=None) -> list:
    """Redraw OUT/premises.{png,pdf} from the JSON (path or dict) alone."""
    import matplotlib.pyplot as plt

    import interp.plot as ip
    from analyses.premises import KEYS, MARK, NAME, NO_BOXES, NOT_MEASURED, SHORT, VCOLOR, ci_text

    data, here = record.read_json(data)
    out_dir = out_dir or here
    ip.style()
    P, layers = data["premises"], data["layers"]
    fig, axes = ip.figure(3, 2, width="full", aspect=0.86)
    ax = [axes[0, 0], axes[0, 1], axes[1, 0], axes[1, 1], axes[0, 2], axes[1, 2]]  # AIF, VIF; headroom, card

    def title(a, tag, key, what):
        v = P[key]["verdict"]
        a.set_title(f"({tag}) {what}\n{v}" + (f" · {ci_text(P[key], 2)}" if P[key].get("n") else ""),
                    color=VCOLOR.get(v, "k"), fontsize=7.5)

    def curve(a, r, label, color, marker="o"):
        if any(n > 0 for n in r["n"]):
            ip.layer_curve(a, layers, mean=record.arr(r["mean"]), lo=record.arr(r["lo"]), hi=record.arr(r["hi"]),
                           label=label, color=color, marker=marker)

    def empty(a, text):
        a.text(0.5, 0.5, text, ha="center", va="center", transform=a.transAxes, color="#777777")

    s = P["seeing"]
    if s["verdict"] == NO_BOXES:
        empty(ax[0], "no boxes in the data")
    else:
        curve(ax[0], s["per_layer"]["wrong"], f"wrong answers (n = {s['wrong_share']['n']})", ip.COLORS["highest"])
        curve(ax[0], s["per_layer"]["right"], f"right answers (n = {s['right_share']['n']})", ip.COLORS["answer"], "s")
        ax[0].axhline(s["area_share"]["mean"], color="#777777", ls="--", lw=0.8,
                      label=f"area share ({s['area_share']['mean']:.2f})")
        top = np.nanmax(record.arr([s["per_layer"][g]["hi"] for g in ("wrong", "right")]))
        ax[0].set_ylim(0, min(1.0, 1.9 * top) if np.isfinite(top) else 1.0)
        ax[0].legend(loc="upper center", fontsize=5.5, handlelength=1.5)
    ax[0].set_ylabel("evidence share of the\nattention over vision (0–1)")
    title(ax[0], "a", "seeing", "AIF: seeing, not perceiving")

    t = P["token_dynamics"]
    if t["verdict"] == NO_BOXES:
        empty(ax[1], "no boxes in the data")
    else:
        fams = [f for f in t["by_family"]] if len(t["by_family"]) > 1 else []
        bs = [t["by_family"][f] for f in fams] + [t]
        auc = tuple(record.arr(v) for v in zip(*[(b["mean"], *b["ci"]) for b in bs]))  # (mean, lo, hi) [G]
        ip.bars(ax[1], [f.replace("_", " ") for f in fams] + ["all"], {"AUC": auc},
                colors={"AUC": ip.COLORS["low_entropy"]}, ylim=(0, 1.05))
        ax[1].axhline(0.5, color="#777777", ls="--", lw=0.8)
        ax[1].tick_params(axis="x", labelsize=5.5, labelrotation=35)
        plt.setp(ax[1].get_xticklabels(), ha="right", rotation_mode="anchor")
        ax[1].set_xlabel("question family")
    ax[1].set_ylabel("P(entropy of evidence <\nof background; 0.5 = chance)")
    title(ax[1], "b", "token_dynamics", "AIF: evidence tokens low-entropy")

    early, late = data["depth"]["early"], data["depth"]["late"]
    for a, key, what, ylabel in ((ax[2], "attenuation_share", "VIF: vision share falls",
                                  "attention on vision\n(share of the row, 0–1)"),
                                 (ax[3], "attenuation_entropy", "VIF: vision entropy rises",
                                  "entropy over vision\ntokens (nats)")):
        curve(a, P[key]["per_layer"], "answer position, mean", ip.COLORS["answer"])
        for ls, lab in ((early, "early"), (late, "late")):
            if ls:
                a.axvspan(ls[0] - 0.4, ls[-1] + 0.4, color="#dddddd", alpha=0.5, lw=0)
                a.text((ls[0] + ls[-1]) / 2, 0.98, lab, transform=a.get_xaxis_transform(), ha="center", va="top",
                       fontsize=6)
        a.set_xlabel("decoder layer")
        a.set_ylabel(ylabel)
        ip.integer_ticks(a, layers)
        title(a, "d" if a is ax[2] else "e", key, what)
    ax[0].set_xlabel("decoder layer")
    ip.integer_ticks(ax[0], layers)
    nv = float(np.nanmedian(record.arr(data["num_vision"])))
    ax[3].axhline(np.log(nv), color="#777777", ls="--", lw=0.8, label=f"uniform (log {nv:.0f})")
    ax[2].set_ylim(0, 1.02)
    ax[3].set_ylim(0, 1.18 * max(np.log(nv), np.nanmax(record.arr(P["attenuation_entropy"]["per_layer"]["hi"]))))
    ax[3].legend(loc="lower right", fontsize=5.5)

    h = P["headroom"]
    names = [("oracle_ratio", "oracle\nratio"), ("oracle_box", "oracle\nbox mask"), ("oracle_map", "oracle\nmap")]
    for i, (m, lab) in enumerate(names):
        x = h[m]
        if x["verdict"] == NOT_MEASURED:
            ax[4].text(i, 0, "not\nmeasured", ha="center", va="bottom", fontsize=6, color="#777777")
            continue
        ax[4].bar(i, x["mean"], 0.6, color=ip.COLORS.get(m, ip.COLORS["vif"]))
        ax[4].errorbar(i, x["mean"], yerr=[[x["mean"] - x["ci"][0]], [x["ci"][1] - x["mean"]]], fmt="none",
                       ecolor="#222222", elinewidth=0.6, capsize=1.5)
    ax[4].axhline(0, color="#222222", lw=0.6)
    ax[4].set_xticks(range(len(names)))
    ax[4].set_xticklabels([n for _, n in names])
    ax[4].grid(axis="x", visible=False)
    ax[4].set_ylabel("Δ accuracy vs plain model\n(oracle map: vs its control)")
    title(ax[4], "c", "headroom", "headroom: what an oracle gains")

    ax[5].axis("off")
    for i, k in enumerate(KEYS):
        v = P[k]["verdict"]
        ax[5].text(0.0, 0.97 - 0.2 * i, f"{MARK.get(v, '?')}  {SHORT[k]}", transform=ax[5].transAxes,
                   fontsize=7, color=VCOLOR.get(v, "k"), va="top")
        ax[5].text(0.07, 0.885 - 0.2 * i, v + (f" · {ci_text(P[k])}" if P[k].get("n") else ""),
                   transform=ax[5].transAxes, fontsize=6, color="#444444", va="top")
    ax[5].set_title("(f) verdicts, 95% bootstrap intervals", fontsize=7.5, loc="left")
    fig.suptitle(f"The papers' premises, measured — {data['model_label']}, n = {data['n']}")
    return ip.save(fig, out_dir, NAME)
