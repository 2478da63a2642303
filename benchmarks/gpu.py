"""Real-size speed and memory on one GPU: LLaVA-1.5-7B and Qwen2.5-VL-7B geometry, random bf16 weights.

    bash benchmarks/gpu.sh                                  # the GPU run, < 8 min on one H200 → results/gpu_*.json
    .venv/bin/python -m benchmarks.gpu --quick --out-dir /tmp/gpu   # CPU smoke mode: tiny geometry, same code

Models: `interp.zoo.build(arch, size="7b", device="cuda")` (published configs, meta device → `to_empty` →
init on the GPU), wrapped by `interp.load`; the baseline `plain` is a pristine twin sharing the same weight
tensors, never touched by nnsight (`gpu_harness.twin`). Every timing is interleaved over `--repeats` rounds
(after a warm-up round) with `torch.cuda.synchronize()` in each call; every run's peak
`torch.cuda.max_memory_allocated` above what was allocated before it is recorded. Ratios are paired (median
over rounds of variant ÷ plain in the same round), the ratio of medians beside them. Parts, each → one JSON:

- `llava_forward` (gpu_llava_forward.json): plain SDPA forward vs `vlm.hf` after load, `interp.capture` (all
  layers), eager `output_attentions=True` (language model eager), an empty trace; 576 vision tokens, T ≈ 610.
- `generate` (gpu_generate.json): plain HF `generate` vs `interp.intervene(vlm, AIF()).generate` vs
  `EdgeMask("text", "vision")` generate; 32 new tokens (end-of-sequence off), greedy and sampling, batch 1 and 8.
- `evaluate` (gpu_evaluate.json): `interp.evaluate` vs a plain batched HF generate loop (prepare, generate,
  decode, score) at batch 16, samples per second.
- `flow` (gpu_flow.json): seconds per sample of the information-flow tools that exist (`flow_tools`).
- `qwen_forward` (gpu_qwen_forward.json): plain vs capture vs eager at ~1,300 / 4,096 / 16,384 vision tokens;
  eager's out-of-memory point is caught and narrowed by bisection on the image side.

gpu_summary.json holds the environment, each part's status and wall time, and the issue's targets. A part
that raises is recorded (status "error", traceback) and the run goes on; the exit status is then 1.
"""

from __future__ import annotations

import argparse
import gc
import inspect
import math
import os
import sys
import tempfile
import time

import numpy as np
import torch
from PIL import Image

from benchmarks import gpu_harness as gh
from benchmarks import harness
from benchmarks.capture import EAGER, QUESTION

TARGETS = {"capture_time": 1.10, "capture_memory": 1.05, "aif_generate_time": 1.10, "capture_memory_16k": 1.10}
PARTS = ("llava_forward", "generate", "evaluate", "flow", "qwen_forward")


# ---------------------------------------------------------------------------------------------- models

class Models:
    """One model at a time on the device: `get(arch)` → (vlm, plain, info); switching frees the previous one."""

    def __init__(self, args):
        self.args, self.arch, self.entry = args, None, None

    def get(self, arch: str):
        import interp
        from interp.models import zoo

        if arch != self.arch:
            self.entry = self.arch = None
            gc.collect()
            if gh.cuda(self.args.device):
                torch.cuda.empty_cache()
            t0 = time.perf_counter()
            hf, proc = zoo.build(arch, size=self.args.size, device=self.args.device, dtype=torch.bfloat16)
            gh.sync(self.args.device)
            built = time.perf_counter() - t0
            vlm = interp.load(hf, processor=proc)  # with the load-time site self-check
            plain = gh.twin(hf)
            for m in (vlm.hf, plain):
                m.generation_config.eos_token_id = None  # every variant decodes exactly max_new_tokens
            info = {"arch": arch, "size": self.args.size, "class": type(hf).__name__, "dtype": "bfloat16",
                    "params": sum(p.numel() for p in hf.parameters()), "build_s": built,
                    "load_s": time.perf_counter() - t0 - built,
                    "weights_mb": harness.mb(sum(p.numel() * p.element_size() for p in hf.parameters()))}
            self.arch, self.entry = arch, (vlm, plain, info)
        return self.entry


