"""The command line of every analysis: `python -m analyses.<name> --model --data --split --limit --seed --out
--batch-size --max-new-tokens --metric --device --dtype --threads --no-progress` plus the analysis's own options
(`Analysis.options`), parsed into the keywords of `Analysis.run`."""

from __future__ import annotations

import argparse
import sys

from interp.data.scoring import METRICS


def parser(analysis) -> argparse.ArgumentParser:
    """The shared flags (defaults: the analysis's) and the analysis's own."""
    first = " ".join(analysis.doc.strip().split("\n\n")[0].split())  # the docstring's first paragraph
    p = argparse.ArgumentParser(prog=f"python -m analyses.{analysis.name}", description=first,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", default="toy", help='"toy", "zoo:<arch>" (random tiny model), a hub id or a directory')
    p.add_argument("--data", default="toy", help='"toy", a .jsonl file or a datasets directory')
    p.add_argument("--split", default=None, help="split of a datasets directory holding several")
    p.add_argument("--limit", type=int, default=analysis.limit, help="number of samples (a seeded subset for files)")
    p.add_argument("--seed", type=int, default=0, help="data subset / toy scenes, random controls, bootstrap")
    p.add_argument("--out", default=None, help=f"output folder (default runs/{analysis.name}/<model>-<data>)")
    p.add_argument("--batch-size", type=int, default=analysis.batch_size)
    p.add_argument("--max-new-tokens", type=int, default=None,
                   help="greedy answer length where answers are generated (default: 1 for --data toy, whose "
                        "answers are one word = one token, else 8)")
    p.add_argument("--metric", default="auto", choices=METRICS, help="scoring metric (interp.data.scoring)")
    p.add_argument("--device", default=None, help='e.g. "cuda"; default: where the model loads (CPU)')
    p.add_argument("--dtype", default=None, choices=(None, "float32", "bfloat16", "float16"))
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: 1 for toy / zoo models, whose tiny ops only lose from "
                        "threading on a busy machine; torch's default otherwise)")
    p.add_argument("--no-progress", action="store_true")
    for o in analysis.options:
        p.add_argument(f"--{o.name.replace('_', '-')}", type=o.parse, default=o.default, help=o.help)
    return p


def main(analysis, argv=None) -> dict:
    """Parse `argv` (default sys.argv[1:]) and `run` the analysis; returns the record."""
    from analyses import runner

    argv = sys.argv[1:] if argv is None else list(argv)
    args = vars(parser(analysis).parse_args(argv))
    args["progress"] = not args.pop("no_progress")
    command = " ".join([f"python -m analyses.{analysis.name}", *argv])
    return runner.run(analysis, args, command)
