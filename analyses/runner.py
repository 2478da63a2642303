"""How an analysis runs: keyword arguments → `Settings`, data and model loaded (models cached per process), the
analysis's `measure`, the record with its provenance; `run` also writes OUT/<name>.json and the figure.

The record: analysis, command (the equivalent command line), arguments, seed, model, model_label, num_layers,
data, versions, git_revision, created, seconds, then the analysis's numbers. It is JSON-able as returned
(`record.jsonable`: what is written is what is returned).
"""

from __future__ import annotations

import dataclasses
import datetime
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from analyses import loading
from analyses.record import git_revision, jsonable, versions, write_json
from interp.errors import InputError


@dataclass(frozen=True)
class Settings:
    """What every analysis takes (keywords of `compute`, flags of the command line).

    model, data: specs (`analyses.loading`); split: of a datasets directory holding several; limit: number of
    samples (a seeded subset for files); seed: data subset / toy scenes, random controls, bootstrap; out: where
    side files go and other analyses' JSON are read (None: nowhere); batch_size; max_new_tokens: greedy answer
    length where answers are generated (None: 1 for data "toy", whose answers are one word = one token, else 8);
    metric: scoring (`interp.data.scoring`); device, dtype: where and how the model loads; threads: torch CPU
    threads (None: 1 for toy / zoo models, whose tiny ops only lose from threading on a busy machine; torch's
    default otherwise); progress: progress bars.
    """

    model: str = "toy"
    data: str = "toy"
    split: str | None = None
    limit: int | None = None
    seed: int = 0
    out: str | None = None
    batch_size: int = 16
    max_new_tokens: int | None = None
    metric: str = "auto"
    device: str | None = None
    dtype: str | None = None
    threads: int | None = None
    progress: bool = True


FIELDS = tuple(f.name for f in dataclasses.fields(Settings))


def settings(analysis, kwargs: dict) -> tuple[Settings, dict]:
    """Split keywords into Settings (the analysis's defaults filled in) and the analysis's own options."""
    own = {o.name: o for o in analysis.options}
    unknown = [k for k in kwargs if k not in FIELDS and k not in own]
    if unknown:
        raise InputError(f"{analysis.name} takes no argument {', '.join(map(repr, unknown))}; it takes "
                         f"{', '.join(FIELDS + tuple(own))}")
    kw = {k: v for k, v in kwargs.items() if k in FIELDS}
    kw.setdefault("limit", analysis.limit)
    kw.setdefault("batch_size", analysis.batch_size)
    s = Settings(**kw)
    if s.max_new_tokens is None:
        # Toy answers are one token. Decoding more only tests whether the model stops: under text→vision cuts
        # the toy model often names the right answer and then repeats it instead of emitting </s>, which
        # exact match would count as wrong although the answer itself is right.
        s = dataclasses.replace(s, max_new_tokens=1 if str(s.data) == "toy" else 8)
    options = {name: kwargs.get(name, o.default) for name, o in own.items()}
    return s, options


def command_line(name: str, kwargs: dict) -> str:
    """The command that makes the same record: `python -m analyses.<name>` with the keywords given, in order."""
    flags = []
    for k, v in kwargs.items():
        if k == "progress":
            flags += [] if v else ["--no-progress"]
        elif v is not None:
            v = ",".join(map(str, v)) if isinstance(v, (list, tuple)) else v
            flags += [f"--{k.replace('_', '-')}", str(v)]
    return " ".join([f"python -m analyses.{name}", *flags])


def compute(analysis, kwargs: dict, command: str | None = None) -> dict:
    """Load data and model, `measure`, and return the record (nothing written)."""
    import torch

    s, options = settings(analysis, kwargs)
    threads = s.threads
    if threads is None and (s.model == "toy" or s.model.startswith("zoo:")):
        threads = 1
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        loading.seed_everything(s.seed)
        t0 = time.perf_counter()
        samples = loading.load_data(s.data, limit=s.limit, seed=s.seed, split=s.split)
        vlm = loading.load_model(s.model, seed=s.seed, dtype=s.dtype, device=s.device)
        t1 = time.perf_counter()
        numbers = analysis.measure(vlm, samples, s, **options)
        t2 = time.perf_counter()
    finally:
        torch.set_num_threads(before)  # process-global: leave it as we found it (tests, notebooks)
    record = {
        "analysis": analysis.name,
        "command": command or command_line(analysis.name, kwargs),
        "arguments": {**dataclasses.asdict(s), **options},
        "seed": s.seed,
        "model": s.model,
        "model_label": loading.model_label(s.model),
        "num_layers": int(vlm.num_layers),
        "data": s.data,
        "versions": versions(),
        "git_revision": git_revision(outputs=s.out),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "seconds": {"load": round(t1 - t0, 2), "compute": round(t2 - t1, 2)},
        **numbers,
    }
    return jsonable(record)


def default_out(name: str, model: str, data: str) -> str:
    slug = "-".join(Path(str(x).rstrip("/")).name.replace(":", "_") for x in (model, data))
    return str(Path("runs") / name / slug)


def run(analysis, kwargs: dict, command: str | None = None) -> dict:
    """`compute`, then OUT/<name>.json (the record) and OUT/<name>.png/.pdf (`plot` of it); returns the record."""
    if kwargs.get("out") is None:
        kwargs = {**kwargs, "out": default_out(analysis.name, kwargs.get("model", "toy"), kwargs.get("data", "toy"))}
    record = compute(analysis, kwargs, command)
    out = Path(kwargs["out"])
    path = write_json(out / f"{analysis.name}.json", record)
    figures = analysis.plot(record, out)
    sec = record["seconds"]
    print(f"{analysis.name}: wrote {path} and {', '.join(str(f) for f in figures)} "
          f"(load {sec['load']:.1f} s, compute {sec['compute']:.1f} s)", file=sys.stderr)
    return record