def images(n: int, side: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 255, (side, side, 3), dtype=np.uint8)) for _ in range(n)]


def forward_variants(vlm, plain, batch, names) -> dict:
    """{name: Variant} for the forward comparisons; `eager` switches the pristine twin's language model."""
    import interp

    eager = gh.Variant(lambda: plain(**batch.inputs, output_attentions=True),
                       before=lambda: plain.set_attn_implementation(EAGER),
                       after=lambda: plain.set_attn_implementation("sdpa"))
    table = {"plain": lambda: plain(**batch.inputs), "hf_wrapped": lambda: vlm.hf(**batch.inputs),
             "capture": lambda: interp.capture(vlm, batch), "eager": eager,
             "empty_trace": lambda: interp.intervene(vlm).forward(batch)}
    return {n: table[n] for n in names}


def sequence(batch) -> dict:
    lay = batch.layout
    return {"batch_size": len(batch), "seq_len": int(batch.input_ids.shape[1]),
            "vision_tokens": int(lay.vision[0].sum()), "question_tokens": int(lay.question[0].sum())}


# ---------------------------------------------------------------------------------------------- parts

def llava_forward(models, args) -> dict:
    vlm, plain, info = models.get("llava")
    batch = vlm.prepare(images=images(1, 336), questions=[QUESTION])
    with torch.no_grad():
        a, b = plain(**batch.inputs).logits, vlm.hf(**batch.inputs).logits
    names = ("plain", "hf_wrapped", "capture", "eager", "empty_trace")
    t = gh.timed(forward_variants(vlm, plain, batch, names), device=args.device, repeats=args.repeats)
    return {"model": info, "sequence": sequence(batch), "pristine_logits_equal": bool(torch.equal(a, b)),
            "pristine_logits_max_abs_diff": float((a.float() - b.float()).abs().max()),
            "capture": "interp.capture(vlm, batch): all layers, question rows, heads mean",
            "eager_scope": "language model eager, vision tower SDPA, output_attentions=True", "timing": t}


SAMPLING = {"greedy": {"do_sample": False}, "sample": {"do_sample": True, "temperature": 0.7, "top_p": 0.9}}


def generate(models, args) -> dict:
    import interp

    vlm, plain, info = models.get("llava")
    pad, n = vlm.tokenizer.pad_token_id, args.new_tokens
    aif = interp.intervene(vlm, interp.AIF())
    cut = interp.intervene(vlm, interp.EdgeMask("text", "vision"))
    configs = {}
    for bs in args.gen_batches:
        batch = vlm.prepare(images=images(bs, 336, seed=bs), questions=[QUESTION] * bs)
        for mode, kw in SAMPLING.items():
            counts = {}

            def run(name, fn):
                def call():
                    out = fn()
                    counts[name] = int(out.shape[1] - batch.input_ids.shape[1]) if torch.is_tensor(out) \
                        else int(out.new_tokens.shape[1])
                return call

            variants = {
                "plain": run("plain", lambda: plain.generate(**batch.inputs, max_new_tokens=n, pad_token_id=pad, **kw)),
                "aif": run("aif", lambda: aif.generate(batch, max_new_tokens=n, **kw)),
                "edge_mask": run("edge_mask", lambda: cut.generate(batch, max_new_tokens=n, **kw)),
            }
            t = gh.timed(variants, device=args.device, repeats=args.gen_repeats)
            configs[f"{mode}_b{bs}"] = {"mode": mode, "generate_kwargs": kw, "batch_size": bs, "new_tokens": counts,
                                        "timing": t}
    check = aif.generate(batch, max_new_tokens=2)
    d = check.diagnostics["aif"]
    return {"model": info, "sequence": sequence(batch), "max_new_tokens": n, "configs": configs,
            "aif_prefix_reuse": bool(d.get("reuse")), "aif_reuse_reason": d.get("reuse_reason"),
            "eos": "generation_config.eos_token_id = None on both models: every variant decodes max_new_tokens"}


