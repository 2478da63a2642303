"""Train a VIF module, on a frozen base or jointly with it (the CLI; the code is in `trainer.py`).

    python -m interp.vif.train --model toy --steps 1000 --threads 1 --out runs/vif                  # frozen base
    python -m interp.vif.train --model toy --base joint --base-lr 1e-4 --steps 1000 --out runs/vif_joint
    python -m interp.vif.train --model toy --base joint --focus none --out runs/finetune_only       # the control
    python -m interp.vif.train --model path/to/hf_dir --data path/to/samples.jsonl --steps 5000 --out runs/vif

Re-running with the same --out resumes from its last checkpoint (weights, optimizer state and step).
Options marked "not in the paper" are off by default.
"""

from __future__ import annotations

import argparse
import json
import os

import torch

from interp.vif.intervention import VIF
from interp.vif.joint import FOCUS
from interp.vif.trainer import TrainConfig, TrainResult, toy_stream, train

def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m interp.vif.train", description=__doc__.split("\n")[0])
    a = ap.add_argument
    a("--model", default="toy", help="'toy' (the shipped toy model) or a model directory / hub id")
    a("--data", default="toy", help="'toy' (fresh toy scenes each step) or what load_samples takes")
    a("--out", required=True, help="checkpoint directory (resumed if it holds one)")
    a("--steps", type=int, default=1000)
    a("--batch-size", type=int, default=16)
    a("--lr", type=float, default=1e-3, help="peak lr of the CVAE")
    a("--warmup", type=int, default=50)
    a("--beta", type=float, default=0.1, help="KL weight β (paper 0.1)")
    a("--gamma", type=float, default=0.1, help="sparsity weight γ on H(map) + volume (paper 0.1)")
    a("--base", choices=("frozen", "joint"), default="frozen",
      help="joint: fine-tune the base modules with the CVAE, as the reference does")
    a("--base-lr", type=float, default=1e-4, help="peak lr of the base modules (joint)")
    a("--train-modules", default="decoder,projector", help="joint: decoder, projector, vision or dotted paths")
    a("--focus", choices=FOCUS, default="cvae", help="cvae (VIF) or a control: none (fine-tune only), uniform, "
      "oracle (evidence boxes); the controls need --base joint")
    a("--kl-anneal", type=int, default=0, help="not in the paper: β ramps from 0 over this many steps (0 = off)")
    a("--free-bits", type=float, default=0.0, help="not in the paper: per-dimension KL floor, nats (0 = off)")
    a("--collapse-kl", type=float, default=0.01, help="warn when KL stays under this (nats) ...")
    a("--collapse-steps", type=int, default=100, help="... for this many steps (0 = never)")
    a("--sample", action="store_true", help="inference draws z from the prior, as the reference (default: prior mean)")
    a("--decode", action="store_true", help="inject at every decode step too (default: prefill only, the reference)")
    a("--minutes", type=float, default=None, help="wall-time limit; saves and stops")
    a("--threads", type=int, default=None, help="torch.set_num_threads")
    a("--eval-every", type=int, default=0)
    a("--save-every", type=int, default=100)
    a("--eval-n", type=int, default=50, help="held-out samples per toy family (0 = no eval)")
    a("--seed", type=int, default=0)
    a("--width", type=int, default=64)
    a("--latent", type=int, default=32)
    a("--components", type=int, default=16)
    a("--min-sigma", type=float, default=0.035,
      help="floor of a component's spread in image units (reference 0.035 = 0.84 cells of 24)")
    a("--alpha", type=float, default=0.5)
    a("--normalize", choices=("paper", "reference"), default="paper")
    a("--no-positions", action="store_true", help="do not feed token (x, y) to the CVAE (reference)")
    a("--pairs", default=None, help="e.g. '2:6,3:7' (default: the paper's, scaled)")
    a("--no-progress", action="store_true")
    return ap


def config_from(args) -> TrainConfig:
    return TrainConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr, warmup=args.warmup, beta=args.beta,
                       gamma=args.gamma, eval_every=args.eval_every, save_every=args.save_every,
                       max_minutes=args.minutes, seed=args.seed, base=args.base, base_lr=args.base_lr,
                       train_modules=tuple(m for m in args.train_modules.split(",") if m), focus=args.focus,
                       kl_anneal=args.kl_anneal, free_bits=args.free_bits, collapse_kl=args.collapse_kl,
                       collapse_steps=args.collapse_steps)


def main(argv=None) -> TrainResult:
    args = parser().parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.threads:
        torch.set_num_threads(args.threads)

    import interp

    config = config_from(args)
    vlm = interp.toy.load() if args.model == "toy" else interp.load(args.model)
    eval_samples = None
    if args.data == "toy":
        from interp.toy import EVAL_SEED, FAMILIES, dataset

        samples = toy_stream(args.seed)
        if args.eval_n:
            eval_samples = dataset(args.eval_n * len(FAMILIES), seed=EVAL_SEED)
    else:
        from interp.data.loaders import load_samples

        samples = load_samples(args.data)
    pairs = None
    if args.pairs:
        pairs = tuple(tuple(int(x) for x in p.split(":")) for p in args.pairs.split(","))
    fields = dict(alpha=args.alpha, normalize=args.normalize, positions=not args.no_positions, sample=args.sample,
                  decode=args.decode, **({"pairs": pairs} if pairs else {}))
    if config.focus == "cvae":
        vif = VIF.build(vlm, seed=args.seed, width=args.width, latent=args.latent, n_components=args.components,
                        min_sigma=args.min_sigma, **fields)
    else:  # the controls use only the pairs, α and query rows
        vif = VIF(**{"pairs": pairs or VIF().pairs_for(vlm), **{k: fields[k] for k in ("alpha", "decode")}})
    res = train(vlm, samples, config, out=args.out, vif=vif, eval_samples=eval_samples, progress=not args.no_progress)
    print(json.dumps({"step": res.step, "out": str(res.out), "base": list(res.base),
                      "parameters": vif.module.num_parameters() if vif.module is not None else 0,
                      "evals": res.evals}, indent=1))
    return res


if __name__ == "__main__":
    main()
