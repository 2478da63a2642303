"""Shared benchmark machinery: interleaved timing, peak-memory children, environment record, JSON output.

Timing: every variant runs once per round, in an order rotated each round (A B C, B C A, C A B, ...), so slow
drift of a shared machine (other jobs, thermal) lands on all variants alike. `summarize` gives the ratio of
medians and the paired ratio (median over rounds of variant ÷ baseline within the round). Objects alive before
timing are frozen out of the garbage collector (`gc.freeze`), garbage is collected before each call and the
collector is off during it, as `timeit` does.

Memory: each job runs in a fresh child process (`python -m benchmarks.harness`) started with
`MALLOC_MMAP_THRESHOLD_` fixed, so large tensors are mmapped and their pages go back to the OS when freed
(RSS then tracks live tensor memory, not what glibc keeps cached). The child builds the model, warms up,
then per measured run: `malloc_trim(0)`, reads the resident set (`VmRSS`, the baseline: model loaded, inputs
prepared), resets the kernel's high-water mark (`echo 5 > /proc/self/clear_refs`), runs, reads `VmHWM`.
`peak_delta = VmHWM − baseline` is the memory the run itself needed. Where `clear_refs` is unavailable (not
Linux), the child falls back to `ru_maxrss` (one high-water mark for the process: the delta is then
`max(0, ru_maxrss after − ru_maxrss before)` and under-reports runs whose peak stays below the load's).
"""

from __future__ import annotations

import contextlib
import ctypes
import datetime
import gc
import importlib
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

import numpy as np
import torch
from PIL import Image

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(REPO, "benchmarks", "results")
MMAP_THRESHOLD = 1 << 20  # bytes: allocations above go straight to mmap in memory children


