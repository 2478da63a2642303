"""Every benchmark (`benchmarks/capture.py`, `memory_scaling.py`, `aif.py`, `generate.py`, `patching.py`) runs end
to end in `--quick` mode (tiny models, few rounds) and writes the fields the docs table and readers rely on, its
summary numbers recomputed here from its raw ones. Not a timing assertion: CPU timings here are noise. Quick
modes measure memory in this process; the memory child (`harness.memory` without `in_process`) is checked on
its own, on a run whose allocation is known."""

import json
import math
import os
import statistics
from pathlib import Path

import pytest
import torch

from benchmarks import harness


def _environment_ok(env):
    return all(k in env for k in ("torch", "transformers", "nnsight", "cpu", "torch_threads", "date"))


def _paired(a, b):
    return statistics.median(x / y for x, y in zip(a, b))


def _check_summary(t, raw, baseline):
    """`harness.summarize`'s fields against a recomputation from the raw seconds."""
    for k, v in raw.items():
        assert len(v) >= 1 and all(isinstance(x, float) and x > 0 for x in v)
        assert t["median_s"][k] == pytest.approx(statistics.median(v))
        assert t["ratio"][k] == pytest.approx(statistics.median(v) / statistics.median(raw[baseline]))
        assert t["paired_ratio"][k] == pytest.approx(_paired(v, raw[baseline]))
    assert t["ratio"][baseline] == 1.0 and t["paired_ratio"][baseline] == 1.0


def _check_met(targets):
    for x in targets.values():
        assert x["met"] is (x["measured"] is not None and x["measured"] <= x["target"])


@pytest.fixture(autouse=True)
def _leaves_no_global_state(num_threads):
    """A benchmark's main sets one thread and caches models while it runs; it must restore both."""
    num_threads(2)
    env = dict(os.environ)
    yield
    changed = {k for k in {*env, *os.environ} if env.get(k) != os.environ.get(k)}
    # pytest names the running phase; torch's compiler sets its cache folder the first time it is used
    assert changed <= {"PYTEST_CURRENT_TEST", "TORCHINDUCTOR_CACHE_DIR"}, changed
    assert torch.get_num_threads() == 2 and not harness._MODELS


MIB = 2**20


def memory_job(job):
    """What `harness.memory` runs in its child for the test below: fill a fresh `job["mib"]` MiB tensor."""
    n = job["mib"] * MIB // 4
    return (lambda: torch.ones(n)), {"mib": job["mib"]}


def test_memory_child_measures_what_a_run_allocates(monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).parent))  # the child imports this module's memory_job
    (r,) = harness.memory("test_benchmarks_smoke", [{"mib": 48}], repeats=2)
    assert r["method"] == "VmHWM (clear_refs)" and r["info"] == {"mib": 48} and r["job"] == {"mib": 48}
    assert len(r["peak_delta_bytes"]) == len(r["baseline_bytes"]) == len(r["seconds"]) == 2
    for d in r["peak_delta_bytes"] + r["warmup_peak_delta_bytes"]:  # the tensor, give or take a few pages
        assert abs(d - 48 * MIB) < 2 * MIB, d / MIB


def test_capture_quick(tmp_path):
    from benchmarks import capture

    out = tmp_path / "capture.json"
    capture.main(["--quick", "--out", str(out)])
    d = json.loads(out.read_text())
    assert d["benchmark"] == "capture" and d["quick"] is True
    assert _environment_ok(d["environment"]) and d["environment"]["torch_threads"] == 1
    c = d["config"]
    assert c["vision_tokens"] > 0 and c["question_tokens"] > 0
    assert c["vision_tokens"] + c["question_tokens"] < c["seq_len"]  # the template's tokens are neither
    t, m = d["timing"], d["memory"]
    assert set(t["raw_s"]) == set(capture.VARIANTS)
    assert all(len(v) == c["repeats"] for v in t["raw_s"].values())
    _check_summary(t, t["raw_s"], "plain")
    for v in capture.VARIANTS:
        r = m["runs"][v]
        assert len(r["peak_delta_bytes"]) == len(r["baseline_bytes"]) == c["mem_repeats"]
        assert m["peak_delta_mb"][v] == harness.mb(statistics.median(r["peak_delta_bytes"]))
        assert m["delta_ratio"][v] == harness.ratio(m["peak_delta_mb"][v], m["peak_delta_mb"]["plain"])
    assert c["pristine_logits_equal"] is True  # the plain baseline is the same model, unwrapped
    assert m["runs"]["eager"]["info"]["attn_text"] == "eager"
    assert m["runs"]["capture"]["info"]["attn_text"] == "sdpa"
    assert not m["runs"]["plain"]["info"]["nnsight_wrapped"] and m["runs"]["capture"]["info"]["nnsight_wrapped"]
    assert set(d["targets"]) == {"capture_time", "capture_memory", "empty_trace_time"}
    assert d["targets"]["capture_time"]["measured"] == t["paired_ratio"]["capture"]
    _check_met(d["targets"])


