"""Cost of generation under interventions, as paired ratios against plain HF `generate` with the same options.

    .venv/bin/python -m benchmarks.generate                 # ~4 min on 2 shared CPU cores
    .venv/bin/python -m benchmarks.generate --quick --out /tmp/generate.json   # smoke run, tiny model

Model: `interp.zoo.tiny("llava", size="bench")` (random weights, LLaVA-1.5 geometry: 576 vision tokens, an
8-layer Llama decoder), one image and a ~30-token question, 16 new tokens with end-of-sequence disabled so
every variant decodes exactly 16. The baseline is a *pristine* HF model with the same weights, never wrapped by
nnsight. Cases (each interp variant against plain `generate` with the same options, in the same round):

- `aif_greedy`, `aif_min_new_tokens` (min_new_tokens=8, repetition_penalty=1.2), `aif_sampling` (top-k 50,
  top-p 0.9, temperature 0.8), `aif_beams2` (num_beams=2): `intervene(vlm, AIF())` — a profiling forward, its
  KV prefix handed to HF generate, only the question suffix recomputed with the mask;
- `edge_sampling`: `intervene(vlm, EdgeMask("after_image", "vision"))` with the sampling options;
- `long_edge`, `long_aif`: `max_new_tokens=16384` with a 2-token answer (a stopping criterion ends both after
  two tokens) under the EdgeMask and under AIF: time interleaved as above, peak memory above the loaded model
  in fresh child processes (4 per variant, interleaved; median of their runs). (With two new tokens AIF's
  profiling pass is a second prefill-sized forward, so `long_aif` measures AIF's fixed cost; `long_edge`
  measures what planning 16,384 positions costs.)

Rounds are interleaved (order rotated each round), one thread; the headline is the paired ratio (median over
rounds of interp ÷ plain in the same round). Writes `benchmarks/results/generate.json` (or `--out`).
"""

from __future__ import annotations

import argparse
import os
import statistics

import torch
from transformers import StoppingCriteria, StoppingCriteriaList

from benchmarks import harness

QUESTION = ("what is the color of the small circle left of the big square in the middle of the picture ? "
            "tell me which one it is and describe the shape")
SAMPLING = dict(do_sample=True, top_k=50, top_p=0.9, temperature=0.8)
CASES = {  # name: (intervention kind, generate options)
    "aif_greedy": ("aif", {}),
    "aif_min_new_tokens": ("aif", dict(min_new_tokens=8, repetition_penalty=1.2)),
    "aif_sampling": ("aif", SAMPLING),
    "aif_beams2": ("aif", dict(num_beams=2)),
    "edge_sampling": ("edge", SAMPLING),
    "long_edge": ("edge", "long"),
    "long_aif": ("aif", "long"),
}
TARGETS = {"aif_greedy": 1.10, "aif_min_new_tokens": 1.15, "aif_sampling": 1.15, "aif_beams2": 1.25,
           "edge_sampling": 1.10, "long_edge": 1.10, "long_aif": 1.10,
           "long_edge_memory": 1.10, "long_aif_memory": 1.10}
LONG = 16384


class StopAfter(StoppingCriteria):
    """Stops every row `n` tokens after the prompt (a fixed-length answer, whatever the weights)."""

    def __init__(self, prompt_len: int, n: int):
        self.end = prompt_len + n

    def __call__(self, input_ids, scores, **kw):
        return torch.full((input_ids.shape[0],), input_ids.shape[1] >= self.end, dtype=torch.bool,
                          device=input_ids.device)


def _options(opts, batch, n):
    if opts == "long":
        return dict(max_new_tokens=LONG, stopping_criteria=StoppingCriteriaList([StopAfter(batch.input_ids.shape[1], 2)]))
    return dict(max_new_tokens=n, **opts)


def _variants(vlm, hf, batch, n, cases):
    import interp

    runs = {"aif": interp.intervene(vlm, interp.AIF()), "edge": interp.intervene(vlm, interp.EdgeMask("after_image", "vision"))}
    out = {}
    for name in cases:
        kind, opts = CASES[name]
        kw = _options(opts, batch, n)
        out[f"plain_{name}"] = lambda kw=kw: hf.generate(**batch.inputs, **kw)
        out[name] = lambda kind=kind, kw=kw: runs[kind].generate(batch, **kw)
    return out


