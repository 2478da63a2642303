"""Peak memory of `interp.capture` and of eager `output_attentions=True`, relative to the plain SDPA forward, as
the number of vision tokens grows 576 → 2,304 → 9,216.

    .venv/bin/python -m benchmarks.memory_scaling      # ~2–5 min on 2 shared CPU cores (eager at 9,216: ~30 s a run)
    .venv/bin/python -m benchmarks.memory_scaling --quick --out /tmp/scaling.json   # smoke run, tiny grids

Model: `interp.zoo.llava_grid(grid)` (random weights, LLaVA-1.5 geometry with a `grid`×`grid` vision grid,
patch 14: grid 24 / 48 / 96 → 576 / 2,304 / 9,216 vision tokens), the *same* small decoder at every size
(`--layers` 2, hidden 256, 4 heads, head_dim 64) so only the sequence length T changes. The load-time site
self-check is skipped (`check=False`): it recomputes every attention row and would dominate at 9,216.
One image, a ~18-token question. Variants, all under `torch.no_grad()`:

- `plain`: `hf(**batch.inputs)` on SDPA, `hf` a pristine transformers model with the same weights, never
  wrapped by nnsight (`zoo.build_llava_grid`, same seed): the baseline of every ratio;
- `capture`: `interp.capture(vlm, batch)`: all layers, question rows, the model stays on SDPA;
- `eager`: `hf(**batch.inputs, output_attentions=True)` with the language model on eager attention (vision
  tower stays SDPA).

Memory: peak RSS above the loaded model, one fresh child process per (size, variant), 1 warm-up + `--repeats`
measured runs each (default 1: peaks repeat within ~1%; see `benchmarks/harness.py`); one thread
(`torch.set_num_threads(--threads)`). Expected: capture flat relative to plain (it only recomputes the few
question rows), eager growing like layers · heads · T² · 4 bytes (the attention maps it returns). Run times in
the children are recorded too but are not interleaved: use `benchmarks/capture.py` for time ratios.
Writes `benchmarks/results/memory_scaling.json` (or `--out`).
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

from benchmarks import harness

QUESTION = "what is the color of the small circle left of the big square in the middle of the picture ?"
VARIANTS = ("plain", "capture", "eager")
EAGER = {"text_config": "eager"}  # language model eager, vision tower unchanged

def memory_job(job: dict):
    """Runs in a memory child: builds only the model the variant uses, puts it in the variant's state."""
    import interp

    name = job["variant"]
    pristine = name in ("plain", "eager")
    kw = {k: job[k] for k in ("layers", "hidden", "heads")}
    vlm, hf, batch = harness.models(QUESTION, grid=job["grid"], grid_kw=kw, need=("hf",) if pristine else ("vlm",))
    if name == "plain":
        hf.set_attn_implementation("sdpa")
        fn = lambda: hf(**batch.inputs)  # noqa: E731
    elif name == "eager":
        hf.set_attn_implementation(EAGER)
        fn = lambda: hf(**batch.inputs, output_attentions=True)  # noqa: E731
    elif name == "capture":
        fn = lambda: interp.capture(vlm, batch)  # noqa: E731
    else:
        raise ValueError(f"unknown variant {name!r}; choose from {VARIANTS}")
    model = hf if pristine else vlm.hf
    lay = batch.layout
    return fn, {"seq_len": int(batch.input_ids.shape[1]), "vision_tokens": int(lay.vision.sum()),
                "question_tokens": int(lay.question.sum()), "params": sum(p.numel() for p in model.parameters()),
                "attn_text": model.config.get_text_config()._attn_implementation, "nnsight_wrapped": not pristine}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--grids", type=int, nargs="+", default=[24, 48, 96], help="vision grid sides (tokens = grid²)")
    ap.add_argument("--layers", type=int, default=2, help="decoder layers (same at every size)")
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=1,
                    help="measured runs per child, after 1 warm-up (peaks vary ~1%% run to run)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="smoke mode: grids 4 and 8, memory measured in this process")
    ap.add_argument("--out", default=os.path.join(harness.RESULTS, "memory_scaling.json"))
    args = ap.parse_args(argv)
    if args.quick:
        args.grids, args.layers, args.hidden, args.heads, args.repeats = [4, 8], 2, 64, 2, 1
    with harness.session(args.threads):

        jobs = [{"grid": g, "layers": args.layers, "hidden": args.hidden, "heads": args.heads, "variant": v}
                for g in args.grids for v in VARIANTS]
        runs = harness.memory("benchmarks.memory_scaling", jobs, repeats=args.repeats, in_process=args.quick)

        sizes = []
        for g in args.grids:
            by = {r["job"]["variant"]: r for r in runs if r["job"]["grid"] == g}
            info = by["plain"]["info"]
            T = info["seq_len"]
            delta = {v: harness.mb(float(np.median(by[v]["peak_delta_bytes"]))) for v in VARIANTS}
            base = {v: harness.mb(float(np.median(by[v]["baseline_bytes"]))) for v in VARIANTS}
            sizes.append({
                "grid": g, **info,
                "baseline_mb": base,
                "peak_delta_mb": delta,
                "delta_ratio": {v: harness.ratio(delta[v], delta["plain"]) for v in VARIANTS},
                "total_ratio": {v: (base[v] + delta[v]) / (base["plain"] + delta["plain"]) for v in VARIANTS},
                # what eager must hold: one [B, H, T, T] float32 map per layer, all returned
                "eager_maps_mb": harness.mb(args.layers * args.heads * T * T * 4),
                "median_s": {v: float(np.median(by[v]["seconds"])) for v in VARIANTS},
                "runs": by,
            })
        result = {
            "benchmark": "memory_scaling",
            "command": "python -m benchmarks.memory_scaling " + " ".join(argv if argv is not None else sys.argv[1:]),
            "quick": args.quick,
            "environment": harness.environment(),
            "config": {"model": "interp.zoo.llava_grid(grid, layers, hidden, heads, check=False); plain and eager "
                                "on zoo.build_llava_grid (same weights, no nnsight)",
                       "decoder_layers": args.layers, "hidden": args.hidden, "heads": args.heads,
                       "head_dim": args.hidden // args.heads, "vision_tower": "CLIP, 2 layers, width 64, patch 14, SDPA",
                       "question": QUESTION, "repeats": args.repeats, "warmup": 1, "threads": args.threads,
                       "method": runs[0]["method"], "malloc_mmap_threshold": harness.MMAP_THRESHOLD,
                       "note": f"{args.layers} decoder layers at every size (kept small so the 9,216-token eager run "
                               "fits CPU time and memory); the decoder width does not change T.",
                       "eager_scope": "language model eager, vision tower SDPA, output_attentions=True"},
            "sizes": sizes,
        }
        harness.write(args.out, result)
        print(f"{'vision':>7} {'T':>6} | peak − loaded (MB): plain capture eager | ratio ×plain: capture eager")
        for s in sizes:
            d, r = s["peak_delta_mb"], s["delta_ratio"]
            print(f"{s['vision_tokens']:>7} {s['seq_len']:>6} | {d['plain']:>8.1f} {d['capture']:>8.1f} {d['eager']:>8.1f}"
                  f" | {harness.fmt(r['capture'], '>6.2f')} {harness.fmt(r['eager'], '>6.2f')}")
        print(f"wrote {args.out}")
        return result


if __name__ == "__main__":
    main()
