"""Table 1 of the AIF paper: benchmarks × methods, scored as lmms-eval scores them, each method's cell with
its Δ against plain, a paired 95% bootstrap interval and the exact McNemar p.

    python -m analyses.paper_table --model llava-hf/llava-1.5-7b-hf --data-root data --prompt-style vicrop \
        --benchmarks vstar,realworldqa,mmstar,textvqa,countbench --methods plain,aif,aif_normalized \
        --dtype bfloat16 --device cuda --out runs/table
    torchrun --nproc_per_node 8 -m analyses.paper_table ...          # same arguments: samples sharded by rank
    python -m analyses.paper_table --model toy --data-root runs/toy-hub --benchmarks pope,countbench \
        --prompt-style bare --max-new-tokens 1 --out runs/table-toy   # data: python -m analyses.toy_benchmarks

--data-root holds one local hub copy per benchmark (DIR/<name> or DIR/<hub repo name>, see
interp.data.benchmarks.find_copy); a benchmark may name its split: `refcoco:testA`. --model: "toy",
"zoo:<arch>", a hub id or a directory; --device-map auto spreads one model over the visible GPUs
(accelerate); --remote runs it through nnsight's remote execution where a deployment hosts it.

Writes OUT/results/<benchmark>/<method>.jsonl (interp.evaluate's resumable format: rerun the same command to
resume; under torchrun each rank writes <method>.rank<r>-of-<N>.jsonl and the last rank to finish merges
them), OUT/settings.json (what must not change between resumed runs) and OUT/paper_table.{json,md}: the
table, every lmms-eval metric per cell, and the exact settings (prompt style, split, max_new_tokens, ...).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
from pathlib import Path

from analyses import loading, record
from interp.data import benchmarks as B
from interp.data import prompts
from interp.data.lmms import BOX_CONVENTIONS
from interp.errors import InputError

METHODS = ("plain", "aif", "aif_normalized", "vif")
LABELS = {"plain": "", "aif": "+ AIF", "aif_normalized": "+ AIF (normalized)", "vif": "+ VIF"}
TITLES = {"vstar": "V*", "realworldqa": "RealWorldQA", "mmstar": "MMStar", "textvqa": "TextVQA",
          "countbench": "CountBench", "hrbench4k": "HR-Bench 4K", "hrbench8k": "HR-Bench 8K", "pope": "POPE",
          "refcoco": "RefCOCO", "refcoco+": "RefCOCO+", "refcocog": "RefCOCOg"}
DEFAULT_MAX_NEW_TOKENS = 1024  # tasks without max_new_tokens: lmms-eval's llava / llava_hf model default
TABLE1 = "vstar,realworldqa,mmstar,textvqa,countbench"


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m analyses.paper_table", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", required=True, help='"toy", "zoo:<arch>", a hub id or a local model directory')
    p.add_argument("--data-root", required=True, help="folder holding one local hub copy per benchmark")
    p.add_argument("--benchmarks", default=TABLE1, help="comma-separated names, each optionally name:split")
    p.add_argument("--methods", default="plain,aif", help=f"comma-separated, from {', '.join(METHODS)}")
    p.add_argument("--prompt-style", default="lmms-eval", choices=sorted(prompts.STYLES))
    p.add_argument("--box", default="unit", choices=sorted(BOX_CONVENTIONS),
                   help="how REC replies give boxes (unit: 0-1 as lmms-eval asks; qwen2.5-vl: resized-image pixels)")
    p.add_argument("--limit", type=int, default=None, help="a seeded subset of this many samples per benchmark")
    p.add_argument("--seed", type=int, default=0, help="subset and bootstrap seed")
    p.add_argument("--max-new-tokens", type=int, default=None,
                   help=f"override lmms-eval's per-task value (default: the task's, else {DEFAULT_MAX_NEW_TOKENS})")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--vif", default=None, help='VIF checkpoint dir (toy: the shipped one); "untrained" = VIF.build')
    p.add_argument("--dtype", default=None, choices=(None, "float32", "bfloat16", "float16"))
    p.add_argument("--device", default=None, help='"cuda" (under torchrun: cuda:<LOCAL_RANK>), "cpu", ...')
    p.add_argument("--device-map", default=None, choices=(None, "auto"), help="accelerate: one model over all GPUs")
    p.add_argument("--remote", action="store_true", help="nnsight remote execution (a hub id a deployment hosts)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default 1 for toy / zoo)")
    p.add_argument("--out", required=True)
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    args.method_list = [m.strip() for m in args.methods.split(",") if m.strip()]
    bad = [m for m in args.method_list if m not in METHODS]
    if bad or not args.method_list:
        raise InputError(f"--methods {args.methods!r}: unknown {bad}; methods are {list(METHODS)}")
    args.bench_list = [_bench_spec(x) for x in args.benchmarks.split(",") if x.strip()]
    if args.device_map and args.remote:
        raise InputError("--device-map and --remote exclude each other: a remote model is placed by its host")
    return args


def _bench_spec(text: str) -> tuple[str, str | None, str]:
    """"refcoco:testA" → (name, split, key): key names the results folder and the table column."""
    name, _, split = text.strip().partition(":")
    B.get(name)
    return name, split or None, f"{name}_{split}" if split else name


def rank_world() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment; (0, 1, 0) without it."""
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    if not 0 <= rank < world:
        raise InputError(f"RANK={rank} is not in [0, WORLD_SIZE={world})")
    return rank, world, int(os.environ.get("LOCAL_RANK", rank))


