"""Benchmark numbers from per-sample records, aggregated as each lmms-eval task does.

records: the dicts `interp.evaluate` writes (id, family, prediction, answer, score, and for benchmark samples
task, group, parsed, extra). Values are fractions in [0, 1] (lmms-eval prints V* × 100).

    harness(records)   → {"metric": "average", "score": 0.41, "n": 1500, "by_category": {...}, ...}
    weights(records)   → [N] w with sum(w · score) == harness(records)["score"] (macro averages included),
                         so a paired difference of two runs is a weighted mean of per-sample differences.
"""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np

from interp.errors import InputError

# task → (headline metric name as lmms-eval reports it, how it aggregates)
HEADLINE = {"vstar": "vstar_overall_acc", "realworldqa": "exact_match", "mmstar": "average",
            "textvqa": "exact_match", "countbench": "acc", "hrbench4k": "average", "hrbench8k": "average",
            "pope": "pope_accuracy", "refcoco": "refcoco_ACC@0.5", "refcoco+": "refcoco_ACC@0.5",
            "refcocog": "refcoco_ACC@0.5"}
MACRO = ("mmstar", "hrbench4k", "hrbench8k")  # mean per group (l2_category / cycle_category), then over groups


def task_of(records) -> str:
    """The one benchmark task the records belong to ("" for generic samples); an error if mixed."""
    tasks = {r.get("task") or "" for r in records}
    if len(tasks) > 1:
        raise InputError(f"records mix benchmark tasks {sorted(tasks)}; aggregate one benchmark at a time")
    return tasks.pop() if tasks else ""


def _macro(records) -> float:
    groups = defaultdict(list)
    for r in records:
        groups[r.get("group")].append(float(r["score"]))
    return float(np.mean([np.mean(v) for v in groups.values()])) if groups else math.nan


def _mean(records) -> float:
    return float(np.mean([float(r["score"]) for r in records])) if records else math.nan


def _by(records, key) -> dict[str, list]:
    out = defaultdict(list)
    for r in records:
        out[r.get(key) or ""].append(r)
    return dict(sorted(out.items()))


def _pope(records) -> dict:
    pred = [str(r["prediction"]).lower().strip() for r in records]
    gt = [str(r["answer"]).lower().strip() for r in records]
    tp = sum(p == "yes" and g == "yes" for p, g in zip(pred, gt))
    fp = sum(p == "yes" and g == "no" for p, g in zip(pred, gt))
    fn = sum(p == "no" and g == "yes" for p, g in zip(pred, gt))  # only the literal "no" counts as negative
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    yes = sum(g == "yes" for g in gt)
    return {"pope_precision": precision, "pope_recall": recall,
            "pope_f1_score": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
            "pope_yes_ratio": yes / len(gt) if gt else 0.0}  # the share of ground-truth yes, as lmms-eval's


def _rec(records) -> dict:
    iou = np.array([float((r.get("extra") or {}).get("iou", 0.0)) for r in records])
    out = {"refcoco_IoU": float(iou.mean()) if len(iou) else math.nan}
    out.update({f"refcoco_ACC@{t}": float((iou >= t).mean()) if len(iou) else math.nan
                for t in (0.1, 0.3, 0.5, 0.7, 0.9)})
    out["refcoco_Center_ACC"] = float(np.mean([bool((r.get("extra") or {}).get("center")) for r in records]))
    return out


def harness(records) -> dict:
    """The task's numbers: {"task", "metric" (lmms-eval's headline name), "score" (its value), "n", and the
    task's other metrics}. Generic records (no task) give the plain mean as "accuracy"."""
    task = task_of(records)
    if task in MACRO:
        main = _macro(records)
    else:
        main = _mean(records)
    out = {"task": task, "metric": HEADLINE.get(task, "accuracy"), "score": main, "n": len(records)}
    if task == "vstar":
        out["by_category"] = {c: _mean(v) for c, v in _by(records, "family").items()}
    elif task == "mmstar":  # each category's metric: the macro over its l2 categories
        out["by_category"] = {c: _macro(v) for c, v in _by(records, "family").items()}
        out["by_l2_category"] = {g: _mean(v) for g, v in _by(records, "group").items()}
    elif task in ("hrbench4k", "hrbench8k"):  # single / cross: the macro over cycle categories
        out["by_category"] = {c: _macro(v) for c, v in _by(records, "family").items()}
        out["undecided"] = sum(r.get("parsed", "") is None for r in records)  # lmms-eval: GPT judge; here 0
    elif task == "pope":
        out.update(_pope(records))
        out["by_category"] = {c: _mean(v) for c, v in _by(records, "family").items()}
    elif task.startswith("refcoco"):
        out.update(_rec(records))
    return out


def weights(records) -> np.ndarray:
    """[N] per-record weights summing to 1 whose weighted mean of `score` is the headline number."""
    n = len(records)
    if task_of(records) not in MACRO:
        return np.full(n, 1.0 / n) if n else np.zeros(0)
    groups = defaultdict(int)
    for r in records:
        groups[r.get("group")] += 1
    return np.array([1.0 / (len(groups) * groups[r.get("group")]) for r in records])
