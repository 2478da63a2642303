"""Accuracy per family × method: baseline, AIF, AIF (r ≤ 0.5), VIF, AIF + VIF, oracle box mask — with 95%
bootstrap intervals and paired McNemar tests against the plain model, as a figure and a Markdown table.

    python -m analyses.method_table --model toy --data toy --limit 400 --seed 0 --out figures

VIF: `--vif DIR` (a checkpoint from `python -m interp.vif.train`); default for `--model toy` the shipped
`interp/vif/checkpoints/toy`; otherwise an untrained `VIF.build(vlm)` (said so in the JSON: its numbers mean nothing).
Oracle box: text queries see only the vision tokens whose patch overlaps an evidence box.
Writes OUT/method_table.{json,png,pdf}; the JSON holds the Markdown table.
"""

from __future__ import annotations

import os

from analyses import batching, figures, loading, record, tables
from analyses.findings import diff_verdict, paired_text, verdict
from analyses.registry import Analysis, Option
from interp.errors import InputError

NAME = "method_table"
METHODS = ("baseline", "aif", "aif_cap", "vif", "aif_vif", "oracle_box")
LABELS = {"baseline": "baseline", "aif": "AIF (paper criterion)", "aif_cap": "AIF (r ≤ 0.5)", "vif": "VIF",
          "aif_vif": "AIF (r ≤ 0.5) + VIF", "oracle_box": "oracle box mask"}


def load_vif(vlm, cfg, path=None):
    """(VIF, description, model to run it on): the checkpoint `path`, the shipped toy one for the toy model,
    else untrained. A VIF trained jointly with its base (the shipped toy VIF) runs on that fine-tuned base
    (`interp.vif.load_pair`); `vlm` itself is never modified."""
    import interp
    import interp.toy

    if path is not None and not os.path.exists(path):
        raise InputError(f"vif={path!r}: no such VIF checkpoint directory (train one with python -m "
                         "interp.vif.train, or leave it out: the shipped toy VIF for the toy model)")
    if path is None and cfg.model == "toy":
        path = interp.toy.VIF_DIR
    if path is not None and os.path.exists(path):
        shown = os.path.relpath(path, os.path.dirname(os.path.dirname(interp.toy.CHECKPOINT_DIR)))
        shown = f"interp/{shown}" if not shown.startswith("..") else path
        run_on, vif = interp.vif.load_pair(path, vlm)
        joint = "" if run_on is vlm else (" on its jointly fine-tuned base (the right control is fine-tune only: "
                                          "analyses.vif_ablation)")
        return vif, f"trained checkpoint {shown}{joint}", run_on
    return interp.VIF.build(vlm, seed=cfg.seed), "untrained (VIF.build): no checkpoint for this model", vlm


def measure(vlm, samples, cfg, *, vif=None) -> dict:
    import interp

    samples = loading.with_boxes(samples, NAME)
    vif, vif_source, vif_vlm = load_vif(vlm, cfg, vif)
    scores = {m: [] for m in METHODS}
    gk = dict(max_new_tokens=cfg.max_new_tokens, metric=cfg.metric)
    for chunk in batching.batches(samples, cfg.batch_size, progress=cfg.progress, desc=NAME):
        batch = batching.prepare(vlm, chunk)
        lay = batch.layout
        outside = lay.vision & ~lay.boxes_to_mask([list(x.boxes) for x in chunk])
        runs = {"baseline": (), "aif": (interp.AIF(),), "aif_cap": (interp.AIF(max_ratio=0.5),), "vif": (vif,),
                "aif_vif": (interp.AIF(max_ratio=0.5), vif),
                "oracle_box": (interp.EdgeMask("text", outside, name="oracle"),) if outside.any() else ()}
        for m in METHODS:  # the VIF rows on the VIF's own base (the same processor: the same batch)
            scores[m] += batching.generate_scores(vif_vlm if "vif" in m else vlm, batch, chunk, runs[m], **gk)[1]
    summary, paired = tables.summarize_methods(samples, scores, METHODS, cfg.seed)
    return {"n": len(samples), "methods": list(METHODS), "labels": LABELS, "scores": scores, "summary": summary,
            "paired_vs_baseline": paired, "vif_source": vif_source, "vif": repr(vif),
            "chance": tables.chance(samples, cfg.data), "chance_by_family": tables.chance_by_family(samples, cfg.data),
            "families": [s.family for s in samples], "ids": [s.id for s in samples],
            "table": tables.markdown_table(summary, paired, LABELS)}


def plot(data, out_dir=None) -> list:
    """Redraw OUT/method_table.{png,pdf} from the JSON (path or dict) alone."""
    import interp.plot as ip

    data, here = record.read_json(data)
    out_dir = out_dir or here
    ip.style()
    fig, ax, _ = figures.method_bars(data, "Accuracy per method")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=6.5)
    return ip.save(fig, out_dir, NAME)


def finding(d) -> str:
    """REPORT: do AIF, AIF (r ≤ 0.5), VIF and AIF + VIF beat the plain model (paired intervals)?"""
    parts = []
    for m, label in (("aif", "AIF"), ("aif_cap", "AIF (r ≤ 0.5)"), ("vif", "VIF"), ("aif_vif", "AIF + VIF")):
        p = d["paired_vs_baseline"][m]
        parts.append(f"{paired_text(p, label)} {verdict(diff_verdict(p['ci'][0], p['ci'][1], True))}")
    return ("The papers report gains over the plain model (AIF +2 to +8 points, VIF +6 to +9). Here: "
            + "; ".join(parts) + ".")


VIF_OPTION = Option("vif", None, "VIF checkpoint directory (default: the shipped toy VIF for --model toy)")
ANALYSIS = Analysis(NAME, __doc__, title="Methods compared", measure=measure, plot=plot, finding=finding,
                    limit=400, batch_size=100, main_limit=800, notebook_limit=12,
                    claim="AIF · AIF (r ≤ 0.5) · VIF · AIF + VIF beat the plain model", options=(VIF_OPTION,))
compute, run, main = ANALYSIS.compute, ANALYSIS.run, ANALYSIS.main

if __name__ == "__main__":
    main()
