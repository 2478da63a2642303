"""interp.training: the warmup + cosine schedule against its closed form, and writes that never leave a torn file."""
import math
import os

import pytest

from interp.training import atomic_write, publish, warmup_cosine


@pytest.mark.parametrize("total,warmup,floor", [(10, 2, 0.1), (1000, 100, 0.05), (5, 10, 0.0), (50, 1, 0.5)])
def test_warmup_cosine_is_its_closed_form(total, warmup, floor):
    for step in range(total + 3):
        if step < warmup:
            want = (step + 1) / warmup
        else:
            t = min(1.0, (step - warmup) / max(1, total - warmup))
            want = floor + (1 - floor) * (1 + math.cos(math.pi * t)) / 2
        assert warmup_cosine(step, total, warmup=warmup, floor=floor) == pytest.approx(want, abs=1e-15)
    assert warmup_cosine(warmup - 1, total, warmup=warmup, floor=floor) == 1.0  # the peak is reached
    if total > warmup:  # held at the floor after the end
        assert warmup_cosine(total + 5, total, warmup=warmup, floor=floor) == pytest.approx(floor)


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "state.bin"
    atomic_write(path, lambda tmp: tmp.write_bytes(b"old"))

    def torn(tmp):
        tmp.write_bytes(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(path, torn)
    assert path.read_bytes() == b"old" and os.listdir(tmp_path) == ["state.bin"]
    atomic_write(path, lambda tmp: tmp.write_bytes(b"new"))
    assert path.read_bytes() == b"new" and oct(path.stat().st_mode & 0o777) == "0o644"


def test_publish_replaces_each_file_and_keeps_the_others(tmp_path):
    (tmp_path / "keep.pt").write_text("state")
    (tmp_path / "config.json").write_text("old")
    new = tmp_path / ".new"
    new.mkdir()
    (new / "config.json").write_text("new")
    (new / "model.safetensors").write_text("weights")
    assert [p.name for p in publish(new, tmp_path)] == ["config.json", "model.safetensors"]
    assert sorted(os.listdir(tmp_path)) == ["config.json", "keep.pt", "model.safetensors"]
    assert (tmp_path / "config.json").read_text() == "new" and (tmp_path / "keep.pt").read_text() == "state"
