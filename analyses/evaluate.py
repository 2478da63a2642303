"""Accuracy of a model on a benchmark, plain or under a method, with per-family bootstrap intervals.

    python -m analyses.evaluate --model toy --data toy --limit 1000 --seed 0 --method baseline \
        --batch-size 8 --out runs/evaluate/toy-baseline

--model: "toy" (the shipped toy model), "zoo:<arch>" (a random tiny model), a hub id or a local directory.
--data:  "toy" (held-out toy scenes), a .jsonl file or a `datasets` directory (see interp.data.loaders).
--method: a name in METHODS: baseline (no intervention), blind (every text→vision edge cut), aif (the
          paper's criterion), aif_normalized, aif_max50 (ratio capped at 0.5).
Writes OUT/results.jsonl (per sample; rerunning the same command resumes it) and OUT/summary.json
(arguments, package versions, seed, git revision, accuracy and per-family accuracy with 95% intervals).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from analyses.loading import load_model
from analyses.record import git_revision as _git_revision
from analyses.record import versions as _versions
from analyses.record import write_json as _write_json
from interp.data.loaders import load_samples
from interp.data.scoring import METRICS
from interp.evaluation import evaluate


def _baseline(vlm) -> tuple:
    return ()


def _blind(vlm) -> tuple:
    import interp

    return (interp.EdgeMask("text", "vision"),)


def _aif(**kw):
    def make(vlm) -> tuple:
        import interp

        return (interp.AIF(**kw),)

    return make


# name → function(vlm) returning the tuple of interventions to evaluate under.
METHODS = {
    "baseline": _baseline,
    "blind": _blind,
    "aif": _aif(),  # the paper's criterion
    "aif_normalized": _aif(criterion="normalized"),
    "aif_max50": _aif(max_ratio=0.5),
}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m analyses.evaluate", description=__doc__.split("\n")[0])
    p.add_argument("--model", default="toy", help='"toy", "zoo:<arch>", a hub id or a local model directory')
    p.add_argument("--data", default="toy", help='"toy", a .jsonl file or a datasets directory')
    p.add_argument("--split", default=None, help="split of a datasets directory holding several")
    p.add_argument("--limit", type=int, default=None, help="evaluate a seeded subset of this many samples")
    p.add_argument("--seed", type=int, default=0, help="data subset / toy scenes and bootstrap seed")
    p.add_argument("--method", default="baseline", choices=sorted(METHODS))
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-new-tokens", type=int, default=8)
    p.add_argument("--metric", default="auto", choices=METRICS)
    p.add_argument("--out", default=None, help="output folder (default runs/evaluate/<model>-<data>-<method>)")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    if args.out is None:
        slug = "-".join(Path(str(x).rstrip("/")).name for x in (args.model, args.data, args.method))
        args.out = str(Path("runs") / "evaluate" / slug)
    return args


def main(argv=None) -> dict:
    """Run the evaluation and write OUT/results.jsonl and OUT/summary.json; returns the summary."""
    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    samples = load_samples(args.data, limit=args.limit, seed=args.seed, split=args.split)
    vlm = load_model(args.model)
    interventions = METHODS[args.method](vlm)
    result = evaluate(vlm, samples, *interventions, batch_size=args.batch_size,
                      max_new_tokens=args.max_new_tokens, out=out / "results.jsonl", metric=args.metric,
                      progress=not args.no_progress, model_name=args.model, seed=args.seed)
    summary = {
        "command": "python -m analyses.evaluate " + " ".join(sys.argv[1:] if argv is None else argv),
        "arguments": vars(args),
        "seed": args.seed,
        "versions": _versions(),
        "git_revision": _git_revision(outputs=out),
        "interventions": result.meta.get("interventions", []),
        **result.summary(),
    }
    _write_json(out / "summary.json", summary)
    print(result.to_markdown())
    print(f"wrote {out / 'results.jsonl'} and {out / 'summary.json'}")
    return summary


if __name__ == "__main__":
    main()
