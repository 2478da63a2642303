"""The main job: every analysis of both papers on the shipped toy model, figures + numbers into figures/,
then figures/REPORT.md built from those numbers.

    bash scripts/main.sh                       # = python -m analyses.main --out figures (≈ 3 min, 2 CPU cores)
    python -m analyses.main --model zoo:llava --limit 8 --out /tmp/figs    # any model, any size

Each analysis also runs on its own (`python -m analyses.<name> --help`); `--model` takes "toy", "zoo:<arch>",
a hub id or a local directory.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time

from analyses.report import ORDER, build

# Larger than the analyses' own defaults where the main job has the time: accuracy comparisons want ≥ 100
# samples per family for intervals of about ±0.07 (the whole job stays well under 15 minutes on 2 cores).
MAIN_LIMITS = {"oracle_masks": 400, "mu_masking": 400, "vif_focus": 400, "method_table": 800, "premises": 1200,
               "vif_ablation": 400,  # evaluates 7 shipped variants (trained once: analyses.vif_ablation_train)
               "patching": 12, "knockout_flow": 96, "logit_lens": 96}  # patching: mirror pairs


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="toy")
    ap.add_argument("--data", default="toy")
    ap.add_argument("--out", default="figures")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--limit", type=int, default=None, help="samples per analysis (default: each analysis' own)")
    ap.add_argument("--only", nargs="*", default=None, help="run only these analyses")
    args = ap.parse_args(argv)
    names = [n for n in ORDER if args.only is None or n in args.only]
    t0 = time.perf_counter()
    for i, name in enumerate(names, 1):
        print(f"[{i}/{len(names)}] {name} ...", file=sys.stderr, flush=True)
        argv_a = ["--model", args.model, "--data", args.data, "--out", args.out, "--seed", str(args.seed)]
        limit = args.limit if args.limit is not None else MAIN_LIMITS.get(name) if args.model == "toy" else None
        if limit is not None:
            argv_a += ["--limit", str(limit)]
        t = time.perf_counter()
        importlib.import_module(f"analyses.{name}").main(argv_a)
        print(f"[{i}/{len(names)}] {name} done in {time.perf_counter() - t:.0f} s", file=sys.stderr, flush=True)
    path = build(args.out)
    print(f"wrote {path} ({time.perf_counter() - t0:.0f} s in all)", file=sys.stderr)


if __name__ == "__main__":
    main()