def evaluate(models, args) -> dict:
    import interp
    from interp.data import score

    vlm, plain, info = models.get("llava")
    samples = interp.toy.dataset(args.eval_samples, seed=0)
    bs, n, pad, tok = args.eval_batch, args.eval_new_tokens, vlm.tokenizer.pad_token_id, vlm.tokenizer
    tmp = tempfile.mkdtemp(prefix="gpu_eval_")
    calls = iter(range(10**6))

    def with_interp():  # a fresh results file each call, or evaluate would resume the last one
        interp.evaluate(vlm, samples, batch_size=bs, max_new_tokens=n, progress=False,
                        out=os.path.join(tmp, f"run{next(calls)}.jsonl"))

    def plain_loop():  # what a user writes without interp: prepare, generate, decode, score
        for i in range(0, len(samples), bs):
            chunk = samples[i:i + bs]
            batch = vlm.prepare(images=[s.image for s in chunk], questions=[s.question for s in chunk])
            out = plain.generate(**batch.inputs, max_new_tokens=n, do_sample=False, pad_token_id=pad)
            texts = tok.batch_decode(out[:, batch.input_ids.shape[1]:], skip_special_tokens=True)
            for s, text in zip(chunk, texts):
                score(s, text, "auto")

    t = gh.timed({"plain_loop": plain_loop, "evaluate": with_interp}, device=args.device,
                 repeats=args.gen_repeats)
    per_s = {k: len(samples) / v for k, v in t["median_s"].items()}
    return {"model": info, "samples": len(samples), "batch_size": bs, "max_new_tokens": n,
            "data": f"interp.toy.dataset({len(samples)}, seed=0)", "samples_per_s": per_s,
            "throughput_ratio": per_s["evaluate"] / per_s["plain_loop"], "timing": t}


def flow_tools(interp) -> dict:
    """THE HOOK for the information-flow tools: {name: fn(vlm, clean, corrupt)}. `patch_sweep` exists today
    (one forward per layer × group); `knockout_flow` is added here as soon as `interp.knockout_flow` exists,
    and `patch_sweep` is timed batched once it takes a `batch_size` argument."""
    tools = {"patch_sweep": lambda vlm, clean, corrupt: interp.patch_sweep(vlm, clean, corrupt)}
    if "batch_size" in inspect.signature(interp.patch_sweep).parameters:
        tools["patch_sweep_batched"] = lambda vlm, clean, corrupt: interp.patch_sweep(vlm, clean, corrupt,
                                                                                      batch_size=16)
    if hasattr(interp, "knockout_flow"):
        tools["knockout_flow"] = lambda vlm, clean, corrupt: interp.knockout_flow(vlm, clean)
    return tools


def flow(models, args) -> dict:
    import interp

    vlm, plain, info = models.get("llava")
    clean, corrupt = (vlm.prepare(images=images(1, 336, seed=s), questions=[QUESTION]) for s in (1, 2))
    tools = flow_tools(interp)
    t = gh.timed({"plain_forward": lambda: plain(**clean.inputs),
                  **{k: (lambda f=f: f(vlm, clean, corrupt)) for k, f in tools.items()}},
                 device=args.device, repeats=args.flow_repeats)
    missing = [k for k in ("knockout_flow", "patch_sweep_batched") if k not in tools]
    return {"model": info, "sequence": sequence(clean), "tools": list(tools),
            "not_yet_in_interp": missing, "seconds_per_sample": {k: t["median_s"][k] / len(clean) for k in tools},
            "timing": t}


