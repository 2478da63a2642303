"""Every benchmark (`benchmarks/capture.py`, `memory_scaling.py`, `aif.py`, `patching.py`) runs end to end in
`--quick` mode (tiny models, one memory child) and writes the fields the docs table and readers rely on. Not a timing
assertion: CPU timings here are noise."""

import json
import math


def _finite_ratios(d):
    return all(isinstance(v, float) and math.isfinite(v) and v > 0 for v in d.values())


def _environment_ok(env):
    return all(k in env for k in ("torch", "transformers", "nnsight", "cpu", "torch_threads", "date"))


def test_capture_quick(tmp_path):
    from benchmarks import capture

    out = tmp_path / "capture.json"
    capture.main(["--quick", "--out", str(out)])
    d = json.loads(out.read_text())
    assert d["benchmark"] == "capture" and d["quick"] is True
    assert _environment_ok(d["environment"])
    assert d["config"]["vision_tokens"] > 0 and d["config"]["question_tokens"] > 0
    t, m = d["timing"], d["memory"]
    for v in capture.VARIANTS:
        assert len(t["raw_s"][v]) == d["config"]["repeats"]
        assert all(x > 0 for x in t["raw_s"][v])
        assert m["runs"][v]["peak_delta_bytes"] and m["runs"][v]["baseline_bytes"][0] > 0
    for key in ("median_s", "ratio", "paired_ratio"):
        assert _finite_ratios(t[key]) and t[key]["plain"] > 0
    assert t["ratio"]["plain"] == 1.0
    assert set(m["delta_ratio"]) == set(capture.VARIANTS) and m["delta_ratio"]["plain"] in (1.0, None)
    assert d["config"]["pristine_logits_equal"] is True  # the plain baseline is the same model, unwrapped
    assert m["runs"]["eager"]["info"]["attn_text"] == "eager"
    assert m["runs"]["capture"]["info"]["attn_text"] == "sdpa"
    assert not m["runs"]["plain"]["info"]["nnsight_wrapped"] and m["runs"]["capture"]["info"]["nnsight_wrapped"]
    assert set(d["targets"]) == {"capture_time", "capture_memory", "empty_trace_time"}
    assert all(isinstance(x["met"], bool) for x in d["targets"].values())


def test_memory_scaling_quick(tmp_path):
    from benchmarks import memory_scaling

    out = tmp_path / "scaling.json"
    memory_scaling.main(["--quick", "--out", str(out)])
    d = json.loads(out.read_text())
    assert d["benchmark"] == "memory_scaling" and d["quick"] is True
    assert _environment_ok(d["environment"])
    sizes = d["sizes"]
    assert [s["vision_tokens"] for s in sizes] == [g * g for g in (4, 8)]
    assert sizes[0]["seq_len"] < sizes[1]["seq_len"]
    for s in sizes:
        assert set(s["peak_delta_mb"]) == set(memory_scaling.VARIANTS)
        assert s["delta_ratio"]["plain"] in (1.0, None)  # None: the tiny plain forward needed no new page
        assert s["eager_maps_mb"] >= 0 and _finite_ratios(s["total_ratio"])
        assert all(s["runs"][v]["peak_delta_bytes"] for v in memory_scaling.VARIANTS)
        assert s["runs"]["eager"]["info"]["attn_text"] == "eager" and s["runs"]["plain"]["info"]["attn_text"] == "sdpa"


def test_aif_quick(tmp_path):
    from benchmarks import aif

    out = tmp_path / "aif.json"
    aif.main(["--quick", "--out", str(out)])
    d = json.loads(out.read_text())
    assert d["benchmark"] == "aif" and _environment_ok(d["environment"])
    assert set(d["raw_s"]) == {"plain", "aif", "aif_two_pass"}
    assert _finite_ratios(d["ratio"]) and _finite_ratios(d["paired_ratio"])
    assert "aif_time" in d["targets"] and isinstance(d["met"]["aif_time"], bool)


def test_generate_quick(tmp_path):
    from benchmarks import generate

    out = tmp_path / "generate.json"
    generate.main(["--quick", "--cases", "aif_beams2,long_edge", "--out", str(out)])
    d = json.loads(out.read_text())
    assert d["benchmark"] == "generate" and _environment_ok(d["environment"])
    assert set(d["raw_s"]) == {"aif_beams2", "plain_aif_beams2", "long_edge", "plain_long_edge"}
    assert _finite_ratios({k: v for k, v in d["paired_ratio"].items() if v is not None})
    assert set(d["met"]) == {"aif_beams2", "long_edge", "long_edge_memory", "long_aif_memory"}


def test_patching_quick(tmp_path):
    from benchmarks import patching

    out = tmp_path / "patching.json"
    patching.main(["--quick", "--out", str(out)])
    d = json.loads(out.read_text())
    assert d["benchmark"] == "patching" and d["quick"] is True and _environment_ok(d["environment"])
    assert set(d["raw_s"]) == {"per_variant", "batched", "knockout_per_variant", "knockout_batched"}
    assert d["met"]["identical"] is True and isinstance(d["met"]["speedup"], bool)
    assert d["max_abs_difference"]["patch_sweep"] <= 1e-4 and d["config"]["variants"] == 2 * d["config"]["seq_len"]
