"""The main job: every analysis on the embedded default model, figures and numbers into figures/.

    bash scripts/main.sh            # or: python -m analyses.main --out figures

For now (foundation stage) it runs a short demo on a zoo model: capture per-layer text→vision attention,
cut text→vision edges, and write the numbers and a figure. Later stages run the full reproduction on the
shipped toy model.
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="llava", help="zoo architecture for the demo")
    ap.add_argument("--out", default="figures")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch
    from PIL import Image

    import interp

    torch.manual_seed(args.seed)
    os.makedirs(args.out, exist_ok=True)
    vlm = interp.zoo.tiny(args.model, seed=args.seed)
    rng = np.random.default_rng(args.seed)
    img = Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))
    batch = vlm.prepare(images=[img], questions=["what color is the circle ?"])
    stats = interp.capture(vlm, batch)
    blind = interp.intervene(vlm, interp.EdgeMask("text", "vision")).generate(batch, max_new_tokens=4)
    plain = interp.intervene(vlm).generate(batch, max_new_tokens=4)
    ratio = stats.vision_ratio[:, 0].tolist()
    result = {"model": f"zoo:{args.model}", "seed": args.seed, "vision_ratio": ratio,
              "plain": plain.texts[0], "blind": blind.texts[0]}
    with open(os.path.join(args.out, "demo.json"), "w") as f:
        json.dump(result, f, indent=2)
    fig, ax = plt.subplots(figsize=(4, 3), dpi=150)
    ax.plot(range(len(ratio)), ratio, marker="o")
    ax.set_xlabel("decoder layer")
    ax.set_ylabel("attention mass on vision tokens")
    ax.set_title(f"question→vision attention, zoo:{args.model} (random)")
    ax.set_ylim(0, 1)
    fig.tight_layout()
    fig.savefig(os.path.join(args.out, "demo_vision_ratio.png"))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
