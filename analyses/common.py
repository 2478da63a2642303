"""What every analysis shares: the command line, model and data loading, batching, scoring, the JSON record
(arguments, package versions, seed, git revision) and the run skeleton `run(...)`.

Model specs (`--model`): "toy" (the shipped toy model), "zoo:<arch>" (a random tiny `interp.zoo` model, for
tests: its answers are nonsense), a hub id or a local directory (`interp.load`).
Data specs (`--data`): "toy" (held-out toy scenes with evidence boxes), a .jsonl file or a `datasets`
directory (`interp.data.load_samples`).

Each analysis module defines `NAME`, `compute(vlm, samples, args) -> dict` and `plot(json_or_dict, out_dir)`,
and its `main(argv)` is `common.run(...)`: the numbers land in OUT/NAME.json, the figure in OUT/NAME.png/.pdf.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import math
import os
import platform
import random
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from interp.data.scoring import METRICS
from interp.errors import InputError

VERSIONS = ("interp", "torch", "transformers", "nnsight", "datasets", "numpy", "scipy", "pillow", "matplotlib",
            "seaborn")
_MODELS: dict = {}  # (spec, seed, dtype, device) → VLM: analyses run back to back (tests, main) share a model


# ------------------------------------------------------------------------------------------- command line


def parser(prog: str, doc: str, *, limit: int | None, batch_size: int = 16) -> argparse.ArgumentParser:
    """The shared options: --model --data --split --limit --seed --out --batch-size --max-new-tokens --metric
    --device --dtype --threads --no-progress. Analyses add their own to the returned parser."""
    first = " ".join(doc.strip().split("\n\n")[0].split())  # the docstring's first paragraph
    p = argparse.ArgumentParser(prog=f"python -m analyses.{prog}", description=first,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", default="toy", help='"toy", "zoo:<arch>" (random tiny model), a hub id or a directory')
    p.add_argument("--data", default="toy", help='"toy", a .jsonl file or a datasets directory')
    p.add_argument("--split", default=None, help="split of a datasets directory holding several")
    p.add_argument("--limit", type=int, default=limit, help="number of samples (a seeded subset for files)")
    p.add_argument("--seed", type=int, default=0, help="data subset / toy scenes, random controls, bootstrap")
    p.add_argument("--out", default=None, help=f"output folder (default runs/{prog}/<model>-<data>)")
    p.add_argument("--batch-size", type=int, default=batch_size)
    p.add_argument("--max-new-tokens", type=int, default=None,
                   help="greedy answer length where answers are generated (default: 1 for --data toy, whose "
                        "answers are one word = one token, else 8)")
    p.add_argument("--metric", default="auto", choices=METRICS, help="scoring metric (interp.data.scoring)")
    p.add_argument("--device", default=None, help='e.g. "cuda"; default: where the model loads (CPU)')
    p.add_argument("--dtype", default=None, choices=(None, "float32", "bfloat16", "float16"))
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: 1 for toy / zoo models, whose tiny ops only lose from "
                        "threading on a busy machine; torch's default otherwise)")
    p.add_argument("--no-progress", action="store_true")
    return p


def default_out(prog: str, args) -> str:
    slug = "-".join(Path(str(x).rstrip("/")).name.replace(":", "_") for x in (args.model, args.data))
    return str(Path("runs") / prog / slug)


# ------------------------------------------------------------------------------------------- model, data


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
        arch = spec[4:]
        vlm = interp.zoo.tiny(arch, seed=seed, **kw)
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


def load_data(args) -> list:
    from interp.data.loaders import load_samples

    samples = load_samples(args.data, limit=args.limit, seed=args.seed, split=args.split)
    if not samples:
        raise InputError(f"data {args.data!r} gave no samples (limit={args.limit})")
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


def batches(samples, size: int, *, progress: bool = True, desc: str = ""):
    """Consecutive chunks of `samples`, with a progress bar over samples."""
    from tqdm.auto import tqdm

    if size < 1:
        raise InputError(f"--batch-size must be >= 1, got {size}")
    bar = tqdm(total=len(samples), disable=not progress, desc=desc, unit="sample", file=sys.stderr)
    try:
        for i in range(0, len(samples), size):
            chunk = samples[i:i + size]
            yield chunk
            bar.update(len(chunk))
    finally:
        bar.close()


def prepare(vlm, samples):
    """A batch of samples (images + questions) for `vlm`."""
    return vlm.prepare(images=[s.image for s in samples], questions=[s.question for s in samples])


def vision_index(layout, mask):
    """A bool [B, T] token group → bool [B, Nv] over each row's vision tokens (interp's `[..., Nv]` order)."""
    import torch

    vpos = layout.vision_positions()  # [B, Nv]
    out = torch.gather(mask.cpu(), 1, vpos.clamp(min=0))
    return out & (vpos >= 0)


def vision_group(layout, selected):
    """A bool [B, Nv] selection of vision tokens → the bool [B, T] key group of their positions."""
    import torch

    vpos = layout.vision_positions()
    sel = selected.cpu() & (vpos >= 0)
    out = torch.zeros(layout.shape, dtype=torch.bool)
    rows = torch.arange(layout.batch_size)[:, None].expand_as(vpos)
    out[rows[sel], vpos[sel]] = True
    return out


def generate_scores(vlm, batch, samples, interventions=(), *, max_new_tokens: int, metric: str = "auto"):
    """Greedy answers under `interventions` and their scores: (texts [B], scores [B] floats in [0, 1])."""
    import interp
    from interp.data.scoring import score

    out = interp.intervene(vlm, *interventions).generate(batch, max_new_tokens=max_new_tokens)
    return out.texts, [float(score(s, t, metric)) for s, t in zip(samples, out.texts)], out


def chance_by_family(samples, data_spec: str) -> dict:
    """family → chance accuracy (see `chance`); families whose chance is unknown are left out."""
    fams = {}
    for s in samples:
        fams.setdefault(s.family, []).append(s)
    out = {f: chance(v, data_spec) for f, v in fams.items()}
    return {f: c for f, c in out.items() if c is not None}


def chance(samples, data_spec: str) -> float | None:
    """Mean chance accuracy of a blind guesser: the toy task's per-family chance, else 1/len(choices) for
    multiple-choice samples; None when unknown (open questions)."""
    toy_chance = None
    if str(data_spec) == "toy":
        try:
            import interp.toy

            toy_chance = interp.toy.CHANCE
        except (ImportError, AttributeError):
            toy_chance = None
    vals = []
    for s in samples:
        if toy_chance is not None and s.family in toy_chance:
            vals.append(toy_chance[s.family])
        elif s.choices:
            vals.append(1.0 / len(s.choices))
        else:
            return None
    return float(np.mean(vals)) if vals else None


# ------------------------------------------------------------------------------------------- JSON record


def versions() -> dict:
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


def write_json(path, obj) -> Path:
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


def seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# ------------------------------------------------------------------------------------------- the skeleton


def run(name: str, doc: str, compute, plot, argv=None, *, limit: int, batch_size: int = 16, add_args=None) -> dict:
    """Parse `argv`, load data and model, `compute(vlm, samples, args)` → numbers, write OUT/<name>.json (with
    the metadata), draw OUT/<name>.png/.pdf with `plot`; return the record."""
    p = parser(name, doc, limit=limit, batch_size=batch_size)
    if add_args is not None:
        add_args(p)
    args = p.parse_args(argv)
    if args.out is None:
        args.out = default_out(name, args)
    if args.max_new_tokens is None:
        # Toy answers are one token. Decoding more only tests whether the model stops: under text→vision cuts
        # the toy model often names the right answer and then repeats it instead of emitting </s>, which
        # exact match would count as wrong although the answer itself is right.
        args.max_new_tokens = 1 if str(args.data) == "toy" else 8
    out = Path(args.out)
    import torch

    threads = args.threads
    if threads is None and (args.model == "toy" or args.model.startswith("zoo:")):
        threads = 1
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        seed_everything(args.seed)
        t0 = time.perf_counter()
        samples = load_data(args)
        vlm = load_model(args.model, seed=args.seed, dtype=args.dtype, device=args.device)
        t1 = time.perf_counter()
        numbers = compute(vlm, samples, args)
        t2 = time.perf_counter()
    finally:
        torch.set_num_threads(before)  # process-global: leave it as we found it (tests, notebooks)
    record = {
        "analysis": name,
        "command": f"python -m analyses.{name} " + " ".join(sys.argv[1:] if argv is None else list(argv)),
        "arguments": vars(args),
        "seed": args.seed,
        "model": args.model,
        "model_label": model_label(args.model),
        "num_layers": int(vlm.num_layers),
        "data": args.data,
        "versions": versions(),
        "git_revision": git_revision(outputs=args.out),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "seconds": {"load": round(t1 - t0, 2), "compute": round(t2 - t1, 2)},
        **numbers,
    }
    path = write_json(out / f"{name}.json", record)
    figures = plot(record, out)
    print(f"{name}: wrote {path} and {', '.join(str(f) for f in figures)} "
          f"(load {t1 - t0:.1f} s, compute {t2 - t1:.1f} s)", file=sys.stderr)
    return record


# ------------------------------------------------------------------------------------------- method tables


def summarize_methods(samples, scores: dict, methods, seed: int, baseline: str = "baseline"):
    """Per-method accuracy with bootstrap intervals (overall and by family) and paired tests against
    `baseline`. scores: method → [N] per-sample scores. Returns (summary, paired)."""
    from interp.evaluation import EvalResult, compare

    families = [s.family for s in samples]
    ids = [s.id for s in samples]
    results = {m: EvalResult(records=[{"id": i, "family": f, "score": v, "correct": v >= 0.5}
                                      for i, f, v in zip(ids, families, scores[m])], seed=seed)
               for m in methods}
    summary = {m: results[m].summary() for m in methods}
    paired = {}
    for m in methods:
        if m == baseline:
            continue
        c = compare(results[baseline], results[m], seed=seed)
        paired[m] = {"difference": c.difference, "ci": list(c.ci), "only_baseline": c.only_a, "only_method": c.only_b,
                     "p_value": c.p_value}
    return summary, paired


def markdown_table(summary: dict, paired: dict, labels: dict) -> str:
    """Accuracy per family × method, overall with its interval, Δ vs baseline and McNemar p, as Markdown."""
    first = next(iter(summary.values()))
    fams = list(first["by_family"])
    head = "| method | " + " | ".join(fams) + " | all | Δ vs baseline [95% CI] | McNemar p |"
    lines = [head, "|---|" + "---:|" * (len(fams) + 1) + "---|---:|"]
    for m, s in summary.items():
        cells = [f"{s['by_family'][f]['accuracy']:.3f}" for f in fams]
        all_ = f"{s['accuracy']:.3f} [{s['ci'][0]:.3f}, {s['ci'][1]:.3f}]"
        if m in paired:
            p = paired[m]
            d = f"{p['difference']:+.3f} [{p['ci'][0]:+.3f}, {p['ci'][1]:+.3f}]"
            pv = f"{p['p_value']:.3g}"
        else:
            d, pv = "", ""
        lines.append(f"| {labels[m]} | " + " | ".join(cells) + f" | {all_} | {d} | {pv} |")
    return "\n".join(lines)


def method_bars(data: dict, what: str):
    """Grouped accuracy bars (method × family, then "all") with 95% intervals and chance lines, from an
    analysis record with `summary`, `methods`, `labels`, `chance(_by_family)`. Returns (fig, ax, wide)."""
    import interp.plot as ip

    summ = data["summary"]
    fams = list(summ[data["methods"][0]]["by_family"])
    if len(fams) == 1:  # one family (or none named): the overall bars say it all
        fams = []
    groups = [f.replace("_", " ") for f in fams] + ["all"]
    series = {}
    for m in data["methods"]:
        s = summ[m]
        mean = [s["by_family"][f]["accuracy"] for f in fams] + [s["accuracy"]]
        lo = [s["by_family"][f]["ci"][0] for f in fams] + [s["ci"][0]]
        hi = [s["by_family"][f]["ci"][1] for f in fams] + [s["ci"][1]]
        series[data["labels"][m]] = (arr(mean), arr(lo), arr(hi))
    colors = {data["labels"][m]: ip.COLORS[m] for m in data["methods"]}
    wide = len(groups) > 3
    fig, ax = ip.figure(width="full" if wide else "column", aspect=0.3 if wide else 0.75)
    ip.bars(ax, groups, series, colors=colors, ylabel="accuracy (95% CI)", ylim=(0, 1.08))
    chance = dict(data.get("chance_by_family") or {})
    if data.get("chance") is not None:
        chance["all"] = data["chance"]
    labelled = False
    for g, f in enumerate(fams + ["all"]):
        if f in chance:
            ax.plot([g - 0.45, g + 0.45], [chance[f]] * 2, color="#555555", ls="--", lw=0.8,
                    label=None if labelled else "chance")
            labelled = True
    if len(groups) > 1:
        ax.axvline(len(groups) - 1.5, color="#bbbbbb", lw=0.6)
    ax.set_xlabel("question family" if fams else "")
    ax.set_title(ip.model_title(what + (" per family" if fams else ""), data["model_label"], data["n"]))
    return fig, ax, wide
