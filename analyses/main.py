"""The main job: every analysis of both papers (`analyses.registry`) on the shipped toy model, figures + numbers into
figures/, then figures/REPORT.md built from those numbers.

    bash scripts/main.sh                       # = python -m analyses.main --out figures (≈ 4.5 min, 2 CPU cores)
    python -m analyses.main --model zoo:llava --limit 8 --out /tmp/figs    # any model, any size

Each analysis also runs on its own (`python -m analyses.<name> --help`); `--model` takes "toy", "zoo:<arch>",
a hub id or a local directory. On the toy each runs at its `main_limit` (larger than its own default where the
job has the time: accuracy comparisons want ≥ 100 samples per family for intervals of about ±0.07).
"""

from __future__ import annotations

import argparse
import sys
import time

from analyses import registry
from analyses.report import build


def main(argv=None) -> dict:
    """Run the analyses (all, or --only), then write REPORT.md; returns {name: record}."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="toy")
    ap.add_argument("--data", default="toy")
    ap.add_argument("--out", default="figures")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--limit", type=int, default=None, help="samples per analysis (default: each analysis' own)")
    ap.add_argument("--only", nargs="*", default=None, choices=registry.NAMES, help="run only these analyses")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    todo = [a for a in registry.every() if args.only is None or a.name in args.only]
    t0 = time.perf_counter()
    records = {}
    for i, a in enumerate(todo, 1):
        print(f"[{i}/{len(todo)}] {a.name} ...", file=sys.stderr, flush=True)
        kw = dict(model=args.model, data=args.data, out=args.out, seed=args.seed)
        limit = args.limit if args.limit is not None else a.main_limit if args.model == "toy" else None
        if limit is not None:
            kw["limit"] = limit
        if args.no_progress:
            kw["progress"] = False
        t = time.perf_counter()
        records[a.name] = a.run(**kw)
        print(f"[{i}/{len(todo)}] {a.name} done in {time.perf_counter() - t:.0f} s", file=sys.stderr, flush=True)
    path = build(args.out)
    print(f"wrote {path} ({time.perf_counter() - t0:.0f} s in all)", file=sys.stderr)
    return records


if __name__ == "__main__":
    main()
