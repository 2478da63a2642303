"""Evaluation data: the `Sample` record, loaders (toy, JSONL, local `datasets` directories, the papers'
benchmarks from local hub copies) and scorers (generic, and lmms-eval's per-benchmark rules)."""

from interp.data.benchmarks import BENCHMARKS, benchmark, open_benchmark
from interp.data.loaders import load_hf_dataset, load_jsonl, load_samples
from interp.data.prompts import STYLES, apply_style
from interp.data.schema import Sample, as_sample
from interp.data.scoring import (
    box_iou,
    exact_match,
    extract_choice,
    multiple_choice,
    normalize_answer,
    rec_iou,
    score,
    vqa_accuracy,
)

__all__ = [
    "Sample", "as_sample", "load_samples", "load_jsonl", "load_hf_dataset", "benchmark", "open_benchmark",
    "BENCHMARKS", "STYLES", "apply_style", "score", "normalize_answer", "exact_match", "extract_choice",
    "multiple_choice", "vqa_accuracy", "box_iou", "rec_iou",
]
