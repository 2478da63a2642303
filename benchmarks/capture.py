"""Cost of `interp.capture` and of an empty nnsight trace, as ratios against the plain HF forward.

    .venv/bin/python -m benchmarks.capture                 # ~3 min on 2 shared CPU cores
    .venv/bin/python -m benchmarks.capture --quick --out /tmp/capture.json   # smoke run: tiny model, no child
    .venv/bin/python -m benchmarks.capture --grid 48 --repeats 9              # T ≈ 2,330 → capture_grid48.json
    .venv/bin/python -m benchmarks.capture --grid 96 --repeats 5 --warmup 1 --variants capture empty_trace

Model: `interp.zoo.tiny("llava", size="bench")` (random weights; LLaVA-1.5 geometry: 576 vision tokens, a
30M-parameter 8-layer Llama decoder) on one image and a ~30-token question (T ≈ 610). Variants, all under
`torch.no_grad()`:

- `plain`: `hf(**batch.inputs)` on SDPA, where `hf` is a pristine transformers model with the same weights
  (same zoo builder and seed; logits checked equal), never touched by nnsight: the baseline of every ratio;
- `hf_wrapped`: `vlm.hf(**batch.inputs)`, the same call on the model `interp.load` returned (nnsight's
  `.source` hooks stay installed on its attention and decoder-stack forwards);
- `capture`: `interp.capture(vlm, batch)`: all layers, question rows, the model stays on SDPA;
- `eager`: `hf(**batch.inputs, output_attentions=True)` with the language model switched to eager attention
  (vision tower stays SDPA), the usual way to get attention maps;
- `empty_trace`: `interp.intervene(vlm).forward(batch)`, an nnsight trace with no intervention.

Time: `--repeats` interleaved rounds after `--warmup` rounds, one thread (`torch.set_num_threads(--threads)`,
default 1: the machine's 2 cores are shared with other jobs, and one thread gives the steadiest numbers).
Memory: peak RSS above the loaded model, one fresh child process per variant (see `benchmarks/harness.py`).
Targets (issue 3): capture time ≤ 1.15, capture memory ≤ 1.10, empty trace time ≤ 1.05, all × plain; time
targets are checked on the paired ratio (median over rounds of variant ÷ plain in the same round), the ratio of
medians is reported beside it.
`--grid N` times the same variants on `zoo.llava_grid(N)` (N² vision tokens, the 2-layer decoder of
`benchmarks/memory_scaling.py`) to see how the ratios move with sequence length.
Writes `benchmarks/results/capture.json` (or `capture_grid<N>.json`, or `--out`).
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import torch

from benchmarks import harness

QUESTION = ("what is the color of the small circle left of the big square in the middle of the picture ? "
            "tell me which one it is and describe the shape")
TARGETS = {"capture_time": 1.15, "capture_memory": 1.10, "empty_trace_time": 1.05}
VARIANTS = ("plain", "hf_wrapped", "capture", "eager", "empty_trace")
EAGER = {"text_config": "eager"}  # language model eager, vision tower unchanged


def variant(vlm, hf, batch, name: str):
    """(fn, before, after) for `harness.interleave`; before/after switch the attention implementation."""
    import interp

    if name == "plain":
        return hf_call(hf, batch, "sdpa")
    if name == "hf_wrapped":
        return (lambda: vlm.hf(**batch.inputs))
    if name == "capture":
        return (lambda: interp.capture(vlm, batch))
    if name == "eager":
        return hf_call(hf, batch, "eager")
    if name == "empty_trace":
        return (lambda: interp.intervene(vlm).forward(batch))
    raise ValueError(f"unknown variant {name!r}; choose from {VARIANTS}")


def hf_call(hf, batch, attn: str):
    """The pristine model on SDPA, or on eager (language model only) with `output_attentions=True`."""
    if attn == "sdpa":
        return (lambda: hf(**batch.inputs), lambda: hf.set_attn_implementation("sdpa"), None)
    return (lambda: hf(**batch.inputs, output_attentions=True), lambda: hf.set_attn_implementation(EAGER),
            lambda: hf.set_attn_implementation("sdpa"))


def memory_job(job: dict):
    """Runs in a memory child: builds only the model the variant uses, puts it in the variant's state."""
    pristine = job["variant"] in ("plain", "eager")
    vlm, hf, batch = harness.models(QUESTION, size=job["size"], grid=job.get("grid"),
                                    need=("hf",) if pristine else ("vlm",))
    fn = variant(vlm, hf, batch, job["variant"])
    if isinstance(fn, tuple):
        fn, before, _ = fn
        before()
    model = hf if pristine else vlm.hf
    return fn, {"attn_text": model.config.get_text_config()._attn_implementation,
                "nnsight_wrapped": not pristine}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=21, help="interleaved timing rounds")
    ap.add_argument("--warmup", type=int, default=2, help="untimed rounds first")
    ap.add_argument("--mem-repeats", type=int, default=3, help="measured runs per memory child (after 1 warm-up)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--size", default="bench", choices=("bench", "tiny"))
    ap.add_argument("--grid", type=int, default=None,
                    help="time a longer sequence instead: zoo.llava_grid(GRID) (GRID² vision tokens, 2-layer decoder)")
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS,
                    help="subset to run (plain is always included)")
    ap.add_argument("--quick", action="store_true", help="smoke mode: tiny model, few repeats, memory measured in this process")
    ap.add_argument("--out", default=None, help="default: benchmarks/results/capture.json (capture_grid<N>.json)")
    args = ap.parse_args(argv)
    if args.out is None:
        args.out = os.path.join(harness.RESULTS, f"capture_grid{args.grid}.json" if args.grid else "capture.json")
    if args.quick:
        args.size, args.repeats, args.warmup, args.mem_repeats = "tiny", 3, 1, 1
    with harness.session(args.threads):
        names = ["plain"] + [n for n in VARIANTS if n in args.variants and n != "plain"]

        vlm, hf, batch = harness.models(QUESTION, size=args.size, grid=args.grid)
        with torch.no_grad():  # the pristine baseline really is the same model
            same = torch.equal(hf(**batch.inputs).logits, vlm.hf(**batch.inputs).logits)
        raw = harness.interleave({n: variant(vlm, hf, batch, n) for n in names}, repeats=args.repeats,
                                 warmup=args.warmup)
        timing = harness.summarize(raw, "plain")
        timing["raw_s"] = raw

        jobs = [{"size": args.size, "grid": args.grid, "variant": n} for n in names]
        mem = harness.memory("benchmarks.capture", jobs, repeats=args.mem_repeats, in_process=args.quick)
        memory = {"method": mem[0]["method"], "malloc_mmap_threshold": harness.MMAP_THRESHOLD, "runs": {},
                  "baseline_mb": {}, "peak_delta_mb": {}, "delta_ratio": {}, "total_ratio": {}}
        for r in mem:
            n = r["job"]["variant"]
            memory["runs"][n] = r
            memory["baseline_mb"][n] = harness.mb(float(np.median(r["baseline_bytes"])))
            memory["peak_delta_mb"][n] = harness.mb(float(np.median(r["peak_delta_bytes"])))
        for n in names:
            memory["delta_ratio"][n] = harness.ratio(memory["peak_delta_mb"][n], memory["peak_delta_mb"]["plain"])
            memory["total_ratio"][n] = ((memory["baseline_mb"][n] + memory["peak_delta_mb"][n])
                                        / (memory["baseline_mb"]["plain"] + memory["peak_delta_mb"]["plain"]))

        # Time targets use the paired ratio (median over rounds of variant / plain within the round): on a shared
        # machine load shifts between rounds, and pairing cancels it; the ratio of medians is reported beside it.
        checks = {"capture_time": ("capture", timing["paired_ratio"]),
                  "capture_memory": ("capture", memory["delta_ratio"]),  # None: plain measured 0 B (smoke sizes)
                  "empty_trace_time": ("empty_trace", timing["paired_ratio"])}
        checks = {k: d[n] for k, (n, d) in checks.items() if n in names}
        result = {
            "benchmark": "capture",
            "command": "python -m benchmarks.capture " + " ".join(argv if argv is not None else sys.argv[1:]),
            "quick": args.quick,
            "environment": harness.environment(),
            "config": {"model": (f"interp.zoo.llava_grid({args.grid}, check=False)" if args.grid
                                 else f"interp.zoo.tiny('llava', size={args.size!r})"),
                       **harness.describe(vlm, batch), "variants": names, "pristine_logits_equal": same,
                       "question": QUESTION, "repeats": args.repeats, "warmup": args.warmup,
                       "mem_repeats": args.mem_repeats, "threads": args.threads,
                       "eager_scope": "language model eager (set_attn_implementation({'text_config': 'eager'})), "
                                      "vision tower SDPA, output_attentions=True",
                       "capture": "interp.capture(vlm, batch): all layers, queries='question', heads='mean'"},
            "timing": timing,
            "memory": memory,
            "targets": {k: {"target": TARGETS[k], "measured": v, "met": v is not None and v <= TARGETS[k]}
                        for k, v in checks.items()},
        }
        harness.write(args.out, result)
        print("time ratio ×plain (paired / of medians):   "
              + "  ".join(f"{n} {timing['paired_ratio'][n]:.3f} / {timing['ratio'][n]:.3f}" for n in names))
        print("memory (peak − loaded) ratio ×plain:   "
              + "  ".join(f"{n} {harness.fmt(memory['delta_ratio'][n])}" for n in names))
        print(f"plain: {timing['median_s']['plain'] * 1e3:.1f} ms, {memory['peak_delta_mb']['plain']:.1f} MB above "
              f"{memory['baseline_mb']['plain']:.0f} MB loaded; wrote {args.out}")
        return result


if __name__ == "__main__":
    main()