# ------------------------------------------------------------------------------------------- model, methods


def load(args, local_rank: int, world: int):
    """The VLM for this process: cached toy/zoo/dir/hub loading, accelerate's device map, or remote."""
    import torch

    import interp

    device = args.device
    if device == "cuda" and world > 1:
        device = f"cuda:{local_rank}"
    if args.remote:
        if args.model == "toy" or args.model.startswith("zoo:"):
            raise InputError("--remote needs a hub id that a remote deployment hosts, not a local toy/zoo model")
        return interp.load(args.model, remote=True)
    if args.device_map:
        if world > 1:
            raise InputError("--device-map auto already spreads one model over every GPU; run it without torchrun")
        import interp.toy

        src = interp.toy.CHECKPOINT_DIR if args.model == "toy" else args.model
        if src.startswith("zoo:"):
            raise InputError("--device-map needs a checkpoint directory or hub id, not a zoo model")
        from transformers import AutoModelForImageTextToText

        from interp import models

        kw = {"dtype": getattr(torch, args.dtype)} if args.dtype else {}
        hf = AutoModelForImageTextToText.from_pretrained(src, device_map="auto", **kw)  # needs accelerate
        return interp.load(hf, processor=models._load_processor(src))
    return loading.load_model(args.model, seed=args.seed, dtype=args.dtype, device=device)


def interventions(method: str, vlm, args) -> tuple[tuple, str, object]:
    """(interventions, description, the model to run them on) of a method: `vlm`, except for a VIF trained
    jointly with its base (`interp.vif.load_pair`), which runs on that fine-tuned base."""
    import interp

    if method == "plain":
        return (), "no intervention", vlm
    if method == "aif":
        return (interp.AIF(),), "AIF, the paper's ratio criterion", vlm
    if method == "aif_normalized":
        return (interp.AIF(criterion="normalized"),), "AIF, normalised ratio criterion", vlm
    path = args.vif
    if path is None and args.model == "toy":
        import interp.toy

        path = interp.toy.VIF_DIR
    if path is None:
        raise InputError("--methods vif needs --vif DIR (a checkpoint from python -m interp.vif.train), or "
                         "--vif untrained for an untrained VIF (a smoke test: its numbers mean nothing)")
    if path == "untrained":
        return (interp.VIF.build(vlm, seed=args.seed),), "VIF, untrained (VIF.build)", vlm
    run_on, vif = interp.vif.load_pair(path, vlm)
    joint = "" if run_on is vlm else " (trained jointly: on its fine-tuned base; control: analyses.vif_ablation)"
    return (vif,), f"VIF checkpoint {path}{joint}", run_on


