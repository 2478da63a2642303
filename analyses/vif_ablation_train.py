"""Train the VIF ablation's six variants once and ship them (the main job only evaluates them).

    python -m analyses.vif_ablation_train                  # all six, two at a time, one thread each (≈ 20 min)
    python -m analyses.vif_ablation_train --only finetune vif_joint --steps 1000 --jobs 2

Every variant runs `python -m interp.vif.train` on the shipped toy model with the same fresh scenes per step
(seed 0), the same steps, batch, learning rates and CVAE initialisation; only what is trained and what is
injected differ (`VARIANTS`). Runs go to runs/vif_ablation/<variant>/ (resumable), then are exported into
interp/vif/checkpoints/ablation/<variant>/: the CVAE (safetensors), the trained base modules in float16 (halves the
file; every number the analysis reports is measured on these stored weights), a compact per-step log and a
card with the exact command and its wall time. The best VIF variant on a selection slice disjoint from the
analysis's held-out scenes (`SELECT_SEED`) is copied to interp/vif/checkpoints/toy/, the shipped toy VIF.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHIP = ROOT / "interp" / "vif" / "checkpoints" / "ablation"
TOY_VIF = ROOT / "interp" / "vif" / "checkpoints" / "toy"
RUNS = ROOT / "runs" / "vif_ablation"
COMMON = ["--model", "toy", "--batch-size", "16", "--seed", "0", "--threads", "1", "--eval-n", "0",
          "--save-every", "100", "--no-progress"]
# variant → (label, extra CLI flags); "base" (no training) has no run
VARIANTS = {
    "finetune": ("fine-tune only", ["--base", "joint", "--focus", "none"]),
    "vif_frozen": ("VIF, frozen base", ["--normalize", "paper"]),
    "vif_joint": ("VIF joint (paper normalisation)", ["--base", "joint", "--normalize", "paper"]),
    "vif_joint_ref": ("VIF joint (reference softmax normalisation)", ["--base", "joint", "--normalize", "reference"]),
    "uniform_map": ("uniform map + joint fine-tune", ["--base", "joint", "--focus", "uniform"]),
    "oracle_map": ("oracle map (evidence boxes) + joint fine-tune", ["--base", "joint", "--focus", "oracle"]),
}
VIF_VARIANTS = ("vif_frozen", "vif_joint", "vif_joint_ref")
LONGEST_FIRST = ("vif_joint", "vif_joint_ref", "oracle_map", "finetune", "uniform_map", "vif_frozen")
SELECT_SEED_OFFSET, SELECT_N = 1, 600  # selection scenes: interp.toy.dataset(600, seed=EVAL_SEED + 1)
LOG_KEYS = ("ce", "kl", "kl_active", "map_entropy", "map_mass", "box_area")


def command(variant: str, steps: int, runs: Path | None = None) -> list:
    return [sys.executable, "-m", "interp.vif.train", *COMMON, "--steps", str(steps), *VARIANTS[variant][1],
            "--out", str((runs or RUNS) / variant)]


def shown(cmd: list) -> str:
    return " ".join(["python", *cmd[1:]]).replace(str(ROOT) + "/", "")


def run_all(variants, steps: int, jobs: int) -> dict:
    """Run the variants' commands, at most `jobs` at a time; returns {variant: wall seconds}."""
    todo, running, walls = [v for v in LONGEST_FIRST if v in variants], {}, {}
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", OMP_NUM_THREADS="1")
    RUNS.mkdir(parents=True, exist_ok=True)
    while todo or running:
        while todo and len(running) < jobs:
            v = todo.pop(0)
            log = open(RUNS / f"{v}.stdout", "a")
            print(f"start {v}: {shown(command(v, steps))}", file=sys.stderr, flush=True)
            running[v] = (subprocess.Popen(command(v, steps), cwd=ROOT, env=env, stdout=log, stderr=log),
                          time.monotonic(), log)
        time.sleep(5)
        for v, (p, t0, log) in list(running.items()):
            if p.poll() is not None:
                log.close()
                del running[v]
                if p.returncode:
                    raise SystemExit(f"{v} failed (exit {p.returncode}); see {RUNS / (v + '.stdout')}")
                walls[v] = time.monotonic() - t0
                print(f"done {v} in {walls[v] / 60:.1f} min", file=sys.stderr, flush=True)
    return walls


