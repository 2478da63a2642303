"""Models and data by name, for every analysis: a per-process model cache, the data specs, the RNG seeds.

Model specs (`model=`): "toy" (the shipped toy model), "zoo:<arch>" (a random tiny `interp.zoo` model, for
tests: its answers are nonsense), a hub id or a local directory (`interp.load`).
Data specs (`data=`): "toy" (held-out toy scenes with evidence boxes), a .jsonl file or a `datasets`
directory (`interp.data.load_samples`).
"""

from __future__ import annotations

import os
import random
import sys
from pathlib import Path

import numpy as np

from interp.errors import InputError

_MODELS: dict = {}  # (spec, seed, dtype, device) → VLM: analyses run back to back (tests, main) share a model


def load_model(spec: str, *, seed: int = 0, dtype: str | None = None, device: str | None = None):
    """"toy" → interp.toy.load(); "zoo:<arch>" → interp.zoo.tiny(arch, seed=seed); else interp.load(spec).
    Cached per process (the model is never modified by an analysis)."""
    import torch

    import interp

    key = (spec, seed if spec.startswith("zoo:") else None, dtype, device)
    if key in _MODELS:
        return _MODELS[key]
    kw = {}
    if dtype is not None:
        kw["dtype"] = getattr(torch, dtype)
    if device is not None:
        kw["device"] = device
    if spec == "toy":
        import interp.toy

        vlm = interp.toy.load(**kw)
    elif spec.startswith("zoo:"):
        vlm = interp.zoo.tiny(spec[4:], seed=seed, **kw)
    else:
        vlm = interp.load(spec, **kw)
    _MODELS[key] = vlm
    return vlm


def model_label(spec: str) -> str:
    """How a figure title names the model."""
    if spec == "toy":
        return "toy LLaVA"
    if spec.startswith("zoo:"):
        return f"{spec} (random weights)"
    return Path(spec.rstrip("/")).name if os.path.isdir(spec) else spec


def load_data(spec: str, *, limit: int | None, seed: int = 0, split: str | None = None) -> list:
    """The samples of a data spec (a seeded subset of `limit` for files); an error if there are none."""
    from interp.data.loaders import load_samples

    samples = load_samples(spec, limit=limit, seed=seed, split=split)
    if not samples:
        raise InputError(f"data {spec!r} gave no samples (limit={limit})")
    return samples


def with_boxes(samples, analysis: str) -> list:
    """The samples that have evidence boxes; an error if none has (the analysis needs them)."""
    kept = [s for s in samples if s.boxes]
    if not kept:
        raise InputError(f"{analysis} needs evidence boxes (Sample.boxes); none of the {len(samples)} samples has "
                         "any. Use --data toy or a JSONL file with a 'boxes' field")
    if len(kept) < len(samples):
        print(f"{analysis}: {len(samples) - len(kept)} of {len(samples)} samples have no evidence boxes; skipped",
              file=sys.stderr)
    return kept


def seed_everything(seed: int) -> None:
    """Python's, numpy's and torch's global RNGs."""
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