# ------------------------------------------------------------------------------------------- running


def settings(args, opened: dict) -> dict:
    """What the run fixes: resumed runs must agree on it (`settings.json`), and the table records it."""
    st = prompts.style(args.prompt_style)
    per = {}
    for name, _, key in args.bench_list:
        b, data = B.get(name), opened[key]
        mnt, source = args.max_new_tokens, "--max-new-tokens"
        if mnt is None:
            mnt, source = ((b.max_new_tokens, "lmms-eval generation_kwargs") if b.max_new_tokens else
                           (DEFAULT_MAX_NEW_TOKENS, "not set by the task: lmms-eval's llava_hf default"))
        per[key] = {"benchmark": name, "hub": b.hub, "lmms_eval_task": b.task.replace("<split>", data.split),
                    "split": data.split, "n": len(data), "max_new_tokens": mnt, "max_new_tokens_source": source,
                    "until": list(b.until), "until_applied": False,  # model-dependent in lmms-eval; not here
                    "box_convention": args.box if b.kind == "rec" else None, "copy": str(data.root)}
    return {"model": args.model, "prompt_style": st.describe(), "limit": args.limit, "seed": args.seed,
            "decoding": "greedy (temperature 0, do_sample false), interp.intervene(...).generate",
            "vif": args.vif, "benchmarks": per}


def check_settings(out: Path, new: dict, rank: int) -> None:
    """Refuse an OUT made with other settings (benchmarks may be added, a copy may move); record these."""
    path = out / "settings.json"
    if path.exists():
        old = json.loads(path.read_text())

        def fixed(d):
            return {k: v for k, v in d.items() if k not in ("benchmarks", "copy")}

        clash = [k for k in fixed(new) if old.get(k) != new[k]]
        clash += [k for k, v in new["benchmarks"].items()
                  if k in old.get("benchmarks", {}) and fixed(old["benchmarks"][k]) != fixed(v)]
        if clash:
            raise InputError(f"{out} holds a run with other settings ({', '.join(clash)} differ; see {path}); "
                             "use another --out, or delete it to start over")
        new = {**new, "benchmarks": {**old.get("benchmarks", {}), **new["benchmarks"]}}
    tmp = path.with_suffix(f".rank{rank}.tmp")
    tmp.write_text(json.dumps(new, indent=1) + "\n")
    os.replace(tmp, path)


def check_box(view, args) -> None:
    """A pixel box convention must match how the model's processor resizes images (else every box is off)."""
    pixels = BOX_CONVENTIONS[args.box].pixels
    if pixels is None or not any(B.get(n).kind == "rec" for n, _, _ in args.bench_list):
        return
    size = getattr(getattr(view.processor, "image_processor", None), "size", None)
    have = (getattr(size, "shortest_edge", None), getattr(size, "longest_edge", None))
    if have != tuple(pixels[1:]):
        raise InputError(f"--box {args.box} reads pixels of images resized within {list(pixels[1:])}, but this "
                         f"model's processor resizes within {list(have)}; add --prompt-style {args.box}")


def result_path(out: Path, key: str, method: str, rank: int, world: int) -> Path:
    name = f"{method}.jsonl" if world == 1 else f"{method}.rank{rank}-of-{world}.jsonl"
    return out / "results" / key / name


