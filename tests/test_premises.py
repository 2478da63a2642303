"""analyses.premises: smoke runs (toy data on a zoo model; a box-less JSONL on another family), every statistic
against a plain loop over HF eager `output_attentions`, the verdict arithmetic on hand-made arrays, and the
headroom read from the other analyses' JSON (never invented)."""

import json
import math

import numpy as np
import pytest
import torch

ARGV = ["--model", "zoo:llava", "--data", "toy", "--no-progress"]


@pytest.fixture(scope="module")
def run3(tmp_path_factory):
    pytest.importorskip("interp.toy.scenes")
    from analyses import premises

    out = tmp_path_factory.mktemp("premises")
    return premises.main([*ARGV, "--limit", "3", "--out", str(out)]), out


def test_smoke_writes_figure_json_and_every_verdict_has_an_interval(run3, tmp_path):
    from analyses import premises

    rec, out = run3
    for ext in ("png", "pdf", "json"):
        assert (out / f"premises.{ext}").stat().st_size > 0
    saved = json.loads((out / "premises.json").read_text())  # strict JSON
    assert saved["n"] == 3 and saved["seed"] == 0 and saved["arguments"]["limit"] == 3 and "versions" in saved
    assert set(saved["premises"]) == set(premises.KEYS)
    for k, p in saved["premises"].items():
        if p["verdict"] not in (premises.NO_BOXES, premises.NOT_MEASURED):
            assert p["n"] > 0 and len(p["ci"]) == 2 and all(isinstance(v, float) for v in p["ci"]), k
    assert saved["premises"]["headroom"]["verdict"] == "not measured"  # no oracle_masks.json in that folder
    assert "oracle map (VIF): not measured" in saved["paragraph"] and saved["table"].startswith("| premise |")
    paths = premises.plot(str(out / "premises.json"), tmp_path)  # redrawn from the JSON alone
    assert sorted(p.name for p in paths) == ["premises.pdf", "premises.png"]