def qwen_forward(models, args) -> dict:
    vlm, plain, info = models.get("qwen2_5_vl")
    ip = vlm.processor.image_processor
    unit = ip.patch_size * ip.merge_size  # one merged vision token covers unit × unit pixels
    by_side = {}

    def batch_at(side):
        return vlm.prepare(images=images(1, side * unit, seed=side), questions=[QUESTION])

    def eager_fits(side):
        b = batch_at(side)
        r = gh.probe(forward_variants(vlm, plain, b, ["eager"])["eager"], device=args.device)
        by_side.setdefault(side, {})["eager_probe"] = {**r, **sequence(b)}
        return r["ok"]

    sizes = []
    for target in args.qwen_tokens:
        side = max(1, round(math.sqrt(target)))
        batch = batch_at(side)
        probes = {n: gh.probe(v, device=args.device)
                  for n, v in forward_variants(vlm, plain, batch, ("plain", "capture", "eager")).items()}
        fit = [n for n in ("plain", "capture", "eager") if probes[n]["ok"]]
        t = gh.timed(forward_variants(vlm, plain, batch, fit), device=args.device, repeats=args.repeats) \
            if "plain" in fit else None
        sizes.append({"target_vision_tokens": target, "side_px": side * unit, **sequence(batch),
                      "probes": probes, "timed": fit, "timing": t})
        by_side[side] = {"eager_probe": {**probes["eager"], **sequence(batch)}}
        del batch
    oom = None
    sides = [max(1, round(math.sqrt(s))) for s in args.qwen_tokens]
    ok_sides = [s for s in sides if by_side[s]["eager_probe"]["ok"]]
    bad_sides = [s for s in sides if not by_side[s]["eager_probe"]["ok"]]
    if bad_sides:
        lo = max([s for s in ok_sides if s < min(bad_sides)], default=0)
        ok, fail, tried = gh.bisect_fit(eager_fits, lo, min(bad_sides), args.bisect)
        tokens = lambda s: by_side[s]["eager_probe"]["vision_tokens"] if s in by_side else None  # noqa: E731
        oom = {"eager_fits_up_to_vision_tokens": tokens(ok) if ok else None,
               "eager_oom_from_vision_tokens": tokens(fail), "bisection": tried}
    return {"model": info, "merged_token_px": unit, "sizes": sizes, "eager_oom": oom,
            "eager_scope": "language model eager, vision tower SDPA, output_attentions=True"}


# ---------------------------------------------------------------------------------------------- summary

def targets(results: dict) -> dict:
    """The issue's targets, each {"target", "measured", "met"} (None where its part did not run)."""
    out = {}

    def put(key, value, note=""):
        out[key] = {"target": TARGETS[key.split(":")[0]], "measured": value,
                    "met": None if value is None else bool(value <= TARGETS[key.split(":")[0]]), "note": note}

    def label(part):
        m = results.get(part, {}).get("model", {})
        return f"{m.get('arch')} size={m.get('size')}"

    f = results.get("llava_forward", {}).get("timing")
    put("capture_time", f and f["paired_ratio"]["capture"], f"{label('llava_forward')}, paired ratio ×plain")
    put("capture_memory", f and f["memory_ratio"]["capture"], f"{label('llava_forward')}, peak above allocated ×plain")
    g = results.get("generate", {})
    for k, c in g.get("configs", {}).items():
        put(f"aif_generate_time:{k}", c["timing"]["paired_ratio"]["aif"],
            f"{label('generate')}, {g['max_new_tokens']} new tokens, paired ratio ×plain")
    sizes = results.get("qwen_forward", {}).get("sizes", [])
    big = max(sizes, key=lambda s: s["vision_tokens"], default=None)
    if big and big["timing"]:
        put("capture_memory_16k", big["timing"]["memory_ratio"].get("capture"),
            f"{label('qwen_forward')} at {big['vision_tokens']} vision tokens; eager "
            + ("fit" if big["probes"]["eager"]["ok"] else "ran out of memory"))
    return out


