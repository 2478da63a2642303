"""Cost of AIF generation as a ratio against plain HF greedy generation, with and without prefix reuse.

    .venv/bin/python -m benchmarks.aif                  # a few minutes on 2 shared CPU cores
    .venv/bin/python -m benchmarks.aif --quick --out /tmp/aif.json   # smoke run, tiny model

Model: `interp.zoo.tiny("llava", size="bench")` (random weights, LLaVA-1.5 geometry: 576 vision tokens, an
8-layer 30M-parameter Llama decoder), one image, a ~30-token question, 16 new tokens (end-of-sequence
disabled so every variant decodes exactly 16). Variants, interleaved, medians over rounds:

- `plain`: `vlm.hf.generate(**inputs, max_new_tokens=16, do_sample=False)` (the baseline);
- `aif`: `interp.intervene(vlm, interp.AIF()).generate(...)`: profiling prefill, KV prefix reuse, the
  question suffix recomputed with the mask, then KV-cached decoding;
- `aif_two_pass`: `AIF(reuse_prefix=False)`: profiling forward + a full masked generate.

Also batch throughput of `aif` (batch 8 vs batch 1: seconds per sample). Target (issue 5): aif ≤ 1.15 × plain.
Writes `benchmarks/results/aif.json` (or `--out`).
"""

from __future__ import annotations

import argparse
import os

import numpy as np
from PIL import Image

from benchmarks import harness

QUESTION = ("what is the color of the small circle left of the big square in the middle of the picture ? "
            "tell me which one it is and describe the shape")
TARGET = 1.15


def _batch(vlm, n, seed=0):
    rng = np.random.default_rng(seed)
    imgs = [Image.fromarray(rng.integers(0, 255, (336, 336, 3), dtype=np.uint8)) for _ in range(n)]
    return vlm.prepare(images=imgs, questions=[QUESTION] * n)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--new-tokens", type=int, default=16)
    ap.add_argument("--quick", action="store_true", help="tiny model, 2 repeats: a smoke run")
    ap.add_argument("--out", default=os.path.join(harness.RESULTS, "aif.json"))
    args = ap.parse_args(argv)
    with harness.session(args.threads):
        import interp

        size = "tiny" if args.quick else "bench"
        repeats = 2 if args.quick else args.repeats
        vlm = interp.zoo.tiny("llava", size=size)
        vlm.hf.generation_config.eos_token_id = None  # every variant decodes exactly n tokens
        n = args.new_tokens
        b1 = _batch(vlm, 1)
        pad = vlm.tokenizer.pad_token_id
        aif = interp.intervene(vlm, interp.AIF())
        two = interp.intervene(vlm, interp.AIF(reuse_prefix=False))
        variants = {
            "plain": lambda: vlm.hf.generate(**b1.inputs, max_new_tokens=n, do_sample=False, pad_token_id=pad),
            "aif": lambda: aif.generate(b1, max_new_tokens=n),
            "aif_two_pass": lambda: two.generate(b1, max_new_tokens=n),
        }
        raw = harness.interleave(variants, repeats=repeats)
        summary = harness.summarize(raw, "plain")
        check = aif.generate(b1, max_new_tokens=n)
        assert check.diagnostics["aif"]["reuse"], check.diagnostics["aif"]["reuse_reason"]
        # throughput: batch 8 vs batch 1, seconds per sample
        b8 = _batch(vlm, 2 if args.quick else 8)
        tp = harness.interleave({"aif_b1": lambda: aif.generate(b1, max_new_tokens=n),
                                 "aif_b8": lambda: aif.generate(b8, max_new_tokens=n)}, repeats=max(2, repeats // 2))
        per_sample = {"b1": harness.statistics.median(tp["aif_b1"]),
                      "b8": harness.statistics.median(tp["aif_b8"]) / b8.input_ids.shape[0]}
        payload = {
            "benchmark": "aif", "environment": harness.environment(),
            "config": {"model": f"zoo llava size={size}", "vision_tokens": int(b1.layout.num_vision[0]),
                       "prompt_tokens": int(b1.input_ids.shape[1]), "question_tokens": int(b1.layout.question.sum()),
                       "new_tokens": n, "repeats": repeats, "threads": args.threads,
                       "chosen_ratio": float(check.diagnostics["aif"]["ratio"][0])},
            "raw_s": raw, **summary,
            "throughput": {"seconds_per_sample": per_sample, "speedup_b8_vs_b1": per_sample["b1"] / per_sample["b8"],
                           "raw_s": tp},
            "targets": {"aif_time": TARGET},
            "met": {"aif_time": summary["ratio"]["aif"] <= TARGET},
        }
        path = harness.write(args.out, payload)
        print(f"aif ÷ plain {summary['ratio']['aif']:.3f} (paired {summary['paired_ratio']['aif']:.3f}); "
              f"two-pass ÷ plain {summary['ratio']['aif_two_pass']:.3f}; batch-8 speed-up per sample "
              f"{payload['throughput']['speedup_b8_vs_b1']:.2f}× → {path}")
        return payload


if __name__ == "__main__":
    main()