def run_cell(view, data, ivs, path: Path, *, positions, max_new_tokens: int, args, desc: str) -> None:
    """Evaluate this rank's `positions` of `data` into `path`, resuming, decoding images a chunk at a time."""
    from tqdm.auto import tqdm

    from interp.evaluation import EvalResult, evaluate

    kw = dict(batch_size=args.batch_size, max_new_tokens=max_new_tokens, progress=False, model_name=args.model,
              seed=args.seed)
    evaluate(view, [], *ivs, out=path, **kw)  # nothing to run: only refuses a file made with other settings
    done = {r["id"] for r in EvalResult.load(path).records} if path.exists() else set()
    pending = [p for p in positions if data.ids[p] not in done]
    chunk = max(32, 4 * args.batch_size)
    with tqdm(total=len(positions), initial=len(positions) - len(pending), desc=desc, unit="sample",
              disable=args.no_progress, file=sys.stderr) as bar:
        for start in range(0, len(pending), chunk):
            part = pending[start:start + chunk]
            evaluate(view, data.samples(part), *ivs, out=path, **kw)
            bar.update(len(part))


def complete(path: Path, ids) -> bool:
    from interp.evaluation import EvalResult

    return path.exists() and set(ids) <= {r["id"] for r in EvalResult.load(path).records}


def merge(out: Path, key: str, method: str, ids: list[str], world: int) -> Path:
    """Write results/<key>/<method>.jsonl from the rank files, in sample order (atomically)."""
    from interp.evaluation import EvalResult

    parts = [result_path(out, key, method, r, world) for r in range(world)]
    loaded = [EvalResult.load(p) for p in parts]
    by_id = {r["id"]: r for res in loaded for r in res.records}
    meta = dict(loaded[0].meta, merged_from=[p.name for p in parts])
    path = result_path(out, key, method, 0, 1)
    tmp = path.with_suffix(f".merge{os.getpid()}.tmp")
    lines = [{"_meta": meta}, *(by_id[i] for i in ids)]
    tmp.write_text("".join(json.dumps(o, ensure_ascii=False) + "\n" for o in lines))
    os.replace(tmp, path)
    return path


# ------------------------------------------------------------------------------------------- the table


def cells(out: Path, args, opened: dict) -> dict:
    """key → method → numbers: the lmms-eval metrics, and Δ against plain with interval and McNemar p."""
    from interp.evaluation import EvalResult, compare

    table = {}
    for _, _, key in args.bench_list:
        ids = opened[key].ids
        res = {m: EvalResult.load(result_path(out, key, m, 0, 1), seed=args.seed) for m in args.method_list}
        res = {m: EvalResult([r for r in v.records if r["id"] in set(ids)], meta=v.meta, seed=args.seed)
               for m, v in res.items()}
        table[key] = {}
        for m, r in res.items():
            h = r.harness
            cell = {"score": h["score"], "metric": h["metric"], "n": r.n, "harness": h}
            if m != "plain" and "plain" in res:
                c = compare(res["plain"], r, seed=args.seed, harness=True)
                cell.update(delta=c.difference, ci=list(c.ci), p_value=c.p_value, only_plain=c.only_a,
                            only_method=c.only_b)
            table[key][m] = cell
    return table


def markdown(table: dict, args, label: str) -> str:
    """The paper's Table 1 layout: one row per method, one column per benchmark, scores × 100."""
    keys = [k for _, _, k in args.bench_list]
    cols = [TITLES[n] + (f" {s}" if s else "") for n, s, _ in args.bench_list]
    lines = ["| Method | " + " | ".join(cols) + " |", "|---|" + "---:|" * len(cols)]
    for m in args.method_list:
        row = []
        for k in keys:
            c = table[k][m]
            text = f"{100 * c['score']:.1f}"
            if "delta" in c:
                text += (f" ({100 * c['delta']:+.1f}, [{100 * c['ci'][0]:+.1f}, {100 * c['ci'][1]:+.1f}], "
                         f"p={c['p_value']:.2g})")
            row.append(text)
        lines.append(f"| {LABELS[m] or label} | " + " | ".join(row) + " |")
    ns = ", ".join(f"{c} n={table[k][args.method_list[0]]['n']}" for c, k in zip(cols, keys))
    metric = ", ".join(f"{c}: {table[k][args.method_list[0]]['metric']}" for c, k in zip(cols, keys))
    lines += ["", f"Scores × 100 as lmms-eval aggregates them ({metric}); {ns}. Methods: the score (Δ vs plain, "
              "paired 95% bootstrap CI, exact McNemar p on per-sample correctness)."]
    for c, k in zip(cols, keys):
        hs = {m: table[k][m]["harness"] for m in args.method_list}
        if "pope_f1_score" in hs[args.method_list[0]]:
            lines.append(f"{c} F1 × 100: " + ", ".join(f"{LABELS[m] or label} {100 * h['pope_f1_score']:.1f}"
                                                       for m, h in hs.items()) + ".")
        if any(h.get("undecided") for h in hs.values()):
            lines.append(f"{c}: replies no rule could read (lmms-eval would ask a GPT judge; scored 0 here): " +
                         ", ".join(f"{LABELS[m] or label} {h['undecided']}" for m, h in hs.items()) + ".")
    return "\n".join(lines)


