"""The toy task written as local hub copies of two of the papers' benchmarks, so `analyses.paper_table` runs
the toy model through exactly the path a real benchmark takes (hub layout → lmms-eval prompt → lmms-eval score).

    python -m analyses.toy_benchmarks --out runs/toy-hub --n 200 --seed 0

Writes OUT/pope (the toy "exists" questions, yes/no, in lmms-lab-encoder/POPE's schema: README configs +
data/test-*.parquet, images as HF Image structs) and OUT/countbench (the "count" questions, in
vikhyatk/CountBenchQA's schema, `number` an int). The toy model was trained on the bare questions, so run it
with `--prompt-style bare`; lmms-eval's instructions are words its vocabulary lacks.
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

FAMILIES = {"pope": "exists", "countbench": "count"}


def _png(image) -> dict:
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return {"bytes": buf.getvalue(), "path": None}


def write(out, n: int = 200, seed: int = 0) -> dict[str, Path]:
    """Write n toy questions per benchmark (held-out scenes: interp.toy.EVAL_SEED + seed); returns
    benchmark name → folder."""
    import datasets

    import interp.toy as toy
    from interp.toy import scenes
    from interp.data.hub import write_parquet_copy

    out, V = Path(out), datasets.Value
    paths = {}
    for name, family in FAMILIES.items():
        samples = toy.dataset(n, seed=toy.EVAL_SEED + seed, families=[family])
        if name == "pope":
            rows = [{"id": str(i), "question_id": str(i), "question": s.question, "answer": s.answer,
                     "image_source": f"toy_{seed}_{i}", "image": _png(s.image), "category": "toy"}
                    for i, s in enumerate(samples)]
            feats = datasets.Features({"id": V("string"), "question_id": V("string"), "question": V("string"),
                                       "answer": V("string"), "image_source": V("string"), "image": datasets.Image(),
                                       "category": V("string")})
        else:
            rows = [{"image": _png(s.image), "text": "", "question": s.question,
                     "number": scenes.NUMBERS.index(s.answer) + 1} for s in samples]
            feats = datasets.Features({"image": datasets.Image(), "text": V("string"), "question": V("string"),
                                       "number": V("int32")})
        paths[name] = write_parquet_copy(out / name, {"test": rows}, features=feats)
    return paths


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(prog="python -m analyses.toy_benchmarks", description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, help="data root to write pope/ and countbench/ under")
    p.add_argument("--n", type=int, default=200, help="questions per benchmark")
    p.add_argument("--seed", type=int, default=0, help="offset on interp.toy.EVAL_SEED")
    args = p.parse_args(argv)
    paths = write(args.out, args.n, args.seed)
    print("wrote " + ", ".join(f"{k} → {v}" for k, v in paths.items()))
    return paths


if __name__ == "__main__":
    main()
