"""How much AIF moves when its query rows are the question's tokens instead of all text after the image.

AIF's token dynamics take d[l, i] = max over the query rows of the attention to vision token i. Until the
question group meant "the question's tokens" (issue 19), AIF's default rows were every text token after the
last image, template tokens included (`after_image`; identical to the old `question` group for prompts without
teacher-forced answers). This compares the two as `AIF(queries=<bool [B, T] tensor>)`:

- on each zoo family (random tiny models): μ and entropy per vision token (mean |Δ| relative to the mean, and
  Spearman rank correlation per row) and the chosen ratio;
- on the shipped toy model: accuracy and mean ratio of AIF (paper criterion, and max_ratio 0.5) on held-out
  scenes (`interp.toy.dataset(n, seed=interp.toy.EVAL_SEED)`, greedy, 1 new token, as the REPORT's method table).

    .venv/bin/python scripts/aif_query_groups.py --toy-n 400 --out /tmp/aif_query_groups.json
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

GROUPS = ("after_image", "question")
QUESTIONS = ["what color is the circle ?", "how many red objects are there in the picture ?",
             "is there a star ?", "what shape is left of the cup ?"]


def _images(n: int, seed: int = 0):
    from PIL import Image

    rng = np.random.default_rng(seed)
    sizes = [(64, 48), (40, 80), (56, 56), (96, 32)]
    return [Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)) for w, h in sizes[:n]]


def _spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    ra, rb = a.argsort().argsort().double(), b.argsort().argsort().double()
    return float(torch.corrcoef(torch.stack([ra, rb]))[0, 1])


def zoo_family(arch: str, rows: int = 4) -> dict:
    """AIF diagnostics on a tiny zoo model with each query group; the differences between them."""
    import interp

    vlm = interp.zoo.tiny(arch)
    batch = vlm.prepare(images=_images(rows), questions=QUESTIONS[:rows])
    lay = batch.layout
    diag = {}
    for g in GROUPS:
        out = interp.intervene(vlm, interp.AIF(queries=lay.group(g))).forward(batch)
        diag[g] = out.diagnostics["aif"]
    valid = lay.vision_valid()
    res = {"rows": rows, "query_tokens": {g: lay.group(g).sum(1).tolist() for g in GROUPS},
           "template_tokens": lay.template.sum(1).tolist()}
    for key in ("mu", "entropy"):
        a, b = diag["after_image"][key].float(), diag["question"][key].float()
        rel = [float((a[r][valid[r]] - b[r][valid[r]]).abs().mean() / a[r][valid[r]].abs().mean().clamp_min(1e-12))
               for r in range(rows)]
        rho = [_spearman(a[r][valid[r]], b[r][valid[r]]) for r in range(rows)]
        res[key] = {"mean_abs_rel_change": float(np.mean(rel)), "spearman": float(np.mean(rho))}
    ra, rb = diag["after_image"]["ratio"].float(), diag["question"]["ratio"].float()
    res["ratio"] = {"after_image": ra.tolist(), "question": rb.tolist(), "rows_changed": int((ra != rb).sum()),
                    "mean_abs_change": float((ra - rb).abs().mean())}
    ka, kb = diag["after_image"]["kept"], diag["question"]["kept"]
    inter = (ka & kb & valid).sum(1).double()
    union = ((ka | kb) & valid).sum(1).double().clamp_min(1)
    res["kept_jaccard"] = float((inter / union).mean())
    return res


def toy(n: int, batch_size: int = 100) -> dict:
    """Accuracy and mean ratio of AIF on the toy model with each query group (and the plain model)."""
    import interp
    import interp.toy
    from interp.data.scoring import score

    vlm = interp.toy.load()
    samples = interp.toy.dataset(n, seed=interp.toy.EVAL_SEED)
    runs = {"plain": None, **{f"aif[{g}]": (g, None) for g in GROUPS},
            **{f"aif_cap[{g}]": (g, 0.5) for g in GROUPS}}
    scores = {k: [] for k in runs}
    ratios = {k: [] for k in runs if k != "plain"}
    for i in range(0, n, batch_size):
        chunk = samples[i:i + batch_size]
        batch = vlm.prepare(images=[s.image for s in chunk], questions=[s.question for s in chunk])
        for k, spec in runs.items():
            ivs = () if spec is None else (interp.AIF(queries=batch.layout.group(spec[0]), max_ratio=spec[1]),)
            out = interp.intervene(vlm, *ivs).generate(batch, max_new_tokens=1)
            scores[k] += [float(score(s, t)) for s, t in zip(chunk, out.texts)]
            if spec is not None:
                ratios[k] += out.diagnostics["aif"]["ratio"].float().tolist()
    prompt = vlm.prepare(images=[samples[0].image], questions=[samples[0].question])
    words = {g: vlm.tokenizer.convert_ids_to_tokens(prompt.input_ids[0][prompt.layout.group(g)[0]].tolist())
             for g in GROUPS}
    return {"n": n, "query_tokens_example": words, "accuracy": {k: float(np.mean(v)) for k, v in scores.items()},
            "mean_ratio": {k: float(np.mean(v)) for k, v in ratios.items()},
            "scores_changed": {m: sum(x != y for x, y in zip(scores[f"{m}[after_image]"], scores[f"{m}[question]"]))
                               for m in ("aif", "aif_cap")}}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--archs", default="llava,llava_next,qwen2_vl,qwen2_5_vl,idefics3")
    ap.add_argument("--rows", type=int, default=4)
    ap.add_argument("--toy-n", type=int, default=400, help="held-out toy scenes (0: skip the toy)")
    ap.add_argument("--out", default=None, help="write the numbers as JSON here")
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    t0 = time.time()
    res = {"zoo": {a: zoo_family(a, args.rows) for a in args.archs.split(",") if a}}
    if args.toy_n:
        res["toy"] = toy(args.toy_n)
    res["seconds"] = round(time.time() - t0, 1)
    text = json.dumps(res, indent=1)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    print(text)
    return res


if __name__ == "__main__":
    main()