def compact_log(run_dir: Path) -> dict:
    """train_log.jsonl → per-step arrays of LOG_KEYS (4 significant digits) and the collapse warnings."""
    recs = [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines() if line.strip()]
    steps = {}
    for r in recs:
        if "loss" in r:
            steps[r["step"]] = r  # a resumed run may repeat steps: keep the last
    order = sorted(steps)
    out = {"step": order}
    for k in LOG_KEYS:
        if any(k in steps[s] for s in order):
            out[k] = [float(f"{steps[s][k]:.4g}") if k in steps[s] and steps[s][k] == steps[s][k] else None
                      for s in order]
    out["collapse"] = [r["step"] for r in recs if "collapse" in r]
    return out


def export(variant: str, steps: int, wall: float | None, vlm0) -> dict:
    """Copy runs/vif_ablation/<variant> into the package: base in float16, CVAE, log, card."""
    import torch

    import interp
    from interp.vif import checkpoint as ckpt
    from interp.vif.joint import read_base, save_base
    from interp.vif.loading import base_source

    src, dst = RUNS / variant, SHIP / variant
    if dst.exists():
        shutil.rmtree(dst)
    dst.mkdir(parents=True)
    info = read_base(src)
    if info is not None:  # joint: round the trained modules to float16 in the model, save them from there
        vlm, iv = interp.vif.load_joint(src)
        params = dict(vlm.hf.named_parameters())
        with torch.no_grad():
            for n in [n for n in params if n.startswith(tuple(m + "." for m in info["modules"]))]:
                params[n].copy_(params[n].half().float())
        base = save_base(dst, vlm, info["modules"], train_modules=info["train_modules"], focus=info["focus"],
                         inject=info.get("inject"), step=info["step"], dtype=torch.float16, source=base_source(vlm),
                         extra={k: info[k] for k in ("training",) if k in info})
    else:
        vlm, iv, base = vlm0, interp.VIF.load(src, vlm0), None
    if (src / ckpt.CONFIG).exists():
        cfg = ckpt.read_config(src)
        ckpt.save_vif(interp.VIF.load(src, vlm) if info is None else iv, dst, vlm, step=cfg["step"],
                      extra=cfg.get("training"), base=base)
    (dst / "log.json").write_text(json.dumps(compact_log(src), separators=(",", ":")) + "\n")
    card = {"variant": variant, "what": VARIANTS[variant][0],
            "command": shown(command(variant, steps, Path("runs/vif_ablation"))),
            "retrain_all": "python -m analyses.vif_ablation_train",
            "steps": steps, "wall_minutes_1_thread": None if wall is None else round(wall / 60, 1),
            "machine": "2 shared CPU cores, two runs side by side, torch.set_num_threads(1) each",
            "base": "frozen (interp/toy/checkpoint)" if info is None else
                    f"joint: {info['modules']} fine-tuned, stored in float16 ({BASE_WEIGHTS_NOTE})",
            "load": "interp.VIF.load(dir, interp.toy.load())" if info is None else "interp.vif.load_joint(dir)"}
    (dst / "card.json").write_text(json.dumps(card, indent=1) + "\n")
    return card


BASE_WEIGHTS_NOTE = "the numbers are measured on these stored weights"


