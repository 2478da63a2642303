"""Every analysis smoke-runs on a random zoo model with --limit 2 and writes its PNG, PDF and JSON; `plot`
redraws the figure from the JSON alone into another folder; the shared helpers hold their contracts."""

import importlib
import json

import numpy as np
import pytest
import torch

ANALYSES = ("vision_attention_ratio", "attenuation_violin", "attention_heatmaps", "mu_masking", "oracle_masks",
            "method_table", "vif_focus", "vif_ablation",
            "aif_ratios", "token_dynamics", "premises", "patching", "knockout_flow", "logit_lens")
ARGV = ["--model", "zoo:llava", "--data", "toy", "--limit", "2", "--no-progress"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Run every analysis once (the zoo model is built once and shared through common's cache)."""
    pytest.importorskip("interp.toy.scenes")
    out = {}
    for name in ANALYSES:
        mod = importlib.import_module(f"analyses.{name}")
        folder = tmp_path_factory.mktemp(name)
        record = mod.main([*ARGV, "--out", str(folder)])
        out[name] = (mod, folder, record)
    return out


@pytest.mark.parametrize("name", ANALYSES)
def test_analysis_writes_figure_and_numbers(runs, name):
    mod, folder, record = runs[name]
    for ext in ("png", "pdf", "json"):
        f = folder / f"{name}.{ext}"
        assert f.is_file() and f.stat().st_size > 0, f"{name} did not write {f.name}"
    saved = json.loads((folder / f"{name}.json").read_text())  # strict JSON: no NaN
    assert saved["analysis"] == name and saved["seed"] == 0 and saved["arguments"]["limit"] == 2
    assert saved["model"] == "zoo:llava" and saved["num_layers"] == 4
    assert set(saved["versions"]) >= {"torch", "transformers", "nnsight", "numpy"} and "git_revision" in saved
    assert saved["command"].startswith(f"python -m analyses.{name} ")
    assert saved["n"] == 2
    assert mod.__doc__ and f"python -m analyses.{name}" in mod.__doc__  # the docstring gives the command


@pytest.mark.parametrize("name", ANALYSES)
def test_plot_redraws_from_json_alone(runs, name, tmp_path):
    mod, folder, _ = runs[name]
    paths = mod.plot(str(folder / f"{name}.json"), tmp_path)
    assert sorted(p.name for p in paths) == [f"{name}.pdf", f"{name}.png"]
    assert all(p.stat().st_size > 0 for p in paths)


def test_plot_takes_a_dict(runs, tmp_path):
    mod, folder, record = runs["vision_attention_ratio"]
    assert mod.plot(json.loads((folder / "vision_attention_ratio.json").read_text()), tmp_path)[0].is_file()


def test_numbers_have_the_documented_shapes(runs):
    L = 4
    r = runs["vision_attention_ratio"][2]
    assert np.asarray(r["ratio_answer"]).shape == (2, L) and np.asarray(r["ratio_question"]).shape == (2, L)
    assert np.all((np.asarray(r["ratio_answer"]) >= 0) & (np.asarray(r["ratio_answer"]) <= 1))
    v = runs["attenuation_violin"][2]
    assert len(v["weights"]) == L and len(v["weights"][0]) == 2 * 16  # zoo llava: 4×4 vision tokens
    h = runs["attention_heatmaps"][2]
    heat = np.asarray(h["samples"][0]["heat"], dtype=float)
    assert heat.shape == (len(h["layers"]), 4, 4) and np.allclose(heat.sum((1, 2)), 1, atol=1e-4)
    m = runs["mu_masking"][2]
    assert m["fractions"][0] == 0 and len(m["scores"]["lowest"]) == len(m["fractions"])
    assert m["scores"]["lowest"][0] == m["baseline"]  # x = 0 is the plain model
    assert m["cut_tokens"]["highest"][-1] == [round(0.9 * 16)] * 2
    o = runs["oracle_masks"][2]
    assert set(o["summary"]) == {"baseline", "oracle_box", "oracle_ratio", "aif", "aif_normalized"}
    assert np.all(np.asarray(o["scores"]["oracle_ratio"]) >= np.asarray(o["per_ratio_scores"]).max(0))
    assert "| method |" in o["table"]
    a = runs["aif_ratios"][2]
    assert np.asarray(a["S"]["paper"]).shape == (2, 9) and all(r <= 0.5 for r in a["chosen"]["capped"])
    t = runs["token_dynamics"][2]
    assert np.asarray(t["evidence_curve"]).shape == (2, L)
    assert set(t["top_evidence_share"]) == {"low_entropy", "high_mu", "high_entropy", "random"}


def test_flow_analyses_numbers(runs):
    L = 4
    p = runs["patching"][2]
    assert np.asarray(p["group_rows"], dtype=float).shape == (2, L, 3) and p["groups"] == ["vision", "question", "last"]
    tok = np.asarray(p["token_rows"], dtype=float)
    assert tok.shape[:2] == (2, L) and tok.shape[2] == len(p["token_labels"]) and p["num_vision"] == 16
    assert np.asarray(p["head_rows"], dtype=float).shape == (2, L, 4) and p["blocks"] == [2, 2]
    k = runs["knockout_flow"][2]
    assert np.asarray(k["rows"], dtype=float).shape == (k["n"], 3, L - k["window"] + 1) and k["starts"][0] == 0
    g = runs["logit_lens"][2]
    assert np.asarray(g["box_share"], dtype=float).shape == (2, L) and len(g["area_share"]) == 2
    from analyses import knockout_flow, logit_lens, patching  # the REPORT sentences read the JSON alone

    assert all("**" in m.finding(runs[m.NAME][2]) for m in (patching, knockout_flow, logit_lens))


# --- common helpers ------------------------------------------------------------------------------------

def test_vision_index_and_group_round_trip():
    from analyses import common
    from interp.layout import TokenLayout

    vision = torch.tensor([[0, 1, 1, 1, 0], [1, 1, 0, 0, 0]], dtype=torch.bool)
    z = torch.zeros_like(vision)
    lay = TokenLayout(vision=vision, text=~vision, question=z, answer=z, pad=z, images=((), ()))
    sel = torch.tensor([[True, False, True], [False, True, False]])
    group = common.vision_group(lay, sel)
    assert group.tolist() == [[False, True, False, True, False], [False, True, False, False, False]]
    back = common.vision_index(lay, group)
    assert back.tolist() == [[True, False, True], [False, True, False]]


def test_jsonable_is_strict_json(tmp_path):
    from analyses import common

    obj = {"a": torch.tensor([1.0, float("nan")]), "b": np.array([[np.inf, 2]]), "c": np.float32(0.5),
           "d": (1, 2), "e": np.int64(3)}
    p = common.write_json(tmp_path / "x.json", obj)
    back = json.loads(p.read_text())
    assert back == {"a": [1.0, None], "b": [[None, 2.0]], "c": 0.5, "d": [1, 2], "e": 3}
    assert np.isnan(common.arr(back["a"])[1])


def test_model_spec_errors_and_labels():
    from analyses import common
    from interp.errors import InputError

    with pytest.raises(InputError):
        common.load_model("zoo:no_such_arch")
    assert common.model_label("zoo:llava") == "zoo:llava (random weights)"
    assert common.model_label("toy") == "toy LLaVA"


def test_mean_band():
    from interp.plot import mean_band

    m, lo, hi = mean_band(np.array([[1.0, 2.0], [3.0, np.nan]]))
    assert m.tolist() == [2.0, 2.0] and lo[0] < 2 < hi[0] and lo[1] == hi[1] == 2.0


def test_main_writes_report_whose_numbers_match_the_json(tmp_path):
    import json

    from analyses import main as main_mod

    main_mod.main(["--model", "zoo:llava", "--data", "toy", "--limit", "2", "--out", str(tmp_path)])
    report = (tmp_path / "REPORT.md").read_text()
    from analyses.report import ORDER

    for name in ORDER:
        d = json.loads((tmp_path / f"{name}.json").read_text())
        assert f"![{name}]({name}.png)" in report and (tmp_path / f"{name}.png").exists()
        if d.get("table"):
            assert d["table"] in report
        for m, s in d.get("summary", {}).items():
            assert f"{s['accuracy']:.3f}" in report
    mt = json.loads((tmp_path / "method_table.json").read_text())
    p = mt["paired_vs_baseline"]["vif"]
    assert f"VIF {p['difference']:+.3f} [{p['ci'][0]:+.3f}, {p['ci'][1]:+.3f}]" in report


def test_report_model_section_reads_the_card(tmp_path):
    import json

    from analyses.report import model_card_section

    card = {"parameters": 1234, "decoder_layers": 2, "notes": ["a note."], "eval": {
        "per_family": 4, "metric": "m",
        "accuracy": {"spatial": {"acc": .75, "ci95": [.3, .95]}, "position": {"acc": .5, "ci95": [.2, .8]},
                     "overall": {"acc": .625}},
        "accuracy_by_answer": {"spatial": {"left": {"acc": .5}, "above": {"acc": 1.0}}},
        "accuracy_vision_blocked": {"spatial": {"acc": .5}}, "chance": {"spatial": .5, "position": .5}}}
    (tmp_path / "card.json").write_text(json.dumps(card))
    text = model_card_section(tmp_path / "card.json")
    assert "1,234 parameters, 2 decoder layers" in text and "the card's `notes`" in text
    assert "a note." not in text  # the training history stays in the card
    assert "| spatial | 0.750 [0.300, 0.950] | left 0.50 · above 1.00 | 0.500 | 0.500 | yes |" in text
    assert "| position | 0.500 [0.200, 0.800] | – | nan | 0.500 | no (missed its target) |" in text
    assert "overall" not in text and model_card_section(tmp_path / "missing.json") == ""


def test_git_revision_ignores_the_runs_own_outputs(tmp_path):
    import subprocess

    from analyses.common import git_revision

    def git(*a):
        subprocess.run(["git", *a], cwd=tmp_path, check=True, capture_output=True)

    (tmp_path / "figs").mkdir()
    (tmp_path / "figs" / "a.json").write_text("1")
    (tmp_path / "code.py").write_text("x = 1")
    git("init", "-q")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=tmp_path, capture_output=True, text=True).stdout.strip()
    assert git_revision(root=tmp_path) == head
    (tmp_path / "figs" / "a.json").write_text("2")  # the run rewrote its own tracked output
    assert git_revision(root=tmp_path) == head + "-dirty"
    assert git_revision(outputs=tmp_path / "figs", root=tmp_path) == head
    (tmp_path / "code.py").write_text("x = 2")  # the code changed: dirty whatever the outputs
    assert git_revision(outputs=tmp_path / "figs", root=tmp_path) == head + "-dirty"
    assert git_revision(outputs="/elsewhere", root=tmp_path) == head + "-dirty"
