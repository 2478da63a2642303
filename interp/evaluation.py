"""Evaluate a VLM (plain or under interventions) on `Sample`s, with resumable JSONL results.

    vlm = interp.toy.load()
    res = evaluate(vlm, load_samples("toy", limit=200), out="runs/toy/results.jsonl")
    res.accuracy, res.by_family, res.ci
    blind = evaluate(vlm, load_samples("toy", limit=200), interp.EdgeMask("text", "vision"))
    compare(res, blind)            # paired difference (blind - plain), bootstrap interval, McNemar p
    print(res.to_markdown())

Results file: line 1 is `{"_meta": {...}}` (model, interventions, max_new_tokens, metric, ...), then one record
per sample: {"id", "family", "question", "answer", "prediction", "metric", "score", "correct"}, and for
benchmark samples (`interp.data.benchmark`) also "task", "group", "parsed" and "extra" (what lmms-eval's rule
read, and what its aggregation needs: `res.harness` is the benchmark's number as lmms-eval aggregates it).
Records are flushed and fsynced per batch. Re-running with the same `out` skips the ids already there; a torn last line
(a crash mid-write) is dropped and that sample re-run; a file made with another model, other interventions,
`max_new_tokens` or metric is refused.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import math
import os
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

from interp.data import aggregate
from interp.data.loaders import load_samples
from interp.data.schema import Sample, as_sample
from interp.data.scoring import resolve_metric, score
from interp.engine import intervene
from interp.errors import InputError
from interp.stats import bootstrap_ci, mcnemar_exact

FORMAT_VERSION = 1
# Meta keys that must agree before a results file is resumed: anything else changing the predictions.
FINGERPRINT = ("model", "interventions", "max_new_tokens", "metric")
N_RESAMPLES = 2000


# --- results ---------------------------------------------------------------------------------------------

@dataclass
class EvalResult:
    """Per-sample records plus accuracy, per-family accuracy and seeded bootstrap intervals.

    records: dicts with id, family, question, answer, prediction, metric, score (float in [0, 1]; soft for
    VQA accuracy) and correct (score >= 0.5). Accuracies are means of `score`.
    """

    records: list[dict]
    meta: dict = field(default_factory=dict)
    seed: int = 0
    level: float = 0.95

    @property
    def n(self) -> int:
        return len(self.records)

    @cached_property
    def sample_accuracy(self) -> np.ndarray:
        """[N] per-sample accuracy (each record's `score`), in record order."""
        return np.array([float(r["score"]) for r in self.records], dtype=np.float64)

    @property
    def accuracy(self) -> float:
        return float(self.sample_accuracy.mean()) if self.n else math.nan

    @cached_property
    def ci(self) -> tuple[float, float]:
        """Bootstrap interval (percentile, seeded) of the overall accuracy."""
        return bootstrap_ci(self.sample_accuracy, level=self.level, n_resamples=N_RESAMPLES, seed=self.seed)

    @cached_property
    def _families(self) -> dict[str, np.ndarray]:
        groups: dict[str, list[float]] = {}
        for r in self.records:
            groups.setdefault(r.get("family", ""), []).append(float(r["score"]))
        return {f: np.array(v) for f, v in sorted(groups.items())}

    @property
    def by_family(self) -> dict[str, float]:
        """family → accuracy (families in sorted order)."""
        return {f: float(v.mean()) for f, v in self._families.items()}

    @cached_property
    def by_family_ci(self) -> dict[str, tuple[float, float]]:
        return {f: bootstrap_ci(v, level=self.level, n_resamples=N_RESAMPLES, seed=self.seed)
                for f, v in self._families.items()}

    def summary(self) -> dict:
        """Numbers for a JSON summary: accuracy, interval, n, and the same per family."""
        fams = self._families
        out = {
            "n": self.n, "accuracy": self.accuracy, "ci": list(self.ci), "level": self.level,
            "by_family": {f: {"n": len(fams[f]), "accuracy": self.by_family[f], "ci": list(self.by_family_ci[f])}
                          for f in fams},
        }
        if aggregate.task_of(self.records):
            out["harness"] = self.harness
        return out

    def to_markdown(self, digits: int = 3) -> str:
        """A table: one row per family, then the overall row."""
        pct = f"{self.level:.0%}"
        lines = [f"| family | n | accuracy | {pct} CI |", "|---|---:|---:|---|"]

        def row(name, n, acc, ci):
            lines.append(f"| {name} | {n} | {acc:.{digits}f} | [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}] |")

        fams = self._families
        if not (len(fams) == 1 and "" in fams):
            for f in fams:
                row(f or "(none)", len(fams[f]), self.by_family[f], self.by_family_ci[f])
        row("**all**", self.n, self.accuracy, self.ci)
        return "\n".join(lines)

    @cached_property
    def harness(self) -> dict:
        """The benchmark's numbers as lmms-eval aggregates them (`interp.data.aggregate.harness`): "score" is
        its headline metric (MMStar / HR-Bench: macro over groups; POPE adds precision, recall, F1)."""
        return aggregate.harness(self.records)

    @classmethod
    def load(cls, path, *, seed: int = 0) -> EvalResult:
        """Read a results file written by `evaluate` (a torn last line is ignored, the file is untouched)."""
        meta, records, _ = _read_results(Path(path), repair=False)
        return cls(records=records, meta=meta or {}, seed=seed)


@dataclass(frozen=True)
class Comparison:
    """Paired comparison of two results over their common ids: difference = accuracy_b - accuracy_a."""

    n: int
    accuracy_a: float
    accuracy_b: float
    difference: float
    ci: tuple[float, float]
    only_a: int  # pairs where only A is correct
    only_b: int  # pairs where only B is correct
    p_value: float  # exact McNemar (binomial test on the discordant pairs)

    def to_markdown(self, digits: int = 3) -> str:
        d = digits
        return "\n".join([
            "| n | A | B | B - A | 95% CI | only A | only B | McNemar p |",
            "|---:|---:|---:|---:|---|---:|---:|---:|",
            f"| {self.n} | {self.accuracy_a:.{d}f} | {self.accuracy_b:.{d}f} | {self.difference:+.{d}f} | "
            f"[{self.ci[0]:+.{d}f}, {self.ci[1]:+.{d}f}] | {self.only_a} | {self.only_b} | {self.p_value:.3g} |",
        ])


def compare(a, b, *, seed: int = 0, level: float = 0.95, harness: bool = False) -> Comparison:
    """Paired comparison of two evaluations (EvalResult or results path) over the ids both contain.

    difference = accuracy(b) - accuracy(a) on the common ids, with a seeded bootstrap interval over the paired
    per-sample score differences; p_value = exact McNemar test on `correct` (binomial test of the discordant
    pairs against 1/2, two-sided). harness=True: accuracies are the benchmark's headline numbers
    (`EvalResult.harness`, e.g. MMStar's macro over l2 categories) on the common ids, the difference theirs,
    and the interval a bootstrap of the per-sample differences weighted as that number weighs them.
    """
    a = a if isinstance(a, EvalResult) else EvalResult.load(a)
    b = b if isinstance(b, EvalResult) else EvalResult.load(b)
    rec_b = {r["id"]: r for r in b.records}
    pairs = [(r, rec_b[r["id"]]) for r in a.records if r["id"] in rec_b]
    if not pairs:
        raise InputError("compare: the two results share no sample ids; evaluate both on the same data")
    sa = np.array([float(ra["score"]) for ra, _ in pairs])  # [N]
    sb = np.array([float(rb["score"]) for _, rb in pairs])  # [N]
    if harness:  # the headline's per-sample weights: score_a = w · sa (a plain mean for most benchmarks)
        w = aggregate.weights([ra for ra, _ in pairs])  # [N]
        sa, sb = len(pairs) * w * sa, len(pairs) * w * sb
    only_a = sum(bool(ra["correct"]) and not bool(rb["correct"]) for ra, rb in pairs)
    only_b = sum(bool(rb["correct"]) and not bool(ra["correct"]) for ra, rb in pairs)
    return Comparison(
        n=len(pairs), accuracy_a=float(sa.mean()), accuracy_b=float(sb.mean()),
        difference=float((sb - sa).mean()),
        ci=bootstrap_ci(sb - sa, level=level, n_resamples=N_RESAMPLES, seed=seed),
        only_a=only_a, only_b=only_b, p_value=mcnemar_exact(only_a, only_b),
    )


# --- evaluate --------------------------------------------------------------------------------------------

def evaluate(vlm, samples, *interventions, batch_size: int = 8, max_new_tokens: int = 8, out=None,
             metric: str = "auto", progress: bool = True, model_name: str | None = None,
             seed: int = 0, desc: str = "evaluate") -> EvalResult:
    """Generate an answer for every sample (under `interventions`) and score it.

    vlm: what `interp.load` returns; needs `vlm.prepare(images=[...], questions=[...])`.
    samples: a list of `Sample`, or anything `load_samples` takes ("toy", a .jsonl path, a datasets dir).
    interventions: passed to `interp.intervene(vlm, *interventions)`, whose `.generate` answers each batch.
    out: a results JSONL path (or a directory → `<dir>/results.jsonl`): streamed, resumable (module docstring).
    model_name: the model's name in the metadata (default: read from `vlm`); resuming checks it.
    seed: of the bootstrap intervals. desc: the progress bar's label.
    Returns the EvalResult over exactly `samples`, in their order (resumed records included).
    """
    for what, v in (("batch_size", batch_size), ("max_new_tokens", max_new_tokens)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise InputError(f"evaluate: {what} must be an int >= 1, got {v!r}")
    if not isinstance(samples, Sequence) or isinstance(samples, (str, bytes)):
        samples = load_samples(samples)
    samples = [as_sample(s, f"samples[{k}]") for k, s in enumerate(samples)]
    ids = _sample_ids(samples)
    for s in samples:  # fail before running the model: unknown metric, MC answer not a choice, no box
        score(s, "", metric)

    meta = {
        "format": FORMAT_VERSION, "model": model_name or _model_name(vlm),
        "interventions": [_describe(iv) for iv in interventions], "max_new_tokens": max_new_tokens,
        "metric": metric, "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    done: dict[str, dict] = {}
    path = None
    if out is not None:
        path = Path(out)
        if path.is_dir():
            path = path / "results.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        old_meta, old_records, _ = _read_results(path, repair=True)
        if old_meta is not None:
            _check_meta(old_meta, meta, path)
            meta = old_meta
            by_id = dict(zip(ids, samples))
            for r in old_records:
                s = by_id.get(r["id"])
                if s is not None and (r.get("question") != s.question or r.get("answer") != s.answer):
                    raise InputError(f"{path}: record id={r['id']!r} has question/answer "
                                     f"{r.get('question')!r}/{r.get('answer')!r} but the sample with that id has "
                                     f"{s.question!r}/{s.answer!r}; the data changed: use a new out path")
            done = {r["id"]: r for r in old_records}

    pending = [(i, s) for i, s in zip(ids, samples) if i not in done]
    new: dict[str, dict] = {}
    if pending:
        runner = intervene(vlm, *interventions)
        from tqdm.auto import tqdm

        bar = tqdm(total=len(samples), initial=len(samples) - len(pending), disable=not progress,
                   desc=desc, unit="sample")
        f = None
        try:
            if path is not None:
                fresh = not path.exists() or path.stat().st_size == 0
                f = open(path, "a", encoding="utf-8")
                if fresh:
                    _write_lines(f, [{"_meta": meta}])
            for start in range(0, len(pending), batch_size):
                chunk = pending[start:start + batch_size]
                texts = _generate(vlm, runner, [s for _, s in chunk], max_new_tokens)
                records = [_record(i, s, t, metric) for (i, s), t in zip(chunk, texts)]
                if f is not None:
                    _write_lines(f, records)
                new.update((r["id"], r) for r in records)
                bar.update(len(chunk))
        finally:
            bar.close()
            if f is not None:
                f.close()
    records = [done[i] if i in done else new[i] for i in ids]
    return EvalResult(records=records, meta=meta, seed=seed)


def _generate(vlm, runner, samples: list[Sample], max_new_tokens: int) -> list[str]:
    batch = vlm.prepare(images=[s.image for s in samples], questions=[s.question for s in samples])
    return list(runner.generate(batch, max_new_tokens=max_new_tokens).texts)  # one continuation per row


def _record(id_: str, s: Sample, text: str, metric: str) -> dict:
    name = resolve_metric(s, metric)
    if s.task and name == s.task:  # lmms-eval's rule: keep what it read and what its aggregation needs
        from interp.data.lmms import judge

        value, parsed, extra = judge(s, text)
        more = {"task": s.task, "group": s.meta.get("group"), "parsed": parsed, "extra": extra}
    else:
        value, more = score(s, text, metric), {}
    return {"id": id_, "family": s.family, "question": s.question, "answer": s.answer, "prediction": text,
            "metric": name, "score": value, "correct": bool(value >= 0.5), **more}


def _write_lines(f, objs: list[dict]) -> None:
    # One write per batch, then flush + fsync: after a crash at most the batch in flight is lost or torn.
    f.write("".join(json.dumps(o, ensure_ascii=False) + "\n" for o in objs))
    f.flush()
    os.fsync(f.fileno())


def _read_results(path: Path, *, repair: bool) -> tuple[dict | None, list[dict], int]:
    """(meta, records, n_dropped) of a results file; with repair, cut a torn tail off the file itself."""
    if not path.exists():
        return None, [], 0
    data = path.read_bytes()
    lines = data.split(b"\n")
    # A file we wrote ends with "\n": the last split piece is b"" unless the last write was torn.
    complete, tail = lines[:-1], lines[-1]
    parsed = []
    for lineno, raw in enumerate(complete, 1):
        try:
            obj = json.loads(raw)
            if not isinstance(obj, dict):
                raise ValueError("not an object")
        except ValueError:
            if lineno == len(complete) and not tail:
                tail = raw  # an unparseable last line is a torn write too (e.g. zero-filled after a crash)
                complete = complete[:-1]
                break
            raise InputError(f"{path}:{lineno}: not a valid JSON record ({raw[:60]!r}); a results file only "
                             "tears at its last line: delete this line by hand or use a new out path") from None
        parsed.append(obj)
    good_end = sum(len(c) + 1 for c in complete)
    dropped = 1 if tail else 0
    if tail:
        warnings.warn(f"{path}: dropping a torn last line ({len(tail)} bytes, a crash mid-write); "
                      "its sample will be re-run", stacklevel=3)
        if repair:
            with open(path, "r+b") as f:
                f.truncate(good_end)
                f.flush()
                os.fsync(f.fileno())
    if not parsed:
        return None, [], dropped
    if "_meta" not in parsed[0]:
        raise InputError(f"{path}:1: expected the metadata line {{\"_meta\": ...}} written by evaluate; this "
                         "is not an interp results file: use another out path")
    meta, records, seen = parsed[0]["_meta"], [], set()
    for lineno, r in enumerate(parsed[1:], 2):
        if "id" not in r or "score" not in r:
            raise InputError(f"{path}:{lineno}: record lacks field 'id' or 'score'")
        if r["id"] in seen:
            warnings.warn(f"{path}:{lineno}: id {r['id']!r} appears twice (two runs writing one file?); "
                          "keeping the first", stacklevel=3)
            continue
        seen.add(r["id"])
        records.append(r)
    return meta, records, dropped


def _check_meta(old: dict, new: dict, path: Path) -> None:
    diff = [k for k in FINGERPRINT if old.get(k) != new.get(k)]
    if diff:
        detail = "; ".join(f"{k}: file has {old.get(k)!r}, this run has {new.get(k)!r}" for k in diff)
        raise InputError(f"{path} was written by a different evaluation ({detail}); refusing to mix results: "
                         "pass another out path, or delete the file to start over")


def _sample_ids(samples: list[Sample]) -> list[str]:
    ids = []
    for s in samples:
        ids.append(s.id or _content_id(s))
    seen: dict[str, int] = {}
    for k, i in enumerate(ids):
        if i in seen:
            raise InputError(f"samples[{seen[i]}] and samples[{k}] share id {i!r}; ids must be unique "
                             "(results are resumed by id)")
        seen[i] = k
    return ids


def _content_id(s: Sample) -> str:
    # Samples without an id get one from their content, stable across runs and orderings.
    h = hashlib.sha1()
    for part in (s.question, s.answer, s.family, repr(s.choices), repr(s.boxes)):
        h.update(part.encode() + b"\0")
    for im in s.images:
        h.update(f"{im.size}".encode())
        h.update(im.tobytes())
    return "sha1:" + h.hexdigest()[:16]


def _describe(intervention) -> str:
    # repr of a frozen dataclass names its parameters; drop memory addresses so reruns compare equal.
    return re.sub(r" at 0x[0-9a-fA-F]+", "", repr(intervention))


def _model_name(vlm) -> str:
    # interp.load records where it read the model (hub id, directory) or a built model's config name or class
    return str(vlm.source or type(vlm.hf).__name__)
