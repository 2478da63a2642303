"""GPU side of the benchmark harness: CUDA-synchronised interleaved timing with the peak memory of every run,
out-of-memory probes, the pristine twin of a model, and the CUDA environment record.

Timing reuses `harness.interleave` (rotating order, gc frozen/collected/disabled, warm-up rounds) with each call
followed by `torch.cuda.synchronize()`, so a time is the whole of the work, not the launch. Memory per run:
`gc.collect()`, `torch.cuda.reset_peak_memory_stats()`, baseline = `memory_allocated()` (weights, inputs,
anything alive), run, peak = `max_memory_allocated()`; `peak − baseline` is what the call itself needed. On a
CPU (the smoke mode) the same code runs with no synchronisation and memory reported as None.
"""

from __future__ import annotations

import copy
import gc
import statistics
import traceback

import torch

from benchmarks import harness


def cuda(device) -> bool:
    return torch.device(device).type == "cuda"


def sync(device) -> None:
    if cuda(device):
        torch.cuda.synchronize(device)


def environment(device) -> dict:
    """`harness.environment()` plus the accelerator: name, memory, capability, CUDA / cuDNN versions."""
    env = harness.environment()
    env["device"] = str(device)
    env["torch_cuda"] = torch.version.cuda
    if cuda(device):
        p = torch.cuda.get_device_properties(device)
        env.update(gpu=p.name, gpu_memory_gib=round(p.total_memory / 2**30, 1),
                   gpu_capability=f"{p.major}.{p.minor}", gpu_multiprocessors=p.multi_processor_count,
                   cudnn=torch.backends.cudnn.version())
    return env


class Variant:
    """A named call to time: `fn()`, with untimed `before()` / `after()` (e.g. switch attention to eager)."""

    def __init__(self, fn, before=None, after=None):
        self.fn, self.before, self.after = fn, before, after


def timed(variants: dict, *, device, repeats: int, warmup: int = 1) -> dict:
    """Interleaved timing of {name: Variant | fn} with a CUDA sync in each call and the peak memory of each run.

    Returns {"raw_s": {name: [s, ...]}, "peak_delta_bytes": {name: [bytes, ...] | None}, "baseline_bytes":
    {name: [...] | None}, **harness.summarize(raw_s, first name)}: the first variant is the baseline.
    """
    on_gpu = cuda(device)
    mem = {n: [] for n in variants}
    base = {n: [] for n in variants}
    wrapped = {}
    for name, v in variants.items():
        v = v if isinstance(v, Variant) else Variant(v)

        def before(v=v, name=name):
            if v.before:
                v.before()
            if on_gpu:
                gc.collect()
                torch.cuda.reset_peak_memory_stats(device)
                base[name].append(torch.cuda.memory_allocated(device))

        def after(v=v, name=name):
            if on_gpu:
                mem[name].append(torch.cuda.max_memory_allocated(device) - base[name][-1])
            if v.after:
                v.after()

        def fn(v=v):
            v.fn()
            sync(device)

        wrapped[name] = (fn, before, after)
    raw = harness.interleave(wrapped, repeats=repeats, warmup=warmup)
    first = next(iter(variants))
    # the warm-up runs' memory readings come first in each list: keep only the measured rounds
    keep = lambda d: {n: (x[-repeats:] if on_gpu else None) for n, x in d.items()}  # noqa: E731
    out = {"raw_s": raw, "peak_delta_bytes": keep(mem), "baseline_bytes": keep(base),
           **harness.summarize(raw, first)}
    out["peak_delta_mb"] = {n: (harness.mb(statistics.median(x)) if x else None)
                            for n, x in out["peak_delta_bytes"].items()}
    out["memory_ratio"] = {n: (harness.ratio(out["peak_delta_mb"][n], out["peak_delta_mb"][first])
                               if out["peak_delta_mb"][n] is not None else None) for n in variants}
    return out


def probe(v: Variant | object, *, device) -> dict:
    """Run once (untimed warm-up / fit check); {"ok", "peak_delta_mb", "seconds" | "error"}. An out-of-memory
    error is caught and reported (`"oom": True`), the cache emptied; any other error propagates."""
    import time

    v = v if isinstance(v, Variant) else Variant(v)
    on_gpu = cuda(device)
    if v.before:
        v.before()
    try:
        if on_gpu:  # memory is measured only there; a full collection costs ~0.4 s with nnsight loaded
            gc.collect()
            torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device) if on_gpu else 0
        t0 = time.perf_counter()
        with torch.no_grad():
            v.fn()
        sync(device)
        dt = time.perf_counter() - t0
        peak = torch.cuda.max_memory_allocated(device) - base if on_gpu else None
        return {"ok": True, "oom": False, "seconds": dt, "peak_delta_mb": None if peak is None else harness.mb(peak)}
    except Exception as e:  # nnsight re-raises errors from inside a trace as its own types: match the message too
        if not (isinstance(e, torch.OutOfMemoryError) or "out of memory" in str(e).lower()):
            raise
        first = (str(e).splitlines() or [""])[0][:300]
        return {"ok": False, "oom": True, "error": f"{type(e).__name__}: {first}"}
    finally:
        if v.after:
            v.after()
        if on_gpu:
            gc.collect()
            torch.cuda.empty_cache()


def bisect_fit(fits, ok: int, fail: int, steps: int) -> tuple[int, int, list]:
    """Narrow the boundary between a size that fits (`ok`) and one that does not (`fail`) with `steps` calls of
    `fits(size) -> bool` on integer sizes. Returns (largest fitting, smallest failing, [(size, fitted), ...]).

    >>> bisect_fit(lambda n: n <= 70, 36, 128, 3)
    (70, 82, [(82, False), (59, True), (70, True)])
    """
    tried = []
    for _ in range(steps):
        if fail - ok <= 1:
            break
        mid = (ok + fail) // 2
        good = bool(fits(mid))
        tried.append((mid, good))
        ok, fail = (mid, fail) if good else (ok, mid)
    return ok, fail, tried


def twin(hf):
    """A pristine second instance of `hf`'s class that shares every parameter and buffer of `hf` (no copy, no
    extra memory), never wrapped by nnsight: the "plain HF" baseline beside `interp.load`'s instrumented model.
    Its config is a deep copy, so switching its attention implementation leaves `hf` alone."""
    with torch.device("meta"):
        other = type(hf)._from_config(copy.deepcopy(hf.config), dtype=next(hf.parameters()).dtype)
    for kind, items in (("_parameters", hf.named_parameters(remove_duplicate=False)),
                        ("_buffers", hf.named_buffers(remove_duplicate=False))):
        for name, t in items:
            mod, _, leaf = name.rpartition(".")
            getattr(other.get_submodule(mod), kind)[leaf] = t
    left = [n for n, t in [*other.named_parameters(), *other.named_buffers()] if t.is_meta]
    if left:
        raise RuntimeError(f"twin: {len(left)} tensors not shared from the original: {left[:5]}")
    other.generation_config = copy.deepcopy(hf.generation_config)
    other.set_attn_implementation("sdpa")
    return other.eval()


def failure(e: BaseException) -> dict:
    """What a part that raised leaves in its JSON (the run goes on with the next part)."""
    return {"status": "error", "error": f"{type(e).__name__}: {e}"[:2000],
            "traceback": traceback.format_exc()[-6000:]}
