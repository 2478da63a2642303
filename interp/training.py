"""What interp's trainers share: the warmup + cosine learning-rate schedule, and files written atomically.

    lr = peak * warmup_cosine(step, total, warmup=100, floor=0.05)
    atomic_write("runs/x/train_state.pt", lambda tmp: torch.save(state, tmp))
    model.save_pretrained(tmp_dir); publish(tmp_dir, "runs/x")        # tmp_dir inside runs/x

A file written here goes to a temporary name in its own directory, is fsynced, then `os.replace`d: a crash
leaves the old file or the new one, never a torn one.
"""

from __future__ import annotations

import math
import os
from pathlib import Path


def warmup_cosine(step: int, total: int, *, warmup: int, floor: float = 0.0) -> float:
    """The schedule's factor at 0-based optimizer step `step` of `total`: linear warmup over `warmup` steps to
    1, then a cosine down to `floor` at step `total` (held there after it).

    >>> [round(warmup_cosine(s, 10, warmup=2, floor=0.1), 3) for s in (0, 1, 2, 6, 10, 12)]
    [0.5, 1.0, 1.0, 0.55, 0.1, 0.1]
    """
    if step < warmup:
        return (step + 1) / warmup
    t = min(1.0, (step - warmup) / max(1, total - warmup))
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t))


def atomic_write(path, write) -> Path:
    """Call `write(tmp)` with a temporary path beside `path`, fsync it, and rename it over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        write(tmp)
        os.chmod(tmp, 0o644)  # some writers create 0600 files; a checkpoint is meant to be shared
        _fsync(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def publish(src, dst) -> list[Path]:
    """Move every file of directory `src` into directory `dst`, each fsynced and renamed over its namesake
    (one file at a time: a reader sees each file old or new); then remove `src`. `src` must be on `dst`'s
    filesystem (make it inside `dst`). Returns the new paths."""
    src, dst = Path(src), Path(dst)
    out = []
    for f in sorted(src.iterdir()):
        _fsync(f)
        os.replace(f, dst / f.name)
        out.append(dst / f.name)
    src.rmdir()
    if hasattr(os, "O_DIRECTORY"):  # the renames themselves survive a crash once the directory is synced
        fd = os.open(dst, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    return out


def _fsync(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())