def select(variants=VIF_VARIANTS) -> tuple[str, dict]:
    """The VIF variant with the best greedy accuracy on the selection scenes: (variant, {name: evaluation}),
    the evaluations (accuracy, by family, map statistics) of the VIF variants and of the two references."""
    import interp
    from interp.vif.trainer import evaluate_focus

    samples = interp.toy.dataset(SELECT_N, seed=interp.toy.EVAL_SEED + SELECT_SEED_OFFSET)
    evals = {}
    for v in ("base", "finetune", *variants):
        d = SHIP / v
        if v == "base":
            vlm, iv = interp.toy.load(), None
        elif (d / "base.json").exists():
            vlm, iv = interp.vif.load_joint(d)
        else:
            vlm = interp.toy.load()
            iv = interp.VIF.load(d, vlm)
        evals[v] = evaluate_focus(vlm, iv, samples, batch_size=100, max_new_tokens=1)
    best = max(variants, key=lambda v: (evals[v]["accuracy"], -variants.index(v)))
    return best, evals


def ship(best: str, evals: dict) -> None:
    """interp/vif/checkpoints/toy ← the chosen variant, with a card saying which and why."""
    if TOY_VIF.exists():
        shutil.rmtree(TOY_VIF)
    shutil.copytree(SHIP / best, TOY_VIF)
    card = json.loads((TOY_VIF / "card.json").read_text())
    (TOY_VIF / "card.json").unlink()
    e = evals[best]
    collapsed = [v for v in VIF_VARIANTS if json.loads((SHIP / v / "log.json").read_text()).get("collapse")]
    card.update({
        "what": f"the shipped toy VIF = the ablation's variant {best!r} ({VARIANTS[best][0]})",
        "why": (f"best greedy accuracy among the VIF variants on {SELECT_N} selection scenes "
                f"(interp.toy.dataset({SELECT_N}, seed=EVAL_SEED + {SELECT_SEED_OFFSET}), disjoint from the "
                "analysis's held-out scenes): " + ", ".join(f"{v} {evals[v]['accuracy']:.3f}" for v in VIF_VARIANTS)
                + f"; for reference, the base model {evals['base']['accuracy']:.3f} and fine-tune only "
                  f"{evals['finetune']['accuracy']:.3f} on the same scenes"),
        "caveat": (f"its injected map has entropy {e.get('map_entropy', float('nan')):.2f} nats and puts "
                   f"{e.get('map_mass', float('nan')):.3f} of its mass in the evidence boxes (area share "
                   f"{e.get('box_area', float('nan')):.3f}); the posterior-collapse warning fired in "
                   f"{', '.join(collapsed) or 'none'} of the VIF runs. The best VIF need not beat fine-tuning "
                   "alone: see the ablation"),
        "selection": evals,
        "ablation": "python -m analyses.vif_ablation --out figures (figures/vif_ablation.json: whether the map "
                    "adds anything beyond the fine-tuning, with paired intervals)"})
    (TOY_VIF / "model_card.json").write_text(json.dumps(card, indent=1) + "\n")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="*", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--jobs", type=int, default=2, help="runs side by side (one thread each)")
    ap.add_argument("--no-train", action="store_true", help="only export / select / ship finished runs")
    ap.add_argument("--scratch", default=None, help="a smoke run: runs, exports and the shipped copy all go "
                    "under this folder instead of runs/ and interp/toy/")
    args = ap.parse_args(argv)
    if args.scratch:
        global RUNS, SHIP, TOY_VIF
        RUNS, SHIP, TOY_VIF = (Path(args.scratch) / d for d in ("runs", "vif_ablation", "vif"))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    walls = {} if args.no_train else run_all(args.only, args.steps, args.jobs)
    import torch

    import interp

    torch.set_num_threads(1)
    vlm0 = interp.toy.load()
    for v in args.only:
        old = SHIP / v / "card.json"
        wall = walls.get(v)
        if wall is None and old.exists():  # exporting again without training: keep the measured time
            wall = 60 * (json.loads(old.read_text()).get("wall_minutes_1_thread") or 0) or None
        print(json.dumps(export(v, args.steps, wall, vlm0)), file=sys.stderr)
    best, evals = select()
    ship(best, evals)
    print(f"shipped {best} as interp/vif/checkpoints/toy ({ {v: round(e['accuracy'], 4) for v, e in evals.items()} })",
          file=sys.stderr)


if __name__ == "__main__":
    main()