def test_statistics_match_a_plain_loop_over_hf_eager_attentions(run3):
    """Every per-sample number and each premise's mean, recomputed from HF eager `output_attentions` of a
    pristine copy (same weights) with Python loops; evidence tokens from the 4×4 grid's 16-px patches by hand."""
    from analyses import batching, loading
    from interp.data.loaders import load_samples
    from interp.models import zoo

    rec, _ = run3
    samples = load_samples("toy", limit=3, seed=0)
    vlm = loading.load_model("zoo:llava")
    batch = batching.prepare(vlm, samples)
    lay = batch.layout
    hf, _ = zoo.build("llava", seed=0)
    hf.set_attn_implementation("eager")
    with torch.no_grad():
        att = hf.eval()(**batch.inputs, output_attentions=True).attentions  # L × [B, H, T, T]
    L = len(att)
    want = {k: [] for k in ("share", "area", "ratio", "vent", "auc", "ent_ev", "ent_bg")}
    for b, s in enumerate(samples):
        vis = lay.vision[b].nonzero().squeeze(1).tolist()
        last = int(lay.last[b].nonzero())
        qrows = lay.question[b].nonzero().squeeze(1).tolist()
        assert len(vis) == 16 and s.image.size == (64, 64)
        ev = [any(16 * (k % 4) < x1 and x0 < 16 * (k % 4) + 16 and 16 * (k // 4) < y1 and y0 < 16 * (k // 4) + 16
                  for x0, y0, x1, y1 in s.boxes) for k in range(16)]
        assert ev == batching.evidence(lay, samples)[b].tolist()
        share, ratio, vent = [], [], []
        d = [[0.0] * 16 for _ in range(L)]
        for l in range(L):
            a = att[l][b].double().mean(0)  # [T, T] mean over heads
            wv = [float(a[last, p]) for p in vis]
            tot = sum(wv)
            share.append(sum(w for w, e in zip(wv, ev) if e) / tot)
            ratio.append(tot)
            vent.append(-sum(w / tot * math.log(w / tot) for w in wv))
            for i, p in enumerate(vis):
                d[l][i] = max(float(a[q, p]) for q in qrows)
        ent = []
        for i in range(16):
            curve = [d[l][i] for l in range(L)]
            ent.append(-sum(c / sum(curve) * math.log(c / sum(curve)) for c in curve if c > 0))
        e_ev = [e for e, f in zip(ent, ev) if f]
        e_bg = [e for e, f in zip(ent, ev) if not f]
        pairs = [(x < y) + 0.5 * (x == y) for x in e_ev for y in e_bg]
        for k, v in zip(want, (share, sum(ev) / 16, ratio, vent, sum(pairs) / len(pairs), np.mean(e_ev),
                               np.mean(e_bg))):
            want[k].append(v)
    got = {"share": "evidence_share", "area": "area_share", "ratio": "vision_ratio", "vent": "vision_entropy",
           "auc": "entropy_auc", "ent_ev": "entropy_evidence", "ent_bg": "entropy_background"}
    for k, name in got.items():
        np.testing.assert_allclose(np.asarray(rec[name], float), np.asarray(want[k]), rtol=1e-5, atol=1e-6,
                                   err_msg=name)
    P, correct = rec["premises"], np.asarray(rec["correct"])
    wrong = [b for b in range(3) if not correct[b]]
    lift = [np.mean(want["share"][b]) - want["area"][b] for b in wrong]
    assert P["seeing"]["mean"] == pytest.approx(np.mean(lift), abs=1e-6) and P["seeing"]["n"] == len(wrong)
    assert P["token_dynamics"]["mean"] == pytest.approx(np.mean(want["auc"]), abs=1e-6)
    for key, x in (("attenuation_share", want["ratio"]), ("attenuation_entropy", want["vent"])):
        assert rec["depth"] == {"early": [1], "late": [3]}  # 4 layers: layer 1 vs layer 3
        assert P[key]["mean"] == pytest.approx(np.mean([r[3] - r[1] for r in x]), abs=1e-6)
        assert P[key]["per_layer"]["mean"] == pytest.approx(np.mean(x, 0).tolist(), abs=1e-6)


def test_verdicts_on_hand_made_numbers():
    from analyses import premises

    share = np.array([[0.5, 0.3], [0.2, 0.2], [0.4, 0.6], [0.1, 0.1]])  # [N=4, L=2]
    rec = {"evidence_share": share, "area_share": np.array([0.1, 0.1, 0.2, np.nan]),  # row 3: no boxes
           "correct": np.array([True, False, False, True]), "families": ["a", "a", "b", "b"],
           "entropy_auc": np.array([0.9, 0.8, 0.7, np.nan]), "entropy_evidence": np.array([1.0, 1.0, 1.0, np.nan]),
           "entropy_background": np.array([2.0, 2.0, 2.0, np.nan]), "depth": {"early": [1], "late": [3]},
           "vision_ratio": np.tile([0.1, 0.8, 0.7, 0.6], (4, 1)) + np.arange(4)[:, None] * 0.01,
           "vision_entropy": np.tile([1.0, 3.0, 3.0, 3.0], (4, 1)) + np.arange(4)[:, None] * 0.01}
    P = premises.premise_stats(rec, seed=0)
    s = P["seeing"]  # wrong rows 1 and 2: lifts 0.2 − 0.1 and 0.5 − 0.2
    assert s["mean"] == pytest.approx(0.2) and s["n"] == 2 and s["verdict"] == "holds"
    assert s["wrong_share"]["mean"] == pytest.approx(0.35) and s["right_share"]["mean"] == pytest.approx(0.4)
    assert s["per_layer"]["wrong"]["mean"] == pytest.approx([0.3, 0.4])
    assert s["by_family"]["a"]["mean"] == pytest.approx(0.1) and s["by_family"]["a"]["verdict"] == "inconclusive"
    assert P["token_dynamics"]["mean"] == pytest.approx(0.8) and P["token_dynamics"]["verdict"] == "holds"
    assert P["token_dynamics"]["entropy_difference"]["mean"] == pytest.approx(-1.0)
    assert P["attenuation_share"]["mean"] == pytest.approx(-0.2) and P["attenuation_share"]["verdict"] == "holds"
    e = P["attenuation_entropy"]
    assert e["mean"] == pytest.approx(0.0) and e["verdict"] == "inconclusive"
    assert premises.verdict({"mean": 1, "ci": [-2, -1], "n": 5}, 0.0, +1) == "does not hold"
    assert premises.depth_layers(8) == ([1, 2], [6, 7]) and premises.depth_layers(2) == ([], [])
    ent = np.array([[1.0, 2.0, 2.0, 0.5]])
    auc = premises.entropy_auc(ent, np.array([[True, True, False, False]]), np.array([[False, False, True, True]]))
    assert auc[0] == pytest.approx((1 + 0 + 0.5 + 0) / 4)  # pairs (1<2, 1<0.5, 2=2, 2<0.5)


def test_headroom_is_read_never_invented(tmp_path):
    from analyses import premises, record

    h = premises.headroom(tmp_path, 0)
    assert {h[m]["verdict"] for m in ("oracle_ratio", "oracle_box", "oracle_map")} == {"not measured"}
    scores = {"baseline": [1, 0, 0, 1], "oracle_ratio": [1, 1, 0, 1], "oracle_box": [0, 0, 0, 1]}
    paired = {"oracle_ratio": {"difference": 0.25, "ci": [0.0, 0.75], "p_value": 1.0},
              "oracle_box": {"difference": -0.25, "ci": [-0.75, 0.0], "p_value": 1.0}}
    record.write_json(tmp_path / "oracle_masks.json", {"n": 4, "scores": scores, "families": ["a", "a", "b", "b"],
                                                       "paired_vs_baseline": paired})
    record.write_json(tmp_path / "vif_ablation.json", {"n": 4, "paired_vs_finetune": {
        "oracle_map": {"difference": 0.035, "ci": [0.01, 0.06], "p_value": 0.01}}})
    h = premises.headroom(tmp_path, 0)
    assert h["mean"] == 0.25 and h["ci"] == [0.0, 0.75] and h["verdict"] == "inconclusive"
    assert h["oracle_box"]["by_family"]["a"]["mean"] == pytest.approx(-0.5)
    assert h["oracle_map"]["mean"] == 0.035 and h["oracle_map"]["versus"] == "finetune"
    assert h["oracle_map"]["verdict"] == "holds"


def test_box_less_data_on_another_family_says_no_boxes(tmp_path):
    from PIL import Image

    from analyses import premises

    rng = np.random.default_rng(0)
    with open(tmp_path / "d.jsonl", "w") as f:
        for i in range(2):
            Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(tmp_path / f"{i}.png")
            f.write(json.dumps({"id": str(i), "image": f"{i}.png", "question": "what color is it ?", "answer": "red"}))
            f.write("\n")
    rec = premises.main(["--model", "zoo:qwen2_vl", "--data", str(tmp_path / "d.jsonl"), "--limit", "2",
                         "--no-progress", "--out", str(tmp_path / "out")])
    P = rec["premises"]
    assert P["seeing"]["verdict"] == P["token_dynamics"]["verdict"] == "no boxes"
    assert P["attenuation_share"]["n"] == 2 and len(P["attenuation_entropy"]["per_layer"]["mean"]) == rec["num_layers"]
    assert "No sample has evidence boxes" in rec["paragraph"] and (tmp_path / "out" / "premises.png").exists()


def test_report_summary_opens_with_the_premises_and_sections_refer_back(run3):
    from analyses import premises, report, vision_attention_ratio

    rec, out = run3
    vision_attention_ratio.main([*ARGV, "--limit", "2", "--out", str(out)])
    text = report.build(out).read_text()
    d = json.loads((out / "premises.json").read_text())
    summary = text[text.index("## Summary\n\n"):]
    assert text.startswith("# interp on the toy model: the papers' analyses\n") and text.index("## Summary") < 1000
    assert summary.startswith("## Summary\n\n" + premises.lead(d) + " ([premises](#the-papers-premises-measured))")
    assert "| VIF: attention on vision attenuates in deep layers (answer position) |" in summary
    sec = text.index("## The papers' premises, measured")
    assert sec < text.index("## Vision attention ratio per layer") and premises.paragraph(d) in text[sec:]
    assert premises.paragraph(d).startswith(premises.lead(d))
    assert "Premises ([the papers' premises, measured](#the-papers-premises-measured)): VIF's falling " \
           "vision share" in text and rec["table"] in text and "Notes from the card" not in text


def test_headroom_without_a_folder_is_not_measured():
    from analyses import premises

    h = premises.headroom(None, 0)
    assert {h[m]["verdict"] for m in ("oracle_ratio", "oracle_box", "oracle_map")} == {"not measured"}
    assert "no folder given" in h["oracle_ratio"]["why"] and h["source"] is None
