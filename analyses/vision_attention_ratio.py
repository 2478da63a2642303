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

from analyses import common

NAME = "vision_attention_ratio"


def compute(vlm, samples, args) -> dict:
    """Per-sample curves: ratio_answer, ratio_question [N, L]; uniform_share [N]."""
    import interp
    from interp.attention.capture import Capture

    ans, que, share = [], [], []
    for chunk in common.batches(samples, args.batch_size, progress=not args.no_progress, desc=NAME):
        batch = common.prepare(vlm, chunk)
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

    data, here = common.read_json(data)
    out_dir = out_dir or here
    ip.style()
    layers = data["layers"]
    fig, ax = ip.figure(aspect=0.72)
    ip.layer_curve(ax, layers, common.arr(data["ratio_answer"]), label="answer position (last prompt token)",
                   color=ip.COLORS["answer"])
    ip.layer_curve(ax, layers, common.arr(data["ratio_question"]), label="question tokens (mean over rows)",
                   color=ip.COLORS["question"], marker="s")
    u = float(np.nanmean(common.arr(data["uniform_share"])))
    ax.axhline(u, color="#777777", ls="--", lw=0.8, label=f"uniform over keys ({u:.2f})")
    ax.set_xlabel("decoder layer")
    ax.set_ylabel("attention on vision tokens\n(share of the row, 0–1)")
    ax.set_ylim(0, 1.02)
    ax.set_xlim(layers[0] - 0.3, layers[-1] + 0.3)
    ip.integer_ticks(ax, layers)
    ax.set_title(ip.model_title("Attention on vision tokens per layer", data["model_label"], data["n"]))
    ax.legend(loc="best")
    return ip.save(fig, out_dir, NAME)


def main(argv=None) -> dict:
    return common.run(NAME, __doc__, compute, plot, argv, limit=600, batch_size=100)


if __name__ == "__main__":
    main()