def test_memory_scaling_quick(tmp_path):
    from benchmarks import memory_scaling

    out = tmp_path / "scaling.json"
    memory_scaling.main(["--quick", "--out", str(out)])
    d = json.loads(out.read_text())
    assert d["benchmark"] == "memory_scaling" and d["quick"] is True
    assert _environment_ok(d["environment"]) and d["config"]["method"] == "VmHWM (clear_refs)"
    sizes, cfg = d["sizes"], d["config"]
    assert [s["vision_tokens"] for s in sizes] == [g * g for g in (4, 8)]
    assert sizes[1]["seq_len"] - sizes[0]["seq_len"] == 8 * 8 - 4 * 4  # only the vision tokens change
    for s in sizes:
        T = s["seq_len"]
        assert s["eager_maps_mb"] == harness.mb(cfg["decoder_layers"] * cfg["heads"] * T * T * 4)
        for v in memory_scaling.VARIANTS:
            r = s["runs"][v]
            assert r["info"]["seq_len"] == T and len(r["peak_delta_bytes"]) == cfg["repeats"]
            assert s["peak_delta_mb"][v] == harness.mb(statistics.median(r["peak_delta_bytes"]))
            assert s["delta_ratio"][v] == harness.ratio(s["peak_delta_mb"][v], s["peak_delta_mb"]["plain"])
            total = (s["baseline_mb"][v] + s["peak_delta_mb"][v]) / (s["baseline_mb"]["plain"] + s["peak_delta_mb"]["plain"])
            assert s["total_ratio"][v] == pytest.approx(total)
        assert s["runs"]["eager"]["info"]["attn_text"] == "eager" and s["runs"]["plain"]["info"]["attn_text"] == "sdpa"
        assert s["runs"]["capture"]["info"]["nnsight_wrapped"] and not s["runs"]["eager"]["info"]["nnsight_wrapped"]


def test_aif_quick(tmp_path):
    from benchmarks import aif

    out = tmp_path / "aif.json"
    aif.main(["--quick", "--new-tokens", "4", "--out", str(out)])
    d = json.loads(out.read_text())
    assert d["benchmark"] == "aif" and _environment_ok(d["environment"])
    assert set(d["raw_s"]) == {"plain", "aif", "aif_two_pass"} and d["config"]["new_tokens"] == 4
    assert all(len(v) == d["config"]["repeats"] for v in d["raw_s"].values())
    _check_summary(d, d["raw_s"], "plain")
    tp = d["throughput"]
    assert tp["seconds_per_sample"]["b1"] == statistics.median(tp["raw_s"]["aif_b1"])
    assert tp["speedup_b8_vs_b1"] == pytest.approx(tp["seconds_per_sample"]["b1"] / tp["seconds_per_sample"]["b8"])
    assert d["met"]["aif_time"] is (d["ratio"]["aif"] <= d["targets"]["aif_time"])


def test_generate_quick(tmp_path):
    from benchmarks import generate

    out = tmp_path / "generate.json"
    generate.main(["--quick", "--cases", "aif_beams2,long_edge", "--new-tokens", "4", "--out", str(out)])
    d = json.loads(out.read_text())
    assert d["benchmark"] == "generate" and _environment_ok(d["environment"])
    raw = d["raw_s"]
    assert set(raw) == {"aif_beams2", "plain_aif_beams2", "long_edge", "plain_long_edge"}
    for c in ("aif_beams2", "long_edge"):
        assert d["paired_ratio"][c] == pytest.approx(_paired(raw[c], raw[f"plain_{c}"]))
    mem = d["long_memory"]
    assert [r["info"]["variant"] for r in mem["runs"]] == ["plain", "edge", "aif"]
    delta = {r["info"]["variant"]: statistics.median(r["peak_delta_bytes"]) for r in mem["runs"]}
    assert d["paired_ratio"]["long_edge_memory"] == harness.ratio(delta["edge"], delta["plain"])
    assert set(d["met"]) == {"aif_beams2", "long_edge", "long_edge_memory", "long_aif_memory"}
    for k, v in d["met"].items():
        r = d["paired_ratio"][k]
        assert v is (r is not None and r <= d["targets"][k])
    assert all(math.isfinite(v) for v in d["median_s"].values())


def test_patching_quick(tmp_path):
    from benchmarks import patching

    out = tmp_path / "patching.json"
    patching.main(["--quick", "--out", str(out)])
    d = json.loads(out.read_text())
    assert d["benchmark"] == "patching" and d["quick"] is True and _environment_ok(d["environment"])
    assert set(d["raw_s"]) == {"per_variant", "batched", "knockout_per_variant", "knockout_batched"}
    c = d["config"]
    assert c["layers"] == [0, c["decoder_layers"] - 1] and c["variants"] == 2 * c["seq_len"]
    # the batched tools reproduce one forward per variant (the benchmark's own check, recorded)
    assert d["max_abs_difference"]["patch_sweep"] <= 1e-4 and d["max_abs_difference"]["knockout_flow"] <= 1e-4
    assert d["met"]["identical"] is True
    assert d["speedup"]["patch_sweep"] == pytest.approx(1 / _paired(d["raw_s"]["batched"], d["raw_s"]["per_variant"]))
    assert d["met"]["speedup"] is (d["speedup"]["patch_sweep"] >= d["targets"]["speedup"])