def write_table(out: Path, args, opened: dict, argv, methods: dict) -> dict:
    table = cells(out, args, opened)
    rec = {
        "analysis": "paper_table",
        "command": "python -m analyses.paper_table " + " ".join(sys.argv[1:] if argv is None else list(argv)),
        "arguments": {k: v for k, v in vars(args).items() if k not in ("method_list", "bench_list")},
        "settings": json.loads((out / "settings.json").read_text()),
        "methods": methods,
        "versions": record.versions(), "git_revision": record.git_revision(outputs=out),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "cells": table, "table": markdown(table, args, loading.model_label(args.model)),
    }
    record.write_json(out / "paper_table.json", rec)
    (out / "paper_table.md").write_text(rec["table"] + "\n")
    return rec


def main(argv=None) -> dict | None:
    """Run this rank's share of every (benchmark, method); merge and write the table once all ranks are done.
    Returns the table record (None on a rank that found others still running)."""
    import torch

    args = parse_args(argv)
    rank, world, local_rank = rank_world()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    opened = {key: B.open_benchmark(name, B.find_copy(name, args.data_root), split=split, limit=args.limit,
                                    seed=args.seed, style=args.prompt_style, box=args.box)
              for name, split, key in args.bench_list}
    fixed = settings(args, opened)
    check_settings(out, fixed, rank)
    threads = args.threads or (1 if args.model == "toy" or args.model.startswith("zoo:") else None)
    if threads:
        torch.set_num_threads(threads)
    loading.seed_everything(args.seed)
    vlm = load(args, local_rank, world)
    view = prompts.apply_style(vlm, args.prompt_style)
    check_box(view, args)
    tag = f" [rank {rank}/{world}]" if world > 1 else ""
    described = {}
    for m in args.method_list:
        ivs, described[m], run_on = interventions(m, vlm, args)
        m_view = view if run_on is vlm else prompts.apply_style(run_on, args.prompt_style)
        for name, _, key in args.bench_list:
            data = opened[key]
            run_cell(m_view, data, ivs, result_path(out, key, m, rank, world),
                     positions=range(rank, len(data), world),
                     max_new_tokens=fixed["benchmarks"][key]["max_new_tokens"], args=args, desc=f"{key}/{m}{tag}")
    if world > 1:
        waiting = sorted({r for _, _, key in args.bench_list for m in args.method_list for r in range(world)
                          if not complete(result_path(out, key, m, r, world), opened[key].ids[r::world])})
        if waiting:
            print(f"rank {rank}: done; ranks {waiting} still running (the last to finish merges)", file=sys.stderr)
            return None
        for _, _, key in args.bench_list:
            for m in args.method_list:
                merge(out, key, m, opened[key].ids, world)
    record = write_table(out, args, opened, argv, described)
    print(record["table"])
    print(f"wrote {out / 'paper_table.md'} and {out / 'paper_table.json'}", file=sys.stderr)
    return record


if __name__ == "__main__":
    main()