@contextlib.contextmanager
def session(threads: int):
    """What a benchmark's `main` runs inside: `threads` intra-op threads (memory children get the same number)
    and an empty model cache. Both are restored after, since `main(argv)` also runs inside other processes
    (the tests): the previous thread count comes back and the models built here are dropped."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    _MODELS.clear()
    try:
        yield
    finally:
        torch.set_num_threads(before)
        _MODELS.clear()


def environment() -> dict:
    """Machine, package versions and git state: what a reader needs to compare two result files."""
    import nnsight
    import transformers

    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            names = [l.split(":", 1)[1].strip() for l in f if l.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass

    def git(*args):
        try:
            return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "nnsight": getattr(nnsight, "__version__", "?"),
        "git_commit": git("rev-parse", "HEAD"),
        "git_dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
    }


# ---------------------------------------------------------------------------------------------- models

_MODELS: dict = {}


def models(question: str, *, arch: str = "llava", size: str = "bench", grid: int | None = None,
           grid_kw: dict | None = None, need=("vlm", "hf")):
    """`(vlm, hf, batch)` for a zoo model, cached per process (one model at a time).

    vlm: the `interp.VLM` (`interp.zoo.tiny(arch, size=size)`, or `interp.zoo.llava_grid(grid, **grid_kw)` when
    `grid` is given). hf: a *pristine* transformers model with identical weights (same zoo builder and seed),
    never wrapped by nnsight, on SDPA: the "plain HF" baseline. (`interp.load` instruments `vlm.hf`'s attention
    and decoder-stack forwards with nnsight's `.source` op hooks, so `vlm.hf(...)` is not plain HF any more.)
    batch: one random image (336 px; 64 px for tiny) and `question`. `need` says which of vlm / hf to build
    (a memory child builds only the one it measures; the other is None unless an earlier call built it).
    """
    import interp
    from interp.models import zoo

    key = (question, arch, size, grid, tuple(sorted((grid_kw or {}).items())))
    kw = dict(grid_kw or {})
    if key not in _MODELS:
        _MODELS.clear()
        gc.collect()
        vlm = interp.zoo.llava_grid(grid, check=False, **kw) if grid else interp.zoo.tiny(arch, size=size)
        side = 64 if size == "tiny" and not grid else 336
        img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (side, side, 3), dtype=np.uint8))
        batch = vlm.prepare(images=[img], questions=[question])
        _MODELS[key] = {"vlm": vlm if "vlm" in need else None, "hf": None, "batch": batch}
        del vlm
        gc.collect()
    entry = _MODELS[key]
    if "vlm" in need and entry["vlm"] is None:
        entry["vlm"] = interp.zoo.llava_grid(grid, check=False, **kw) if grid else interp.zoo.tiny(arch, size=size)
    if "hf" in need and entry["hf"] is None:
        entry["hf"], _ = zoo.build_llava_grid(grid, **kw) if grid else zoo.build(arch, size=size)
        entry["hf"].set_attn_implementation("sdpa")
    return entry["vlm"], entry["hf"], entry["batch"]


def describe(vlm, batch) -> dict:
    """Model and sequence facts for the JSON `config`."""
    tc = vlm.hf.config.get_text_config()
    lay = batch.layout
    return {"class": type(vlm.hf).__name__, "params": sum(p.numel() for p in vlm.hf.parameters()),
            "dtype": str(vlm.dtype), "decoder_layers": vlm.num_layers, "hidden": tc.hidden_size,
            "heads": tc.num_attention_heads, "seq_len": int(batch.input_ids.shape[1]),
            "vision_tokens": int(lay.vision.sum()), "question_tokens": int(lay.question.sum()),
            "batch_size": len(batch)}


# ---------------------------------------------------------------------------------------------- timing


def interleave(variants: dict, *, repeats: int, warmup: int = 1) -> dict:
    """Time each variant `repeats` times, rotating the order each round. Returns {name: [seconds, ...]}.

    variants: {name: fn} or {name: (fn, before, after)}: `before`/`after` (untimed) switch model state, e.g. the
    attention implementation, around each call.
    """
    norm = {k: (v if isinstance(v, tuple) else (v, None, None)) for k, v in variants.items()}
    names = list(norm)

    def once(name):
        fn, before, after = norm[name]
        if before:
            before()
        gc.collect()  # garbage of the previous call is not charged to this one
        gc.disable()  # nor a collection it happens to trigger (as timeit does)
        try:
            t0 = time.perf_counter()
            with torch.no_grad():
                fn()
            dt = time.perf_counter() - t0
        finally:
            gc.enable()
        if after:
            after()
        return dt

    _freeze()
    try:
        for _ in range(warmup):
            for name in names:
                once(name)
        raw = {name: [] for name in names}
        for r in range(repeats):
            k = r % len(names)
            for name in names[k:] + names[:k]:
                raw[name].append(once(name))
    finally:
        gc.unfreeze()
    return raw


def _freeze() -> None:
    """Move every object alive now (modules, models, nnsight's caches) out of the collector's reach: a full
    `gc.collect()` then costs milliseconds instead of ~0.4 s with transformers + nnsight loaded."""
    gc.collect()
    gc.freeze()


def summarize(raw: dict, baseline: str) -> dict:
    """Medians per variant; `ratio` = median(variant) / median(baseline); `paired_ratio` = median over rounds
    of the within-round ratio (robust to drift between rounds); `iqr` per variant."""
    med = {k: statistics.median(v) for k, v in raw.items()}
    out = {"median_s": med, "iqr_s": {}, "ratio": {}, "paired_ratio": {}}
    for k, v in raw.items():
        q = statistics.quantiles(v, n=4) if len(v) >= 2 else [v[0], v[0], v[0]]
        out["iqr_s"][k] = q[2] - q[0]
        out["ratio"][k] = med[k] / med[baseline]
        out["paired_ratio"][k] = statistics.median(a / b for a, b in zip(v, raw[baseline]))
    return out


# ---------------------------------------------------------------------------------------------- memory


def memory(module: str, jobs: list, *, repeats: int, warmup: int = 1, in_process: bool = False,
           timeout: float = 600) -> list:
    """Peak memory of each job, each in a fresh child process.

    A job is a JSON-able dict; the child calls `<module>.memory_job(job)` → (run_fn, info) and measures
    `run_fn()`. Returns one dict per job: job, method, baseline_bytes and peak_delta_bytes (lists, per run),
    seconds (list), info. `in_process`: measure here instead, with this process's allocator and whatever it
    has loaded (the `--quick` smoke modes: the same code, no child start; not a measurement).
    """
    spec = {"module": module, "repeats": repeats, "warmup": warmup, "threads": torch.get_num_threads()}
    if in_process:
        return _measure({**spec, "jobs": jobs})
    results = []
    for job in jobs:
        path = os.pathsep.join(p for p in (REPO, os.environ.get("PYTHONPATH", "")) if p)
        env = dict(os.environ, MALLOC_MMAP_THRESHOLD_=str(MMAP_THRESHOLD), PYTHONPATH=path, HF_HUB_OFFLINE="1")
        proc = subprocess.run([sys.executable, "-m", "benchmarks.harness", json.dumps({**spec, "jobs": [job]})],
                              cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
        lines = [l for l in proc.stdout.splitlines() if l.startswith("BENCH_RESULT ")]
        if proc.returncode != 0 or not lines:
            raise RuntimeError(f"memory child for {module} {job} failed (rc {proc.returncode}):\n"
                               f"{proc.stderr[-3000:]}")
        results += json.loads(lines[-1][len("BENCH_RESULT "):])
    return results


def _status_bytes(key: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _maxrss_bytes() -> int:
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r if sys.platform == "darwin" else r * 1024


def _reset_hwm() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return _status_bytes("VmHWM") is not None
    except OSError:
        return False


def _trim() -> None:
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _measure(spec: dict) -> list:
    """The jobs of one `memory` spec, measured in this process (a memory child's work)."""
    mod = importlib.import_module(spec["module"])
    out = []
    _freeze()  # what is alive now stays out of the collector's reach: each collection below is cheap
    try:
        for job in spec["jobs"]:
            fn, info = mod.memory_job(job)
            cold = []  # warm-up runs, measured the same way: first-call costs show up here, not in the result
            for _ in range(spec["warmup"]):
                _trim()
                base = _status_bytes("VmRSS")
                reset = _reset_hwm()
                with torch.no_grad():
                    fn()
                if reset:
                    cold.append(max(0, _status_bytes("VmHWM") - base))
            bases, deltas, secs, method = [], [], [], "VmHWM (clear_refs)"
            for _ in range(spec["repeats"]):
                _trim()
                base = _status_bytes("VmRSS")
                if _reset_hwm():
                    before = None
                else:  # no clear_refs: the process-wide high-water mark is all there is
                    method, before, base = "ru_maxrss", _maxrss_bytes(), _maxrss_bytes()
                t0 = time.perf_counter()
                with torch.no_grad():
                    fn()
                secs.append(time.perf_counter() - t0)
                peak = _status_bytes("VmHWM") if before is None else _maxrss_bytes()
                bases.append(base)
                deltas.append(max(0, peak - base))
            out.append({"job": job, "method": method, "baseline_bytes": bases, "peak_delta_bytes": deltas,
                        "warmup_peak_delta_bytes": cold, "seconds": secs, "info": info})
            del fn
            _trim()
    finally:
        gc.unfreeze()
    return out


def write(path: str, payload: dict) -> str:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(payload, f, indent=1, default=str)
        f.write("\n")
    return path


def ratio(a: float, b: float) -> float | None:
    """a / b, or None where the baseline measured nothing (tiny smoke sizes)."""
    return a / b if b > 0 else None


def fmt(x, spec=".3f") -> str:
    return "n/a" if x is None else format(x, spec)


def mb(x: float) -> float:
    return round(x / 2**20, 2)


if __name__ == "__main__":
    spec = json.loads(sys.argv[1])
    torch.set_num_threads(spec["threads"])
    result = _measure(spec)
    print("BENCH_RESULT " + json.dumps(result), flush=True)
