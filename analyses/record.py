"""The JSON an analysis writes next to its figure: strict JSON (NaN → null), compact number lists, atomic writes,
and the provenance every record carries (package versions, git revision).

    write_json("figures/x.json", {"a": torch.tensor([1.0, nan])})     # → {"a": [1.0, null]}
    data, folder = read_json("figures/x.json")                          # or a dict: (dict, None)
    arr(data["a"])                                                      # → array([1., nan])
"""

from __future__ import annotations

import importlib.metadata
import json
import math
import os
import platform
import subprocess
from pathlib import Path

import numpy as np

from interp.errors import InputError

VERSIONS = ("interp", "torch", "transformers", "nnsight", "datasets", "numpy", "scipy", "pillow", "matplotlib",
            "seaborn")


# ------------------------------------------------------------------------------------------- provenance


def versions() -> dict:
    """Python and the packages the numbers depend on (None: not installed)."""
    out = {"python": platform.python_version()}
    for name in VERSIONS:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def git_revision(outputs: str | Path | None = None, root: str | Path | None = None) -> str | None:
    """HEAD of `root` (default: the repository holding this file), with "-dirty" if tracked files changed;
    None outside git.

    Changes under `outputs` (the run's own output folder) do not count: a run that rewrites tracked figures
    would otherwise call every later analysis of the same run dirty."""
    root = Path(root or Path(__file__).parent.parent).resolve()
    spec = ["--", "."]
    if outputs is not None and Path(outputs).resolve().is_relative_to(root):
        spec.append(f":(exclude){Path(outputs).resolve().relative_to(root).as_posix()}")
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                             timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", *spec], cwd=root,
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return rev + ("-dirty" if dirty else "")


# ------------------------------------------------------------------------------------------- values


def jsonable(obj, digits: int = 7):
    """Tensors / arrays / numpy scalars → lists and floats rounded to `digits` significant digits (float32
    precision: the rest is noise and bloats the file); NaN and ±inf → None (strict JSON)."""
    try:
        import torch

        if isinstance(obj, torch.Tensor):
            obj = obj.detach().cpu().numpy()
    except ImportError:
        pass
    if isinstance(obj, np.ndarray):
        obj = obj.tolist()
    if isinstance(obj, dict):
        return {str(k): jsonable(v, digits) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v, digits) for v in obj]
    if isinstance(obj, (np.floating, float)):
        v = float(obj)
        return float(f"{v:.{digits}g}") if math.isfinite(v) else None
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.bool_,)):
        return bool(obj)
    if isinstance(obj, Path):
        return str(obj)
    return obj


def round_sig(x, digits: int = 4) -> list:
    """Values rounded to `digits` significant digits, as a list (keeps large JSON arrays small)."""
    return [float(f"{v:.{digits}g}") for v in np.asarray(x, dtype=np.float64).ravel()]


def arr(x, dtype=np.float64) -> np.ndarray:
    """A JSON list (None = NaN) → numpy array."""
    if dtype is np.float64:
        return np.array(_none_to_nan(x), dtype=np.float64)
    return np.asarray(x, dtype=dtype)


def _none_to_nan(x):
    if isinstance(x, list):
        return [_none_to_nan(v) for v in x]
    return math.nan if x is None else x


# ------------------------------------------------------------------------------------------- files


def write_json(path, obj) -> Path:
    """`obj` as strict JSON (`jsonable`) at `path`, written atomically; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(_dumps(jsonable(obj)) + "\n")
    os.replace(tmp, path)  # atomic: a reader never sees half a file
    return path


def _dumps(obj, indent: str = "") -> str:
    """Strict JSON, one key per line, but every list of plain values on one line (numbers stay compact)."""
    inner = indent + " "
    if isinstance(obj, dict):
        if not obj:
            return "{}"
        items = [f"{inner}{json.dumps(k)}: {_dumps(v, inner)}" for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + "\n" + indent + "}"
    if isinstance(obj, list) and any(isinstance(v, (dict, list)) for v in obj):
        return "[\n" + ",\n".join(inner + _dumps(v, inner) for v in obj) + "\n" + indent + "]"
    compact = (",", ":") if isinstance(obj, list) else None
    return json.dumps(obj, allow_nan=False, ensure_ascii=False, separators=compact)


def read_json(path_or_dict) -> tuple[dict, Path | None]:
    """(record, folder it came from or None)."""
    if isinstance(path_or_dict, dict):
        return path_or_dict, None
    p = Path(path_or_dict)
    if p.is_dir():
        found = sorted(p.glob("*.json"))
        if len(found) != 1:
            raise InputError(f"{p} holds {len(found)} JSON files; pass the analysis's JSON file itself")
        p = found[0]
    return json.loads(p.read_text()), p.parent
