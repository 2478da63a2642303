"""Per-layer share of attention on vision tokens, at the answer position and over the question tokens
(VIF Fig. 1 right / Fig. 2 red curve: "visual attenuation").

    python -m analyses.vision_attention_ratio --model toy --data toy --limit 600 --seed 0 \
        --out figures

For each sample and decoder layer: the attention mass (mean over heads) that the last prompt position (where
the first answer token is predicted) puts on vision tokens, and the same averaged over the question tokens
after the image. Mean over samples with a 95% t-band. Dashed: the vision tokens' share of the keys the answer
position sees (what uniform attention would give). Writes OUT/vision_attention_ratio.{json,png,pdf}.
"""

from __future__ import annotations

import numpy as np

from analyses import batching, record
from analyses.findings import diff_verdict, fmt, verdict
from analyses.registry import Analysis
from interp.stats import mean_ci

NAME = "vision_attention_ratio"


def measure(vlm, samples, cfg) -> dict:
    """Per-sample curves: ratio_answer, ratio_question [N, L]; uniform_share [N]."""
    import interp
    from interp.attention.capture import Capture

    ans, que, share = [], [], []
    for chunk in batching.batches(samples, cfg.batch_size, progress=cfg.progress, desc=NAME):
        batch = batching.prepare(vlm, chunk)
        lay = batch.layout
        caps = (Capture(queries="last", name="answer"), Capture(queries="question", name="question"))
        out = interp.intervene(vlm, *caps).forward(batch)
        ans.append(out.diagnostics["answer"].vision_ratio.T)  # [B, L]
        que.append(out.diagnostics["question"].vision_ratio.T)  # [B, L]
        seen = (~lay.pad).sum(1).float()  # the last prompt position sees every non-pad token
        share.append(lay.num_vision.float() / seen)
    ans = np.concatenate([a.float().numpy() for a in ans])
    que = np.concatenate([q.float().numpy() for q in que])
    share = np.concatenate([s.numpy() for s in share])
    return {
        "n": len(samples),
        "layers": list(range(ans.shape[1])),
        "ratio_answer": ans,  # [N, L]
        "ratio_question": que,  # [N, L]
        "uniform_share": share,  # [N]
        "families": [s.family for s in samples],
        "ids": [s.id for s in samples],
    }


def plot(data, out_dir=None) -> list:
    """Redraw OUT/vision_attention_ratio.{png,pdf} from the JSON (path or dict) alone."""
    import interp.plot as ip

    data, here = record.read_json(data)
    out_dir = out_dir or here
    ip.style()
    layers = data["layers"]
    fig, ax = ip.figure(aspect=0.72)
    ip.layer_curve(ax, layers, record.arr(data["ratio_answer"]), label="answer position (last prompt token)",
                   color=ip.COLORS["answer"])
    ip.layer_curve(ax, layers, record.arr(data["ratio_question"]), label="question tokens (mean over rows)",
                   color=ip.COLORS["question"], marker="s")
    u = float(np.nanmean(record.arr(data["uniform_share"])))
    ax.axhline(u, color="#777777", ls="--", lw=0.8, label=f"uniform over keys ({u:.2f})")
    ax.set_xlabel("decoder layer")
    ax.set_ylabel("attention on vision tokens\n(share of the row, 0–1)")
    ax.set_ylim(0, 1.02)
    ax.set_xlim(layers[0] - 0.3, layers[-1] + 0.3)
    ip.integer_ticks(ax, layers)
    ax.set_title(ip.model_title("Attention on vision tokens per layer", data["model_label"], data["n"]))
    ax.legend(loc="best")
    return ip.save(fig, out_dir, NAME)


def finding(d) -> str:
    """REPORT: does the answer position's vision share fall from its peak layer to the last layer?"""
    r = np.asarray(d["ratio_answer"], dtype=np.float64)  # [N, L]
    means = np.nanmean(r, 0)
    peak = int(np.nanargmax(means))
    last = r.shape[1] - 1
    diff = mean_ci(r[:, last] - r[:, peak])
    held = None if peak == last else diff_verdict(diff[1], diff[2], want_positive=False)
    return (f"VIF (Fig. 1/2): attention to vision tokens attenuates in deep layers. At the answer position the "
            f"vision share peaks at layer {peak} ({fmt(*mean_ci(r[:, peak]))}) and is {fmt(*mean_ci(r[:, last]))} at "
            f"the last layer {last}: change {fmt(*diff)} — {verdict(held)} (the mean curve rises until layer {peak} of "
            f"0–{last}, then falls).")


ANALYSIS = Analysis(NAME, __doc__, title="Vision attention ratio per layer", measure=measure, plot=plot,
                    finding=finding, limit=600, batch_size=100, notebook_limit=24,
                    claim="VIF: attention on vision attenuates in deep layers (answer position)")
compute, run, main = ANALYSIS.compute, ANALYSIS.run, ANALYSIS.main

if __name__ == "__main__":
    main()