def run_part(part, models, args, results, env, command) -> None:
    """Run one part, catching its error (one broken part must not cost the rest of a scarce GPU run); write
    its JSON."""
    t0 = time.perf_counter()
    try:
        results[part] = {"status": "ok", **globals()[part](models, args)}
    except Exception as e:  # noqa: BLE001
        results[part] = gh.failure(e)
        print(results[part]["traceback"], file=sys.stderr, flush=True)
    results[part]["wall_s"] = time.perf_counter() - t0
    harness.write(os.path.join(args.out_dir, f"gpu_{part}.json"),
                  {"benchmark": f"gpu_{part}", "command": command, "quick": args.quick, "environment": env,
                   "args": vars(args), **results[part]})


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="CPU smoke mode: tiny geometry, 1 round after the warm-up, small sizes")
    ap.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS))
    ap.add_argument("--out-dir", default=harness.RESULTS)
    ap.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    ap.add_argument("--repeats", type=int, default=7, help="interleaved rounds for forwards (≥ 5)")
    ap.add_argument("--gen-repeats", type=int, default=5, help="interleaved rounds for generate / evaluate")
    ap.add_argument("--flow-repeats", type=int, default=3)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--gen-batches", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--eval-samples", type=int, default=32)
    ap.add_argument("--eval-batch", type=int, default=16)
    ap.add_argument("--eval-new-tokens", type=int, default=16)
    ap.add_argument("--qwen-tokens", type=int, nargs="+", default=[1296, 4096, 16384],
                    help="vision-token counts (square grids of merged tokens)")
    ap.add_argument("--bisect", type=int, default=3, help="eager OOM bisection steps on the image side")
    ap.add_argument("--budget-s", type=float, default=450, help="parts not started by then are skipped")
    args = ap.parse_args(argv)
    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    args.size = "7b"
    if args.quick:
        args.size, args.repeats, args.gen_repeats, args.flow_repeats = "tiny", 1, 1, 1
        args.new_tokens, args.gen_batches, args.eval_samples, args.eval_batch = 4, [1, 2], 4, 2
        args.eval_new_tokens, args.qwen_tokens, args.bisect = 4, [4, 16, 36], 2
    # on a CPU one thread (the smoke mode shares 2 cores with other jobs); a GPU run keeps the process's count
    with harness.session(1 if args.device == "cpu" else torch.get_num_threads()):
        t_start = time.perf_counter()
        env = gh.environment(args.device)
        command = "python -m benchmarks.gpu " + " ".join(argv if argv is not None else sys.argv[1:])
        models, results, status = Models(args), {}, {}
        try:
            for part in [p for p in PARTS if p in args.parts]:
                elapsed = time.perf_counter() - t_start
                if elapsed > args.budget_s:
                    status[part] = {"status": "skipped", "reason": f"budget: {elapsed:.0f} s > {args.budget_s:.0f} s"}
                    continue
                print(f"[{elapsed:6.1f} s] {part} ...", flush=True)
                status[part] = {"status": "running"}
                run_part(part, models, args, results, env, command)
                status[part] = {"status": results[part]["status"], "wall_s": results[part]["wall_s"]}
        except KeyboardInterrupt:  # gpu.sh's hard stop (SIGINT): keep what finished, say what did not
            for part in args.parts:
                if status.get(part, {}).get("status") in (None, "running"):
                    status[part] = {"status": "interrupted"}
        summary = {"benchmark": "gpu_summary", "command": command, "quick": args.quick, "environment": env,
                   "args": vars(args), "parts": status, "targets": targets(results),
                   "total_s": time.perf_counter() - t_start}
        harness.write(os.path.join(args.out_dir, "gpu_summary.json"), summary)
        for k, v in summary["targets"].items():
            print(f"{k:34s} {harness.fmt(v['measured'])} (target ≤ {v['target']}) {v['note']}")
        print(f"total {summary['total_s']:.0f} s; parts: " + ", ".join(f"{k} {v['status']}" for k, v in status.items()))
        return 0 if all(v["status"] == "ok" for v in status.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