def memory_job(job: dict):
    """Runs in a memory child: plain, EdgeMask or AIF generate with max_new_tokens=16384, a 2-token answer."""
    import interp

    plain = job["variant"] == "plain"
    vlm, hf, batch = harness.models(QUESTION, size=job["size"], need=("hf",) if plain else ("vlm",))
    kw = _options("long", batch, 0)
    if plain:
        hf.generation_config.eos_token_id = None
        fn = lambda: hf.generate(**batch.inputs, **kw)  # noqa: E731
    else:
        vlm.hf.generation_config.eos_token_id = None
        iv = interp.AIF() if job["variant"] == "aif" else interp.EdgeMask("after_image", "vision")
        run = interp.intervene(vlm, iv)
        fn = lambda: run.generate(batch, **kw)  # noqa: E731
    return fn, {"variant": job["variant"]}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--new-tokens", type=int, default=16)
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--memory-children", type=int, default=4, help="fresh processes per variant for peak memory")
    ap.add_argument("--quick", action="store_true", help="smoke run: tiny model, 2 repeats, memory measured in this process")
    ap.add_argument("--out", default=os.path.join(harness.RESULTS, "generate.json"))
    args = ap.parse_args(argv)
    with harness.session(args.threads):
        size = "tiny" if args.quick else "bench"
        repeats = 2 if args.quick else args.repeats
        cases = [c for c in args.cases.split(",") if c]
        vlm, hf, batch = harness.models(QUESTION, size=size)
        for m in (vlm.hf, hf):
            m.generation_config.eos_token_id = None  # every variant decodes exactly n tokens
        n = args.new_tokens
        variants = _variants(vlm, hf, batch, n, cases)
        # the same tokens come out of both (greedy), and AIF reused its prefix under every option
        import interp

        check = interp.intervene(vlm, interp.AIF()).generate(batch, max_new_tokens=n, num_beams=2)
        assert check.diagnostics["aif"]["reuse"], check.diagnostics["aif"]["reuse_reason"]
        raw = harness.interleave(variants, repeats=repeats)
        paired = {c: statistics.median(a / b for a, b in zip(raw[c], raw[f"plain_{c}"])) for c in cases}
        med = {k: statistics.median(v) for k, v in raw.items()}
        result = {"paired_ratio": paired, "median_s": med, "raw_s": raw}
        if any(c.startswith("long") for c in cases):
            # a fresh child's high-water mark varies by a few MB with the allocator's state: several children per
            # variant, interleaved, and the median over all their runs
            children = 1 if args.quick else args.memory_children
            jobs = [{"variant": v, "size": size} for _ in range(children) for v in ("plain", "edge", "aif")]
            mem = harness.memory("benchmarks.generate", jobs, repeats=1 if args.quick else 2, in_process=args.quick)
            runs = {}
            for r in mem:
                runs.setdefault(r["info"]["variant"], []).extend(r["peak_delta_bytes"])
            delta = {v: statistics.median(b) for v, b in runs.items()}
            result["long_memory"] = {"peak_delta_mb": {k: harness.mb(v) for k, v in delta.items()}, "runs": mem}
            for v in ("edge", "aif"):
                paired[f"long_{v}_memory"] = harness.ratio(delta[v], delta["plain"])
        payload = {"benchmark": "generate", "environment": harness.environment(),
                   "config": {**harness.describe(vlm, batch), "new_tokens": n, "repeats": repeats,
                              "threads": args.threads, "cases": {c: str(CASES[c][1]) for c in cases}},
                   **result, "targets": TARGETS,
                   "met": {k: (v is not None and v <= TARGETS[k]) for k, v in paired.items()}}
        path = harness.write(args.out, payload)
        for k, v in paired.items():
            print(f"{k:20s} {harness.fmt(v)} × plain (target ≤ {TARGETS[k]})")
        print(f"→ {path}")
        return payload


if __name__ == "__main__":
    main()
