"""Figure pieces shared by several analyses (drawing only: the numbers come from the record)."""

from __future__ import annotations

from analyses.record import arr


def method_bars(data: dict, what: str):
    """Grouped accuracy bars (method × family, then "all") with 95% intervals and chance lines, from an
    analysis record with `summary`, `methods`, `labels`, `chance(_by_family)`. Returns (fig, ax, wide)."""
    import interp.plot as ip

    summ = data["summary"]
    fams = list(summ[data["methods"][0]]["by_family"])
    if len(fams) == 1:  # one family (or none named): the overall bars say it all
        fams = []
    groups = [f.replace("_", " ") for f in fams] + ["all"]
    series = {}
    for m in data["methods"]:
        s = summ[m]
        mean = [s["by_family"][f]["accuracy"] for f in fams] + [s["accuracy"]]
        lo = [s["by_family"][f]["ci"][0] for f in fams] + [s["ci"][0]]
        hi = [s["by_family"][f]["ci"][1] for f in fams] + [s["ci"][1]]
        series[data["labels"][m]] = (arr(mean), arr(lo), arr(hi))
    colors = {data["labels"][m]: ip.COLORS[m] for m in data["methods"]}
    wide = len(groups) > 3
    fig, ax = ip.figure(width="full" if wide else "column", aspect=0.3 if wide else 0.75)
    ip.bars(ax, groups, series, colors=colors, ylabel="accuracy (95% CI)", ylim=(0, 1.08))
    chance = dict(data.get("chance_by_family") or {})
    if data.get("chance") is not None:
        chance["all"] = data["chance"]
    labelled = False
    for g, f in enumerate(fams + ["all"]):
        if f in chance:
            ax.plot([g - 0.45, g + 0.45], [chance[f]] * 2, color="#555555", ls="--", lw=0.8,
                    label=None if labelled else "chance")
            labelled = True
    if len(groups) > 1:
        ax.axvline(len(groups) - 1.5, color="#bbbbbb", lw=0.6)
    ax.set_xlabel("question family" if fams else "")
    ax.set_title(ip.model_title(what + (" per family" if fams else ""), data["model_label"], data["n"]))
    return fig, ax, wide
