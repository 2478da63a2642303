"""Every registered analysis smoke-runs on a random zoo model with limit 2 (the main job, once: figures, JSON and
REPORT.md in one folder); `plot` redraws each figure from the JSON alone; `compute` takes keywords and writes
nothing; the command line parses into the same call; the shared helpers hold their contracts."""

import importlib
import json
import pkgutil

import numpy as np
import pytest
import torch

import analyses
from analyses import registry

ANALYSES = registry.NAMES
ARGV = ["--model", "zoo:llava", "--data", "toy", "--limit", "2", "--no-progress"]


@pytest.fixture(scope="module")
def main_run(tmp_path_factory):
    """The main job on the zoo model, limit 2: every analysis into one folder, then REPORT.md (the model is built
    once and shared through the analyses' cache)."""
    pytest.importorskip("interp.toy.scenes")
    from analyses import main as main_mod

    folder = tmp_path_factory.mktemp("main")
    return main_mod.main([*ARGV, "--out", str(folder)]), folder


@pytest.fixture(scope="module")
def runs(main_run):
    records, folder = main_run
    return {name: (importlib.import_module(f"analyses.{name}"), folder, records[name]) for name in ANALYSES}


def test_the_registry_lists_every_analysis_module_once():
    declared = sorted(m.name for m in pkgutil.iter_modules(analyses.__path__)
                      if hasattr(importlib.import_module(f"analyses.{m.name}"), "ANALYSIS"))
    assert declared == sorted(ANALYSES) and len(set(ANALYSES)) == len(ANALYSES)
    every = registry.every()
    assert [a.name for a in every] == list(ANALYSES) and len({a.title for a in every}) == len(every)
    for a in every:
        mod = importlib.import_module(f"analyses.{a.name}")
        assert mod.compute == a.compute and mod.main == a.main and a.doc == mod.__doc__
        assert f"python -m analyses.{a.name}" in a.doc  # the docstring gives the command
    from interp.errors import InputError

    with pytest.raises(InputError, match="vision_attention_ratio"):
        registry.get("no_such_analysis")


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
    assert saved["command"].startswith(f"python -m analyses.{name} --model zoo:llava --data toy --out ")
    assert saved["n"] == 2 and saved == record  # what is written is what is returned


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


def test_compute_takes_keywords_writes_nothing_and_matches_the_run(runs, tmp_path, monkeypatch):
    from analyses import vision_attention_ratio as a
    from interp.errors import InputError

    monkeypatch.chdir(tmp_path)
    rec = a.compute(model="zoo:llava", data="toy", limit=2, progress=False)  # what a notebook calls
    assert list(tmp_path.iterdir()) == []  # nothing written
    json.dumps(rec, allow_nan=False)  # JSON-able as returned
    assert rec["command"] == "python -m analyses.vision_attention_ratio --model zoo:llava --data toy --limit 2 --no-progress"
    assert rec["ratio_answer"] == runs["vision_attention_ratio"][2]["ratio_answer"]  # same seed, same numbers
    assert rec["arguments"]["batch_size"] == a.ANALYSIS.batch_size and rec["arguments"]["out"] is None
    with pytest.raises(InputError, match="takes no argument 'limt'.*limit"):
        a.compute(model="zoo:llava", limt=2)


def test_the_command_line_parses_into_the_same_call(tmp_path):
    from analyses import attention_heatmaps

    rec = attention_heatmaps.main([*ARGV, "--layers", "0,3", "--out", str(tmp_path)])
    assert rec["layers"] == [0, 3] and rec["arguments"]["layers"] == [0, 3] and rec["arguments"]["limit"] == 2
    assert rec["command"] == "python -m analyses.attention_heatmaps " + " ".join([*ARGV, "--layers", "0,3", "--out",
                                                                                    str(tmp_path)])
    assert (tmp_path / "attention_heatmaps.png").is_file()
    with pytest.raises(SystemExit):  # an unknown flag is argparse's error
        attention_heatmaps.main([*ARGV, "--no-such-flag"])


# --- shared helpers ------------------------------------------------------------------------------------

def test_vision_index_and_group_round_trip():
    from analyses import batching
    from interp.layout import TokenLayout

    vision = torch.tensor([[0, 1, 1, 1, 0], [1, 1, 0, 0, 0]], dtype=torch.bool)
    z = torch.zeros_like(vision)
    lay = TokenLayout(vision=vision, text=~vision, question=z, answer=z, pad=z, images=((), ()))
    sel = torch.tensor([[True, False, True], [False, True, False]])
    group = batching.vision_group(lay, sel)
    assert group.tolist() == [[False, True, False, True, False], [False, True, False, False, False]]
    back = batching.vision_index(lay, group)
    assert back.tolist() == [[True, False, True], [False, True, False]]


def test_jsonable_is_strict_json(tmp_path):
    from analyses import record

    obj = {"a": torch.tensor([1.0, float("nan")]), "b": np.array([[np.inf, 2]]), "c": np.float32(0.5),
           "d": (1, 2), "e": np.int64(3)}
    p = record.write_json(tmp_path / "x.json", obj)
    back = json.loads(p.read_text())
    assert back == {"a": [1.0, None], "b": [[None, 2.0]], "c": 0.5, "d": [1, 2], "e": 3}
    assert np.isnan(record.arr(back["a"])[1]) and record.jsonable(back) == back  # idempotent


def test_model_spec_errors_and_labels():
    from analyses import loading
    from interp.errors import InputError

    with pytest.raises(InputError):
        loading.load_model("zoo:no_such_arch")
    assert loading.model_label("zoo:llava") == "zoo:llava (random weights)"
    assert loading.model_label("toy") == "toy LLaVA"


def test_main_writes_report_whose_numbers_match_the_json(main_run):
    from analyses import report
    from analyses.findings import verdicts

    records, folder = main_run
    text = (folder / "REPORT.md").read_text()
    summary = text[text.index("## Summary"):text.index("## The model")]
    for a in registry.every():
        d = json.loads((folder / f"{a.name}.json").read_text())
        assert f"![{a.name}]({a.name}.png)" in text and (folder / f"{a.name}.png").exists()
        assert f"## {a.title}\n" in text and a.finding(d) in text
        if d.get("table"):
            assert d["table"] in text
        for m, s in d.get("summary", {}).items():
            assert f"{s['accuracy']:.3f}" in text
        if a.claim:  # one summary row per claim, its verdicts those of the finding, linked to the section
            row = next(line for line in summary.splitlines() if line.startswith(f"| {a.claim} |"))
            assert f"| {' · '.join(verdicts(a.finding(d))) or '–'} |" in row and f"(#{report.anchor(a.title)})" in row
    mt = records["method_table"]
    p = mt["paired_vs_baseline"]["vif"]
    assert f"VIF {p['difference']:+.3f} [{p['ci'][0]:+.3f}, {p['ci'][1]:+.3f}]" in text
    h = records["premises"]["premises"]["headroom"]  # premises ran last and read oracle_masks.json of the same run
    assert h["oracle_ratio"]["verdict"] != "not measured" and h["source"] == str(folder)
    assert report.anchor("VIF ablation: the focus map vs the extra fine-tuning") == \
        "vif-ablation-the-focus-map-vs-the-extra-fine-tuning"
    assert report.anchor("AIF's adaptive ratio") == "aifs-adaptive-ratio"


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

    from analyses.record import git_revision

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
