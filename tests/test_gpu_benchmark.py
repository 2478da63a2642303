"""`benchmarks/gpu.py` in its CPU smoke mode (`--quick`: tiny geometry, the same code path as the GPU run), its
eager out-of-memory bisection with a simulated OOM, and the GPU harness's pieces. Not a timing assertion."""

import json
import math

import pytest
import torch

from benchmarks import gpu, gpu_harness as gh


def _finite(x):
    return isinstance(x, float) and math.isfinite(x) and x > 0


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu")
    rc = gpu.main(["--quick", "--out-dir", str(out)])
    return rc, {p.stem: json.loads(p.read_text()) for p in out.glob("gpu_*.json")}


def test_quick_runs_every_part(quick):
    rc, d = quick
    assert rc == 0
    assert set(d) == {f"gpu_{p}" for p in gpu.PARTS} | {"gpu_summary"}
    s = d["gpu_summary"]
    assert all(v["status"] == "ok" for v in s["parts"].values()), s["parts"]
    env = s["environment"]
    assert all(k in env for k in ("torch", "torch_cuda", "transformers", "nnsight", "device", "git_commit"))
    assert set(s["targets"]) >= {"capture_time", "capture_memory", "capture_memory_16k"}
    assert {k for k in s["targets"] if k.startswith("aif_generate_time:")} == \
        {f"aif_generate_time:{m}_b{b}" for m in ("greedy", "sample") for b in (1, 2)}


def test_quick_forward_and_generate_fields(quick):
    _, d = quick
    f = d["gpu_llava_forward"]
    assert f["pristine_logits_equal"] is True and f["model"]["dtype"] == "bfloat16"
    t = f["timing"]
    assert set(t["raw_s"]) == {"plain", "hf_wrapped", "capture", "eager", "empty_trace"}
    assert all(len(v) == f["args"]["repeats"] for v in t["raw_s"].values())
    assert all(_finite(v) for v in t["paired_ratio"].values())
    g = d["gpu_generate"]
    for c in g["configs"].values():
        assert c["new_tokens"] == {"plain": 4, "aif": 4, "edge_mask": 4}  # end-of-sequence off: all decode n
        assert all(_finite(v) for v in c["timing"]["paired_ratio"].values())
    assert g["aif_prefix_reuse"] is True


def test_quick_evaluate_flow_qwen_fields(quick):
    _, d = quick
    e = d["gpu_evaluate"]
    assert _finite(e["throughput_ratio"]) and set(e["samples_per_s"]) == {"plain_loop", "evaluate"}
    fl = d["gpu_flow"]
    assert "patch_sweep" in fl["tools"] and _finite(fl["seconds_per_sample"]["patch_sweep"])
    q = d["gpu_qwen_forward"]
    assert [s["vision_tokens"] for s in q["sizes"]] == [4, 16, 36]
    assert all(s["timed"] == ["plain", "capture", "eager"] for s in q["sizes"])
    assert q["eager_oom"] is None  # nothing runs out of memory at tiny sizes


def test_eager_oom_point_is_caught_and_bisected(monkeypatch, tmp_path):
    """Eager 'runs out of memory' above 20 vision tokens (simulated): it is probed, left out of the timing,
    and the boundary is narrowed between 16 (fits) and 36 (fails) → 25 fails, so 16 / 25."""
    real = gpu.forward_variants

    def oom():
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 15.00 GiB (simulated)")

    def fake(vlm, plain, batch, names):
        v = real(vlm, plain, batch, names)
        if "eager" in v and int(batch.layout.vision[0].sum()) > 20:
            v["eager"] = gh.Variant(oom)
        return v

    monkeypatch.setattr(gpu, "forward_variants", fake)
    assert gpu.main(["--quick", "--parts", "qwen_forward", "--out-dir", str(tmp_path)]) == 0
    q = json.loads((tmp_path / "gpu_qwen_forward.json").read_text())
    assert q["eager_oom"] == {"eager_fits_up_to_vision_tokens": 16, "eager_oom_from_vision_tokens": 25,
                              "bisection": [[5, False]]}
    big = q["sizes"][-1]
    assert big["timed"] == ["plain", "capture"] and big["probes"]["eager"]["oom"] is True
    s = json.loads((tmp_path / "gpu_summary.json").read_text())
    assert "ran out of memory" in s["targets"]["capture_memory_16k"]["note"]


@pytest.mark.parametrize("limit,ok,fail,steps,expect", [
    (70, 36, 128, 3, (70, 82)),
    (70, 36, 128, 10, (70, 71)),
    (10, 36, 128, 3, (36, 47)),   # nothing in between fits
    (200, 36, 128, 3, (116, 128)),
    (70, 70, 71, 3, (70, 71)),    # already adjacent: no probe
])
def test_bisect_fit(limit, ok, fail, steps, expect):
    calls = []
    got = gh.bisect_fit(lambda n: calls.append(n) or n <= limit, ok, fail, steps)
    assert got[:2] == expect and len(calls) == len(got[2]) <= steps


def test_probe_catches_only_out_of_memory():
    def oom():
        raise torch.OutOfMemoryError("CUDA out of memory")

    r = gh.probe(oom, device="cpu")
    assert r["ok"] is False and r["oom"] is True and "OutOfMemoryError" in r["error"]
    with pytest.raises(ValueError):
        gh.probe(lambda: (_ for _ in ()).throw(ValueError("bad")), device="cpu")
    assert gh.probe(lambda: None, device="cpu")["ok"] is True


def test_twin_shares_weights_not_config():
    import interp
    from interp.models import zoo

    hf, proc = zoo.build("llava", size="tiny", device="cpu", dtype=torch.bfloat16)
    vlm = interp.load(hf, processor=proc)
    tw = gh.twin(hf)
    assert tw is not hf
    assert all(a is b for a, b in zip(tw.parameters(), hf.parameters()))
    tw.set_attn_implementation({"text_config": "eager"})
    assert vlm.hf.config.get_text_config()._attn_implementation == "sdpa"
