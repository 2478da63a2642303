r"""Train the toy LLaVA in stages (DESIGN.md, "Toy testbed") and write a HF checkpoint + model card.

The shipped model (185 CPU-min), replayed from its recipe (`interp.toy.stages.SHIPPED`):

    python -m interp.toy.train --out runs/toy --recipe shipped             # again with --resume after a crash
    python -m interp.toy.train --out runs/toy --recipe shipped --dry-run   # its stages, validated; no training

It is these invocations, run in one folder (the model card lists every command as it ran):

    python -m interp.toy.train --out runs/toy --minutes-a 5 --minutes-b 38
    python -m interp.toy.train --out runs/toy --resume --minutes-c 20 --families-c HARD1
    python -m interp.toy.train --out runs/toy --resume --new-c --minutes-c 20 --families-c HARD2
    python -m interp.toy.train --out runs/toy --resume --new-c --minutes-c 20 --aux-c 1 --families-c HARD2
    python -m interp.toy.train --out runs/toy --resume --new-c --minutes-c 25 --aux-c 1 --families-c spatial \
        --max-objects-c 2
    python -m interp.toy.train --out runs/toy --resume --new-c --minutes-c 14 --aux-c 1 --families-c MIX4
    python -m interp.toy.train --out runs/toy --resume --new-c --minutes-c 15 --aux-c 1 --families-c spatial \
        --max-objects-c 4
    python -m interp.toy.train --out runs/toy --resume --new-c --minutes-c 14 --aux-c 1 --families-c MIX5
    python -m interp.toy.train --out runs/toy --resume --new-c --minutes-c 15 --aux-c 1 --families-c spatial \
        --max-objects-c 4 --answers-c left,right
    python -m interp.toy.train --out runs/toy --resume --new-c --minutes-c 14 --aux-c 1 --families-c MIX5
    cp runs/toy/* interp/toy/checkpoint/   (all but train_state.pt)              # ship it

    HARD1 = shape_of_color ×3, spatial ×3, color_of_shape ×2, count, exists, small_color (names repeated)
    HARD2 = spatial ×4, shape_of_color ×3, color_of_shape ×2, count ×2, exists ×2, small_color
    MIXk  = spatial ×k, shape_of_color ×2, color_of_shape ×2, count ×2, exists ×2, small_color
    python -m interp.toy.train --out runs/toy --resume    # continue after a crash, or re-evaluate the card

The mix names are `interp.toy.stages.MIXES`. --steps N fixes every new stage at N steps (a smoke run).

Stage A trains the CLIP tower alone with a linear per-patch head (colour, shape, size, holds a box centre,
row, column). Stage B freezes it and trains projector + Llama decoder on VQA, loss on answer + </s> only.
End-to-end training fails (the tower's output explodes and the decoder learns to ignore the image).
Continuations (C, C2, ...) rerun stage B with a fresh schedule on a re-weighted family mix: stage B alone
plateaus with shape-of-colour at prior level; weighting the hard families breaks it. --aux-c adds a per-patch
label loss on the projector's output so patch position is not lost (see objectives.stage_b_loss). Spatial stays
at chance when mixed in from the start; it is learned in stages of its own on easier scenes (--max-objects-c),
each followed by a short mixed stage that brings the other families back; left/right needed a stage of its own
(--answers-c), as the decoder had learned only above/below (rows are 8 token positions apart, columns 1).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import torch

from interp.errors import InputError
from interp.toy import card as C
from interp.toy import scenes
from interp.toy.card import evaluate, greedy
from interp.toy.model import IMG, attention_bias, build_model, encode, fold_normalisation, pixels
from interp.toy.objectives import HEAD, stage_a_batch, stage_a_loss, stage_b_batch, stage_b_loss
from interp.toy.stages import (RECIPES, TOWER, VQA, Continuation, Recipe, Schedule, continuations, expand,
                               mix_name)
from interp.training import atomic_write, warmup_cosine

# the model-side names tests/test_toy_model.py and test_toy_scenes.py read from here
__all__ = ["main", "run_stage", "IMG", "attention_bias", "encode", "evaluate", "greedy", "pixels"]

VAL_SEED = 777  # periodic validation during training; the model card uses scenes.EVAL_SEED
STAGE_FLAGS = ("minutes_a", "minutes_b", "minutes_c", "new_c", "families", "families_c", "answers_c",
               "max_objects_c", "lr_c", "tower_lr_c", "aux_c")  # what a --recipe sets


def log(msg):
    print(time.strftime("%H:%M:%S"), msg, flush=True)


def run_stage(name, params, batch_fn, loss_fn, *, minutes, schedule: Schedule, state, path, modules, on_log,
              steps=None):
    """AdamW + warmup/cosine loop. Total steps are calibrated from the first 10 steps' CPU time, then fixed
    (`steps`: fixed at that instead): CPU time (not wall) so a budget in "minutes of one thread" holds on a
    machine shared with other jobs. params: tensors, or param groups whose optional "scale" multiplies the lr.
    Saves the state (modules' weights, this stage's optimizer) every 2 minutes and at the end."""
    s = schedule
    opt = torch.optim.AdamW(params, lr=s.lr, betas=s.betas, weight_decay=0.05)
    tensors = [p for g in opt.param_groups for p in g["params"]]
    st = state.get(name) or {"step": 0, "total": None, "seconds": 0.0, "samples": 0}
    if "opt" in st:
        opt.load_state_dict(st["opt"])
    if st["total"] is None and steps:
        st["total"] = steps
    last_save = last_log = time.time()
    t0 = time.process_time() - st["seconds"]
    while st["total"] is None or st["step"] < st["total"]:
        total = st["total"] or 10**9
        for g in opt.param_groups:
            g["lr"] = s.lr * warmup_cosine(st["step"], total, warmup=s.warmup, floor=s.floor) * g.get("scale", 1.0)
        loss = loss_fn(*batch_fn(st["step"], s.batch))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if s.clip:
            torch.nn.utils.clip_grad_norm_(tensors, s.clip)
        opt.step()
        st["step"] += 1
        st["samples"] += s.batch
        st["seconds"] = time.process_time() - t0
        if st["total"] is None and st["step"] == 10:
            st["total"] = max(s.warmup + 10, int(minutes * 60 / (st["seconds"] / 10)))
            log(f"{name}: {st['seconds'] / 10:.3f} s/step → {st['total']} steps")
        if time.time() - last_log > 120 or st["step"] == st["total"]:
            log(f"{name} step {st['step']}/{st['total']} loss {loss.item():.4f} lr {opt.param_groups[0]['lr']:.2e} "
                f"samples {st['samples']} {st['seconds'] / 60:.1f} cpu-min {on_log()}")
            last_log = time.time()
        if time.time() - last_save > 120 or st["step"] == st["total"]:
            state[name] = {**st, "opt": opt.state_dict()}
            state["modules"] = {k: m.state_dict() for k, m in modules.items()}
            atomic_write(path, lambda tmp: torch.save(state, tmp))
            last_save = time.time()
    return st


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--recipe", choices=sorted(RECIPES), default=None,
                    help="replay a named recipe's stages (interp.toy.stages.RECIPES) in --out; with --resume, "
                         "continue it: the stages already there must be the recipe's")
    ap.add_argument("--dry-run", action="store_true", help="build and validate the stages, print them, stop")
    ap.add_argument("--steps", type=int, default=None,
                    help="every stage not yet started runs exactly this many steps (instead of its minutes)")
    ap.add_argument("--minutes-a", type=float, default=5.0)
    ap.add_argument("--minutes-b", type=float, default=37.0)
    ap.add_argument("--minutes-c", type=float, default=0.0,
                    help="a continuation stage: stage B again with a fresh schedule (--lr-c) on --families-c")
    ap.add_argument("--new-c", action="store_true",
                    help="with --resume: start another continuation after the finished ones (C2, C3, ...)")
    ap.add_argument("--families-c", default=None,
                    help="comma-separated families or mix names (HARD1, MIX4, ...: interp.toy.stages.MIXES); a "
                         "family named k times gets k shares; default: --families")
    ap.add_argument("--answers-c", default=None,
                    help="comma-separated answer words: the continuation's families whose choices include any of "
                         "them only ask questions answered by them (e.g. left,right: horizontal spatial only)")
    ap.add_argument("--max-objects-c", type=int, default=scenes.MAX_OBJECTS,
                    help="stage C scenes hold at most this many objects (easier scenes: a curriculum)")
    ap.add_argument("--lr-c", type=float, default=Continuation.lr)
    ap.add_argument("--tower-lr-c", type=float, default=0.0,
                    help="train the vision tower too in the continuation, at this multiple of --lr-c (0: frozen)")
    ap.add_argument("--aux-c", type=float, default=0.0,
                    help="weight of the per-patch label loss on the projector's output in the continuation")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--layers", type=int, default=8)
    # The six the shipped model trains on and meets its targets on; ALL_FAMILIES adds position (untrained).
    ap.add_argument("--families", default=",".join(scenes.FAMILIES))
    ap.add_argument("--eval-per-family", type=int, default=250)
    ap.add_argument("--threads", type=int, default=1)
    return ap


def recipe_of(args, ap) -> Recipe:
    """The stages the flags ask for (--recipe NAME, or --minutes-* and the continuation flags), validated."""
    if args.recipe:
        given = [k for k in STAGE_FLAGS if getattr(args, k) != ap.get_default(k)]
        if given:
            raise InputError(f"--recipe {args.recipe} sets the stages; drop --{given[0].replace('_', '-')}")
        return RECIPES[args.recipe].validate()
    families = expand(args.families)
    cont = () if args.minutes_c <= 0 else (Continuation(
        args.minutes_c, expand(args.families_c) if args.families_c else families, lr=args.lr_c, aux=args.aux_c,
        tower_lr=args.tower_lr_c, max_objects=args.max_objects_c,
        answers=tuple(args.answers_c.split(",")) if args.answers_c else None),)
    return Recipe(args.minutes_a, args.minutes_b, cont, families).validate()


def main(argv=None):
    ap = parser()
    args = ap.parse_args(argv)
    path = os.path.join(args.out, "train_state.pt")
    try:
        recipe = recipe_of(args, ap)
        state = torch.load(path, weights_only=False) if args.resume and os.path.exists(path) else {}
        if state and state["args"]["seed"] != args.seed:
            raise InputError(f"{path} was trained with --seed {state['args']['seed']}; pass the same seed to resume")
        conts = continuations(state, recipe, replay=args.recipe, new=args.new_c, where=path)
    except InputError as e:  # before any training, not after
        raise SystemExit(str(e)) from None
    if args.dry_run:
        plan = [{"stage": "A", "minutes": recipe.minutes_a}, {"stage": "B", "minutes": recipe.minutes_b,
                                                              "families": list(recipe.families)}]
        plan += [{"stage": name} | c.config() for name, c in conts]
        for p in plan:
            p["status"] = ("new" if p["stage"] not in state else
                           "done" if state[p["stage"]]["step"] == state[p["stage"]]["total"] else "resume")
            print(" ".join(f"{k}={mix_name(v) if k == 'families' else v}" for k, v in p.items()))
        return plan
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        return train(args, recipe, state, conts, path, argv)
    finally:
        torch.set_num_threads(threads)


def train(args, recipe: Recipe, state: dict, conts, path, argv) -> dict:
    """Run (or finish) every stage, evaluate on held-out scenes, write the checkpoint and card; return the card."""
    state.setdefault("args", vars(args))
    if "commands" not in state:  # a state from before commands were recorded: rebuild the first one
        first = state["args"]
        state["commands"] = ["python -m interp.toy.train " + " ".join(
            f"--{k.replace('_', '-')} {v}" for k, v in first.items() if k != "resume")] if "A" in state else []
    state["commands"].append(" ".join(["python -m interp.toy.train", *(argv or sys.argv[1:])]))
    for name, c in conts:
        if name not in state:
            state[name] = {"step": 0, "total": None, "seconds": 0.0, "samples": 0, "config": c.config()}
    os.makedirs(args.out, exist_ok=True)

    model = build_model(args.layers, args.seed)
    tower = model.model.vision_tower
    head = torch.nn.Linear(tower.config.hidden_size, sum(HEAD.values()))
    aux = torch.nn.Linear(model.config.text_config.hidden_size, sum(HEAD.values()))  # continuations' probe
    modules = {"model": model, "head": head, "aux": aux}
    for k, m in modules.items():
        if k in state.get("modules", {}):
            m.load_state_dict(state["modules"][k])
    common = dict(state=state, path=path, modules=modules, steps=args.steps)

    # Stage A
    val_a = stage_a_batch(0, 256, seed=10_000 + args.seed)  # its own seed, never a training step's

    def val_a_log():
        with torch.no_grad():
            _, logits = stage_a_loss(tower, head, *val_a)
        obj = val_a[1]["color"] > 0
        accs = {k: (lg.argmax(-1)[obj] == val_a[1][k][obj]).float().mean().item()
                for k, lg in zip(HEAD, logits) if k in ("color", "shape", "size")}
        return "object-patch acc " + " ".join(f"{k} {v:.3f}" for k, v in accs.items())

    tower.train()
    st_a = run_stage("A", list(tower.parameters()) + list(head.parameters()),
                     lambda step, n: stage_a_batch(step, n, args.seed),
                     lambda px, y: stage_a_loss(tower, head, px, y)[0],
                     minutes=recipe.minutes_a, schedule=TOWER, on_log=val_a_log, **common)

    # Stage B
    tower.requires_grad_(False)
    if not state.get("folded"):
        fold_normalisation(model, args.seed)
        state["folded"] = True
    val_b = scenes.dataset(40 * len(recipe.families), seed=VAL_SEED, families=recipe.families)
    val_vlm = C.as_vlm(model)  # wraps the model itself: validation sees the weights as they train

    def val_b_log():
        res = evaluate(val_vlm, val_b)
        model.train()
        tower.eval()
        return "val " + " ".join(f"{f} {r['acc']:.2f}" for f, r in res.items())

    params = [p for n, p in model.named_parameters() if "vision_tower" not in n]
    model.train()
    tower.eval()
    st_b = run_stage("B", params, lambda step, n: stage_b_batch(step, n, args.seed, recipe.families),
                     lambda *b: stage_b_loss(model, *b), minutes=recipe.minutes_b, schedule=VQA,
                     on_log=val_b_log, **common)
    # Continuations C, C2, ...: stage B again with a fresh schedule, each with its own family mix, scene cap and
    # lr (recorded in the state, so --resume finishes an interrupted one exactly as it was asked for).
    st_c = []
    for k, (name, c) in enumerate(conts):
        groups = [{"params": params + (list(aux.parameters()) if c.aux > 0 else [])}]
        tower.requires_grad_(c.tower_lr > 0)
        if c.tower_lr > 0:
            groups.append({"params": list(tower.parameters()), "scale": c.tower_lr})
        st = run_stage(name, groups,
                       lambda step, n, c=c, k=k: stage_b_batch(step, n, args.seed, c.families,
                                                               2_000_000 + 1_000_000 * k, c.max_objects,
                                                               set(c.answers or ())),
                       lambda *b, w=c.aux: stage_b_loss(model, *b, aux=aux if w > 0 else None, aux_weight=w),
                       minutes=c.minutes, schedule=c.schedule, on_log=val_b_log, **common)
        counts = {k2: st[k2] for k2 in ("step", "samples", "seconds")}
        st_c.append({"stage": name} | counts | {"batch": c.schedule.batch} | c.config())

    # Final evaluation on held-out scenes, and the blind control.
    t = time.time()
    eval_ = C.held_out(model, recipe.families, args.eval_per_family, log=log)
    log(f"eval {time.time() - t:.0f} s")
    training = {
        "stage_a": {k: st_a[k] for k in ("step", "samples", "seconds")} | {"batch": TOWER.batch, "lr": TOWER.lr},
        "stage_b": {k: st_b[k] for k in ("step", "samples", "seconds")} | {"batch": VQA.batch, "lr": VQA.lr},
        "continuations": st_c,
        "cpu_minutes": (st_a["seconds"] + st_b["seconds"] + sum(c["seconds"] for c in st_c)) / 60,
        "torch_threads": args.threads, "seed": args.seed,
    }
    card = C.make_card(model, recipe.families, commands=state["commands"], training=training, eval_=eval_)
    C.write(model, card, args.out)
    log(f"wrote {args.out}: {card['parameters']} parameters, {training['cpu_minutes']:.1f} cpu-min")
    return card


if __name__ == "__main__":
    main()
