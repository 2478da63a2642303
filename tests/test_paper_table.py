"""analyses.paper_table: the Table-1 command on the toy (its scenes written as POPE / CountBench hub copies) and on
a zoo model (fixture copies), resuming, settings checks, and torchrun sharding (each rank's environment in turn:
ranks share nothing but files) whose merged results equal a 1-process run."""

import json
from pathlib import Path

import datasets
import pytest
from scipy.stats import binomtest

import hub_fixtures as F
from analyses import paper_table, toy_benchmarks
from interp.errors import InputError

TOY = ["--model", "toy", "--benchmarks", "pope,countbench", "--prompt-style", "bare", "--max-new-tokens", "1",
       "--no-progress"]


@pytest.fixture(scope="module")
def toy_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy-hub")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(datasets.config, "HF_DATASETS_CACHE", str(root / "hf-cache"))
        toy_benchmarks.write(root, n=6, seed=0)
        yield root


def _records(path):
    return [json.loads(x) for x in Path(path).read_text().splitlines()[1:]]


def _key(records):
    return [(r["id"], r["prediction"], r["score"]) for r in records]


def test_toy_table_and_resume(toy_root, tmp_path):
    out = tmp_path / "table"
    args = TOY + ["--data-root", str(toy_root), "--methods", "plain,aif,aif_normalized,vif", "--out", str(out)]
    rec = paper_table.main(args)
    cells = rec["cells"]
    assert set(cells) == {"pope", "countbench"} and set(cells["pope"]) == {"plain", "aif", "aif_normalized", "vif"}
    plain, aif = cells["pope"]["plain"], cells["pope"]["aif"]
    assert plain["metric"] == "pope_accuracy" and plain["n"] == 6 and "pope_f1_score" in plain["harness"]
    assert aif["delta"] == pytest.approx(aif["score"] - plain["score"])
    assert aif["ci"][0] <= aif["delta"] <= aif["ci"][1]
    # McNemar from the per-sample records, by scipy: plain right where AIF is wrong, and the other way round
    pr, ar = ({r["id"]: r["correct"] for r in _records(out / "results" / "pope" / f"{m}.jsonl")} for m in ("plain", "aif"))
    assert len(pr) == 6 and set(pr) == set(ar)
    only_plain = sum(pr[i] and not ar[i] for i in pr)
    only_aif = sum(ar[i] and not pr[i] for i in pr)
    assert (aif["only_plain"], aif["only_method"]) == (only_plain, only_aif)
    n = only_plain + only_aif
    assert aif["p_value"] == (binomtest(only_aif, n, 0.5).pvalue if n else 1.0)
    md = (out / "paper_table.md").read_text()
    assert md.startswith("| Method | POPE | CountBench |") and "| + AIF |" in md and "| toy LLaVA |" in md
    st = rec["settings"]
    assert st["prompt_style"]["name"] == "bare" and st["benchmarks"]["pope"]["max_new_tokens"] == 1
    assert st["benchmarks"]["countbench"]["split"] == "test" and rec["methods"]["vif"].startswith("VIF checkpoint")
    recs = _records(out / "results" / "pope" / "aif.jsonl")
    assert len(recs) == 6 and recs[0]["task"] == "pope"
    # rerun: every record is there, nothing is generated again, the table is the same
    again = paper_table.main(args)
    assert _records(out / "results" / "pope" / "aif.jsonl") == recs and again["cells"] == cells
    # other settings in the same folder are refused
    with pytest.raises(InputError, match="other settings"):
        paper_table.main(args + ["--limit", "3"])


def test_zoo_table(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))
    for name in ("vstar", "mmstar", "refcoco"):
        F.write(name, tmp_path / "data" / name)
    rec = paper_table.main(["--model", "zoo:llava", "--data-root", str(tmp_path / "data"), "--benchmarks",
                            "vstar,mmstar,refcoco:val", "--methods", "plain,aif", "--max-new-tokens", "2",
                            "--out", str(tmp_path / "out"), "--no-progress"])
    assert rec["table"].startswith("| Method | V* | MMStar | RefCOCO val |")
    assert rec["cells"]["mmstar"]["plain"]["metric"] == "average"
    assert rec["cells"]["refcoco_val"]["aif"]["n"] == 4  # one sample per referring expression
    assert rec["settings"]["benchmarks"]["refcoco_val"]["lmms_eval_task"] == "refcoco_bbox_rec_val"


@pytest.mark.parametrize("argv, match", [
    (["--methods", "plain,ours"], "unknown"),
    (["--benchmarks", "gqa"], "known benchmarks"),
    (["--remote", "--device-map", "auto"], "exclude each other"),
])
def test_bad_arguments(argv, match):
    with pytest.raises(InputError, match=match):
        paper_table.parse_args(["--model", "toy", "--data-root", "x", "--out", "y", *argv])


def test_vif_needs_a_checkpoint(toy_root, tmp_path):
    with pytest.raises(InputError, match="--vif DIR"):
        paper_table.interventions("vif", None, paper_table.parse_args(
            ["--model", "zoo:llava", "--data-root", str(toy_root), "--out", str(tmp_path)]))


def test_ranks_shard_resume_and_merge_like_one_process(toy_root, tmp_path, monkeypatch):
    """Two ranks with the environment torchrun gives each (RANK, WORLD_SIZE, LOCAL_RANK), run in turn in this
    process (ranks share nothing but files, so the order is the only thing a real launch adds)."""
    common = TOY + ["--data-root", str(toy_root), "--methods", "plain,aif", "--batch-size", "1"]
    one = paper_table.main(common + ["--out", str(tmp_path / "one")])
    two = tmp_path / "two"

    def as_rank(r):
        for k, v in (("RANK", r), ("WORLD_SIZE", 2), ("LOCAL_RANK", r)):
            monkeypatch.setenv(k, str(v))
        return paper_table.main(common + ["--out", str(two)])

    # rank 1 runs first, alone (as if rank 0 had not started): it writes its share and leaves the merge to the last
    assert as_rank(1) is None
    rank1 = two / "results" / "pope" / "plain.rank1-of-2.jsonl"
    lines = rank1.read_text().splitlines()
    rank1.write_text("\n".join(lines[:-1]) + "\n")  # and was killed before its last record
    assert as_rank(0) is None  # rank 0 finishes its share; rank 1's is incomplete: no merge yet
    assert not (two / "results" / "pope" / "plain.jsonl").exists()
    merged_table = as_rank(1)  # rank 1 restarts, runs its one missing record and, the last to finish, merges
    for key in ("pope", "countbench"):
        for m in ("plain", "aif"):
            merged = _records(two / "results" / key / f"{m}.jsonl")
            assert _key(merged) == _key(_records(tmp_path / "one" / "results" / key / f"{m}.jsonl"))
    assert rank1.read_text().splitlines() == lines  # the killed rank's file is whole again
    table, single = (json.loads((d / "paper_table.json").read_text()) for d in (two, tmp_path / "one"))
    assert table["cells"] == single["cells"] and merged_table["table"] == one["table"]


def test_pixel_boxes_need_the_pixel_style(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))
    F.write("refcoco", tmp_path / "data" / "refcoco")
    argv = ["--model", "zoo:qwen2_5_vl", "--data-root", str(tmp_path / "data"), "--benchmarks", "refcoco:val",
            "--methods", "plain", "--box", "qwen2.5-vl", "--out", str(tmp_path / "out"), "--no-progress"]
    with pytest.raises(InputError, match="add --prompt-style qwen2.5-vl"):
        paper_table.main(argv)
