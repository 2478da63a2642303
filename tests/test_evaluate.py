"""evaluate() with a fake model: aggregation, resumable results, compare() and the analysis CLI."""

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image
from scipy.stats import binomtest

from interp.data import Sample
from interp.errors import InputError
from interp import evaluation
from interp.evaluation import Comparison, EvalResult, compare, evaluate
from interp.stats import bootstrap_ci, mcnemar_exact, wilson_ci

IMG = Image.new("RGB", (8, 8))


def run_eval(vlm, samples, *interventions, runner, **kw):
    """`evaluate` with its generation replaced by `runner` (a fake with `.generate(batch, max_new_tokens)`)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(evaluation, "intervene", lambda vlm, *ivs: runner)
        return evaluate(vlm, samples, *interventions, **kw)


class FakeVLM:
    """What evaluate reads of an `interp.VLM`: `.source` (where it was loaded from) and `.prepare(images=,
    questions=)` → a batch; records every prepared batch."""

    source = "fake-vlm"

    def __init__(self):
        self.prepared = []

    def prepare(self, *, images, questions):
        assert len(images) == len(questions)
        self.prepared.append(list(questions))
        return SimpleNamespace(questions=list(questions))


class FakeRun:
    """run.generate(batch, max_new_tokens=) → .texts from a question → reply table; counts calls."""

    def __init__(self, replies, fail_after=None):
        self.replies, self.fail_after = replies, fail_after
        self.calls, self.seen = 0, []

    def generate(self, batch, *, max_new_tokens):
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise KeyboardInterrupt("simulated crash")
        self.calls += 1
        self.seen += batch.questions
        return SimpleNamespace(texts=[self.replies[q] for q in batch.questions])


def _patch_intervene(monkeypatch, fake):
    monkeypatch.setattr(evaluation, "intervene", fake)


def _samples(n=10, families=("color", "count")):
    return [Sample(IMG, f"q{i}?", f"a{i}", family=families[i % len(families)], id=f"s{i}") for i in range(n)]


def _replies(samples, wrong=()):
    return {s.question: ("nope" if s.id in wrong else s.answer.upper() + ".") for s in samples}


def _lines(path):
    return [json.loads(l) for l in path.read_text().splitlines()]


def test_aggregation_and_records():
    samples = _samples(10)
    run = FakeRun(_replies(samples, wrong={"s0", "s2", "s3"}))
    res = run_eval(FakeVLM(), samples, runner=run, batch_size=4, progress=False)
    assert run.calls == 3
    assert res.n == 10 and res.accuracy == pytest.approx(0.7)
    # color = even ids (s0, s2 wrong of 5), count = odd ids (s3 wrong of 5)
    assert res.by_family == {"color": pytest.approx(0.6), "count": pytest.approx(0.8)}
    assert set(res.by_family_ci) == {"color", "count"}
    r = res.records[1]
    assert r == {"id": "s1", "family": "count", "question": "q1?", "answer": "a1", "prediction": "A1.",
                 "metric": "exact_match", "score": 1.0, "correct": True}
    assert [r["id"] for r in res.records] == [s.id for s in samples]
    assert res.ci == bootstrap_ci(np.array([0, 1, 0, 0, 1, 1, 1, 1, 1, 1.0]), n_resamples=evaluation.N_RESAMPLES, seed=0)
    table = res.to_markdown()
    assert "| color | 5 | 0.600 |" in table and "| **all** | 10 | 0.700 |" in table


def test_uses_interp_intervene(monkeypatch):
    samples = _samples(3)
    seen = {}

    def fake_intervene(vlm, *interventions):
        seen["interventions"] = interventions
        return FakeRun(_replies(samples))

    _patch_intervene(monkeypatch, fake_intervene)
    res = evaluate(FakeVLM(), samples, "iv1", "iv2", progress=False)
    assert seen["interventions"] == ("iv1", "iv2") and res.accuracy == 1.0
    assert res.meta["interventions"] == ["'iv1'", "'iv2'"] and res.meta["model"] == "fake-vlm"


def test_bad_inputs_fail_before_the_model():
    run = FakeRun({})
    mc = Sample(IMG, "q?", "purple", choices=("red", "blue"), id="m")
    with pytest.raises(InputError, match="neither a letter"):
        run_eval(FakeVLM(), [mc], runner=run, metric="multiple_choice", progress=False)
    with pytest.raises(InputError, match="share id"):
        run_eval(FakeVLM(), _samples(2) + _samples(1), runner=run, progress=False)
    assert run.calls == 0


def test_samples_without_ids_get_content_ids(tmp_path):
    samples = [Sample(Image.new("RGB", (4, 4), (i, 0, 0)), "q?", "a") for i in range(3)]
    run = FakeRun({"q?": "a"})
    res = run_eval(FakeVLM(), samples, runner=run, out=tmp_path / "r.jsonl", progress=False)
    ids = [r["id"] for r in res.records]
    assert len(set(ids)) == 3 and all(i.startswith("sha1:") for i in ids)
    run_eval(FakeVLM(), samples, runner=run, out=tmp_path / "r.jsonl", progress=False)
    assert run.calls == 1  # the rerun found every content id


def test_streaming_file_format(tmp_path):
    samples = _samples(5)
    out = tmp_path / "sub" / "results.jsonl"
    run_eval(FakeVLM(), samples, runner=FakeRun(_replies(samples)), out=out, max_new_tokens=5, progress=False)
    lines = _lines(out)
    assert set(lines[0]) == {"_meta"} and lines[0]["_meta"]["max_new_tokens"] == 5
    assert [l["id"] for l in lines[1:]] == [s.id for s in samples]
    loaded = EvalResult.load(out)
    assert loaded.accuracy == 1.0 and loaded.meta["model"] == "fake-vlm"
    # A directory as out means <dir>/results.jsonl
    res = run_eval(FakeVLM(), samples, runner=FakeRun({}), out=out.parent, max_new_tokens=5, progress=False)
    assert res.n == 5


def test_resume_after_crash_with_torn_line(tmp_path):
    n, bs = 23, 4
    samples = _samples(n)
    out = tmp_path / "results.jsonl"
    crashing = FakeRun(_replies(samples), fail_after=3)
    with pytest.raises(KeyboardInterrupt):
        run_eval(FakeVLM(), samples, runner=crashing, batch_size=bs, out=out, progress=False)
    assert len(_lines(out)) == 1 + 3 * bs
    # kill -9 in the middle of the next write: half a record, no newline
    torn = json.dumps({"id": "s12", "family": "color", "question": "q12?", "answer": "a12",
                       "prediction": "A12", "score": 1.0, "correct": True})
    with open(out, "a") as f:
        f.write(torn[: len(torn) // 2])

    run = FakeRun(_replies(samples))
    with pytest.warns(UserWarning, match="torn"):
        res = run_eval(FakeVLM(), samples, runner=run, batch_size=bs, out=out, progress=False)
    assert run.seen == [s.question for s in samples[3 * bs:]]  # only the missing ones, s12 included
    assert run.calls == math.ceil((n - 3 * bs) / bs)
    lines = _lines(out)  # every line parses: the torn piece is gone
    ids = [l["id"] for l in lines[1:]]
    assert len(ids) == n and sorted(ids) == sorted(s.id for s in samples)
    assert res.n == n and res.accuracy == 1.0

    again = FakeRun(_replies(samples))
    res2 = run_eval(FakeVLM(), samples, runner=again, batch_size=bs, out=out, progress=False)
    assert again.calls == 0 and res2.records == res.records and len(_lines(out)) == n + 1


def test_resume_with_more_samples_and_torn_header(tmp_path):
    samples = _samples(12)
    out = tmp_path / "results.jsonl"
    run_eval(FakeVLM(), samples[:5], runner=FakeRun(_replies(samples)), out=out, progress=False)
    run = FakeRun(_replies(samples))
    res = run_eval(FakeVLM(), samples, runner=run, out=out, progress=False)
    assert run.seen == [s.question for s in samples[5:]] and res.n == 12
    # a subset of what the file holds: no model call, records restricted to the subset
    sub = run_eval(FakeVLM(), samples[2:4], runner=FakeRun({}), out=out, progress=False)
    assert [r["id"] for r in sub.records] == ["s2", "s3"]
    # only a torn header: the file starts over
    out2 = tmp_path / "r2.jsonl"
    out2.write_text('{"_meta": {"format": 1, "mod')
    with pytest.warns(UserWarning, match="torn"):
        res = run_eval(FakeVLM(), samples[:2], runner=FakeRun(_replies(samples)), out=out2, progress=False)
    assert res.n == 2 and len(_lines(out2)) == 3


@pytest.mark.parametrize("change, key", [
    (dict(model_name="another-model"), "model"),
    (dict(interventions=("EdgeMask('text', 'vision')",)), "interventions"),
    (dict(max_new_tokens=16), "max_new_tokens"),
    (dict(metric="vqa"), "metric"),
])
def test_refuses_to_resume_a_different_run(tmp_path, change, key):
    samples = _samples(4)
    out = tmp_path / "results.jsonl"
    run_eval(FakeVLM(), samples[:2], runner=FakeRun(_replies(samples)), out=out, progress=False)
    kwargs = dict(change)
    ivs = kwargs.pop("interventions", ())
    run = FakeRun(_replies(samples))
    with pytest.raises(InputError, match=f"different evaluation.*{key}"):
        run_eval(FakeVLM(), samples, *ivs, runner=run, out=out, progress=False, **kwargs)
    assert run.calls == 0


def test_refuses_changed_data_and_foreign_files(tmp_path):
    samples = _samples(3)
    out = tmp_path / "results.jsonl"
    run_eval(FakeVLM(), samples, runner=FakeRun(_replies(samples)), out=out, progress=False)
    changed = [Sample(IMG, "another question?", "a0", id="s0")]
    with pytest.raises(InputError, match="data changed"):
        run_eval(FakeVLM(), changed, runner=FakeRun({}), out=out, progress=False)
    foreign = tmp_path / "foreign.jsonl"
    foreign.write_text('{"id": 1}\n')
    with pytest.raises(InputError, match="_meta"):
        run_eval(FakeVLM(), samples, runner=FakeRun({}), out=foreign, progress=False)
    corrupt = tmp_path / "corrupt.jsonl"
    good = out.read_text().splitlines()
    corrupt.write_text("\n".join([good[0], "garbage", *good[1:]]) + "\n")
    with pytest.raises(InputError, match=":2: not a valid JSON record"):
        run_eval(FakeVLM(), samples, runner=FakeRun({}), out=corrupt, progress=False)


# --- statistics ------------------------------------------------------------------------------------------

def _result(correct, ids=None):
    ids = ids or [f"s{i}" for i in range(len(correct))]
    return EvalResult([{"id": i, "family": "", "score": float(c), "correct": bool(c)} for i, c in zip(ids, correct)])


@pytest.mark.parametrize("both, only_a, only_b, neither", [
    (10, 0, 0, 5), (10, 3, 0, 5), (0, 0, 7, 0), (20, 5, 12, 3), (1, 1, 1, 1), (50, 14, 30, 6), (0, 1, 0, 0),
])
def test_compare_mcnemar_matches_binomtest(both, only_a, only_b, neither):
    a = [1] * both + [1] * only_a + [0] * only_b + [0] * neither
    b = [1] * both + [0] * only_a + [1] * only_b + [0] * neither
    c = compare(_result(a), _result(b))
    assert isinstance(c, Comparison)
    assert (c.n, c.only_a, c.only_b) == (len(a), only_a, only_b)
    expected = 1.0 if only_a + only_b == 0 else binomtest(only_a, only_a + only_b, 0.5).pvalue
    assert c.p_value == pytest.approx(expected, rel=1e-12)
    assert c.difference == pytest.approx((only_b - only_a) / len(a))
    assert c.ci[0] <= c.difference <= c.ci[1]
    assert "McNemar" in c.to_markdown()


def test_compare_common_ids_and_paths(tmp_path):
    a = _result([1, 0, 1, 1], ids=["x", "y", "z", "w"])
    b = _result([0, 1, 1], ids=["z", "y", "v"])
    c = compare(a, b)
    assert c.n == 2 and c.accuracy_a == 0.5 and c.accuracy_b == 0.5 and (c.only_a, c.only_b) == (1, 1)
    with pytest.raises(InputError, match="share no sample ids"):
        compare(a, _result([1], ids=["q"]))
    samples = _samples(6)
    pa, pb = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    run_eval(FakeVLM(), samples, runner=FakeRun(_replies(samples)), out=pa, progress=False)
    run_eval(FakeVLM(), samples, runner=FakeRun(_replies(samples, wrong={"s1"})), out=pb, progress=False)
    c = compare(pa, pb)
    assert (c.n, c.only_a, c.only_b) == (6, 1, 0) and c.difference == pytest.approx(-1 / 6)


def test_bootstrap_ci_is_seeded_and_contains_estimate():
    rng = np.random.default_rng(0)
    for n in (1, 7, 50, 400):
        x = (rng.random(n) < 0.6).astype(float)
        lo, hi = bootstrap_ci(x, seed=3)
        assert lo <= x.mean() <= hi
        assert (lo, hi) == bootstrap_ci(x, seed=3)
    x = rng.random(200)
    assert bootstrap_ci(x, seed=1) != bootstrap_ci(x, seed=2)
    assert bootstrap_ci(np.ones(9)) == (1.0, 1.0)
    assert all(math.isnan(v) for v in bootstrap_ci([]))
    lo, hi = bootstrap_ci(x, level=0.5)
    lo95, hi95 = bootstrap_ci(x)
    assert lo95 <= lo <= hi <= hi95
    # ~ normal approximation for n = 200
    se = x.std() / math.sqrt(len(x))
    assert hi95 - lo95 == pytest.approx(2 * 1.96 * se, rel=0.15)


@pytest.mark.parametrize("k, n", [(8, 10), (0, 10), (10, 10), (1, 3), (37, 50)])
def test_wilson_matches_scipy(k, n):
    ref = binomtest(k, n).proportion_ci(0.95, method="wilson")
    assert wilson_ci(k, n) == pytest.approx((ref.low, ref.high), abs=1e-12)


def test_wilson_and_mcnemar_helpers():
    assert wilson_ci(0, 10)[0] == 0.0 and wilson_ci(10, 10)[1] == 1.0
    assert all(math.isnan(v) for v in wilson_ci(0, 0))
    with pytest.raises(InputError):
        wilson_ci(11, 10)
    assert mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(0, 6) == pytest.approx(2 * 0.5 ** 6)


# --- the analysis CLI ------------------------------------------------------------------------------------

def test_analysis_cli_smoke(tmp_path, monkeypatch):
    import analyses.evaluate as cli

    data = tmp_path / "d.jsonl"
    IMG.save(tmp_path / "im.png")
    data.write_text("".join(json.dumps({"id": f"r{i}", "image": "im.png", "question": f"q{i}?",
                                        "answer": f"a{i}", "family": "fam"}) + "\n" for i in range(6)))
    vlm = FakeVLM()
    monkeypatch.setattr(cli, "load_model", lambda name: vlm)
    replies = {f"q{i}?": (f"a{i}" if i != 2 else "x") for i in range(6)}
    runs = []

    def fake_intervene(v, *interventions):
        assert v is vlm and interventions == ()
        runs.append(FakeRun(replies))
        return runs[-1]

    _patch_intervene(monkeypatch, fake_intervene)
    out = tmp_path / "out"
    argv = ["--model", "fake", "--data", str(data), "--limit", "4", "--seed", "0", "--method", "baseline",
            "--batch-size", "3", "--out", str(out), "--no-progress"]
    summary = cli.main(argv)
    saved = json.loads((out / "summary.json").read_text())
    assert saved["n"] == 4 and saved["arguments"]["limit"] == 4 and saved["seed"] == 0
    assert set(saved["versions"]) >= {"torch", "transformers", "numpy"} and "git_revision" in saved
    assert saved["by_family"]["fam"]["n"] == 4 and len(saved["by_family"]["fam"]["ci"]) == 2
    assert summary["accuracy"] == saved["accuracy"]
    assert len(_lines(out / "results.jsonl")) == 5
    cli.main(argv)  # resumes: nothing left to run
    assert len(runs) == 1 and len(_lines(out / "results.jsonl")) == 5


def test_analysis_cli_with_toy_model(tmp_path):
    """The CLI on the shipped toy model and toy data: its predictions are plain HF greedy decoding of the same
    prompts, its scores the metric of those predictions, its accuracy their mean."""
    import torch

    import analyses.evaluate as cli
    import interp
    from interp.data import load_samples, score

    summary = cli.main(["--model", "toy", "--data", "toy", "--limit", "2", "--max-new-tokens", "4", "--out",
                        str(tmp_path), "--no-progress"])
    records = _lines(tmp_path / "results.jsonl")[1:]
    samples = load_samples("toy", limit=2, seed=0)
    assert [r["question"] for r in records] == [s.question for s in samples] and summary["n"] == 2
    vlm = interp.toy.load()
    b = vlm.prepare(images=[s.image for s in samples], questions=[s.question for s in samples])
    with torch.no_grad():
        ids = vlm.hf.generate(**b.inputs, max_new_tokens=4, do_sample=False)
    texts = [t.strip() for t in vlm.tokenizer.batch_decode(ids[:, b.input_ids.shape[1]:], skip_special_tokens=True)]
    assert [r["prediction"] for r in records] == texts and all(texts), texts
    assert [r["score"] for r in records] == [score(s, t, "auto") for s, t in zip(samples, texts)]
    assert summary["accuracy"] == pytest.approx(sum(r["score"] for r in records) / 2)
