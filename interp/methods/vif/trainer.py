"""Train VIF's CVAE on a frozen base model (VIF paper §4.4, Eqs. 8–9).

    res = interp.vif.train(vlm, samples, interp.vif.TrainConfig(steps=500), out="runs/vif")
    res.vif                                   # the trained VIF (prior mean at inference), also saved in out/

Loss per batch (teacher forcing: `vlm.prepare(images, questions, answers=...)`, z from the posterior):

    CE(answer tokens) + β · KL(posterior ‖ prior) + γ · (H(map) + volume)        β = γ = 0.1

Only the CVAE gets gradients: the base model's parameters are set to `requires_grad=False` for the run
(restored afterwards) and every step checks that none of them received a gradient. AdamW with linear warmup
and a cosine decay; periodic greedy evaluation with the prior mean; checkpoints (weights + JSON + optimizer
state) written atomically into `out`, and a run pointed at an `out` that holds one resumes from it.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from interp.errors import CheckpointError, InputError, InterpError
from interp.methods.vif import checkpoint as ckpt
from interp.methods.vif.intervention import VIF

LOG = "train_log.jsonl"


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings (the VIF's own sizes and pairs live on the `VIF` passed to `train`).

    steps: optimizer steps in total (a resumed run continues up to it); batch_size; lr, weight_decay, betas:
    AdamW; warmup: linear warmup steps, then cosine decay to lr · min_lr; clip: gradient-norm clip (0 = off);
    beta: KL weight β; gamma: sparsity weight γ on H(map) + volume; volume: "paper" (Σ w σ²) or "reference"
    (mean σ²); eval_every / save_every: steps between evaluations / checkpoints (0 = only at the end);
    max_minutes: stop (and save) after this much wall time; seed: batch order and the posterior's ε;
    eval_batch_size, max_new_tokens: of the greedy evaluation.
    """

    steps: int = 1000
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 0.01
    betas: tuple = (0.9, 0.98)
    warmup: int = 50
    min_lr: float = 0.1
    clip: float = 1.0
    beta: float = 0.1
    gamma: float = 0.1
    volume: str = "paper"
    eval_every: int = 0
    save_every: int = 100
    max_minutes: float | None = None
    seed: int = 0
    eval_batch_size: int = 32
    max_new_tokens: int = 4

    def __post_init__(self):
        if self.steps < 1 or self.batch_size < 1:
            raise InputError(f"TrainConfig: steps and batch_size must be ≥ 1, got {self.steps}, {self.batch_size}")
        if self.volume not in ("paper", "reference"):
            raise InputError(f"TrainConfig.volume must be 'paper' or 'reference', got {self.volume!r}")

    def lr_at(self, step: int) -> float:
        """Learning rate of optimizer step `step` (0-based): linear warmup, cosine to lr · min_lr."""
        if step < self.warmup:
            return self.lr * (step + 1) / self.warmup
        t = (step - self.warmup) / max(1, self.steps - self.warmup)
        return self.lr * (self.min_lr + (1 - self.min_lr) * 0.5 * (1 + math.cos(math.pi * min(t, 1.0))))


@dataclass
class TrainResult:
    """vif: the trained VIF in inference mode; step: optimizer steps done; history: the log records
    (one per step, plus evaluations); evals: {"baseline": accuracy, step: accuracy, ...}; out: checkpoint dir."""

    vif: VIF
    step: int
    history: list = field(default_factory=list)
    evals: dict = field(default_factory=dict)
    out: Path | None = None


def answer_ce(logits: torch.Tensor, batch) -> torch.Tensor:
    """Mean cross-entropy of the teacher-forced answer tokens. logits: [B, T, V]; batch.layout.answer [B, T]."""
    ans = batch.layout.answer.to(logits.device)
    target = batch.input_ids.to(logits.device)
    pred = logits[:, :-1].float()  # position t-1 predicts token t
    sel = ans[:, 1:]
    if not bool(sel.any()):
        raise InputError("no answer tokens in the batch: prepare it with answers=[...]")
    return torch.nn.functional.cross_entropy(pred[sel], target[:, 1:][sel])


def vif_loss(logits, batch, diag: dict, config: TrainConfig, module) -> tuple[torch.Tensor, dict]:
    """Eq. 9: CE + β·KL + γ·(H(map) + volume); returns (loss, {term: float})."""
    ce = answer_ce(logits, batch)
    vol = diag["volume"]
    if config.volume == "reference":
        from interp.methods.vif.gmm import gmm_volume

        vol = torch.stack([gmm_volume(m.sigmas, m.weights, mode="reference").mean() for m in diag["mixtures"]]).mean()
    loss = ce + config.beta * diag["kl"] + config.gamma * (diag["entropy"] + vol)
    terms = {"loss": loss, "ce": ce, "kl": diag["kl"], "entropy": diag["entropy"], "volume": vol}
    return loss, {k: float(v.detach()) for k, v in terms.items()}


def _batch_samples(samples, step: int, config: TrainConfig) -> list:
    """The samples of optimizer step `step`: a callable `samples(step, batch_size)`, or a deterministic
    reshuffle per epoch of a sequence (a pure function of seed and step, so a resume sees the same batches)."""
    bs = config.batch_size
    if callable(samples):
        out = list(samples(step, bs))
        if not out:
            raise InputError(f"samples({step}, {bs}) returned no samples")
        return out
    n = len(samples)
    out = []
    for k in range(step * bs, (step + 1) * bs):
        epoch, i = divmod(k, n)
        g = torch.Generator().manual_seed(config.seed * 1_000_003 + epoch)
        out.append(samples[int(torch.randperm(n, generator=g)[i])])
    return out


def _accuracy(vlm, vif, samples, config) -> dict:
    from interp.evaluation import evaluate

    res = evaluate(vlm, samples, *([vif] if vif is not None else []), batch_size=config.eval_batch_size,
                   max_new_tokens=config.max_new_tokens, progress=False)
    return {"accuracy": res.accuracy, "by_family": res.by_family}


def train(vlm, samples, config: TrainConfig = TrainConfig(), *, out=None, vif: VIF | None = None,
          eval_samples=None, progress: bool = True) -> TrainResult:
    """Train `vif` (default `VIF.build(vlm)`) on `samples` with the base model frozen; see the module docstring.

    samples: a sequence of `Sample`s (reshuffled per epoch) or a callable `(step, batch_size) → [Sample]`.
    out: checkpoint directory (resumed when it already holds one); eval_samples: held-out `Sample`s for the
    periodic greedy evaluation (the baseline without VIF is evaluated once at the start).
    """
    from tqdm.auto import tqdm

    import interp

    out = Path(out) if out is not None else None
    start, state = 0, None
    if out is not None and (out / ckpt.CONFIG).exists():
        saved = ckpt.load_vif(out, vlm)
        if vif is not None and vif.module is not None and asdict(vif.module.cfg) != asdict(saved.module.cfg):
            raise CheckpointError(f"{out} holds a VIF with sizes {asdict(saved.module.cfg)}, not the "
                                  f"{asdict(vif.module.cfg)} given; use another out directory to start over")
        vif = saved
        cfg_json = ckpt.read_config(out)
        state = ckpt.load_train_state(out)
        start = int(cfg_json.get("step") or 0)
        if state is not None and int(state["step"]) != start:
            state = None  # weights and optimizer from different steps (a crash between writes): fresh optimizer
    vif = vif if vif is not None else VIF.build(vlm, seed=config.seed)
    if vif.module is None:
        raise InputError("train needs a VIF with a CVAE: VIF.build(vlm, ...) or VIF.load(path, vlm)")
    if vif.pairs is None:
        vif = vif.with_(pairs=vif._pairs_for(vlm))
    module = vif.module
    base_params = list(vlm.hf.parameters())
    if {id(p) for p in module.parameters()} & {id(p) for p in base_params}:
        raise InputError("the CVAE shares parameters with the base model; VIF trains its own module only")

    opt = torch.optim.AdamW(module.parameters(), lr=config.lr, betas=tuple(config.betas),
                            weight_decay=config.weight_decay)
    if state is not None:
        opt.load_state_dict(state["optimizer"])
    history, evals = [], {}
    log_f = None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        log_f = open(out / LOG, "a", encoding="utf-8")
        if state is not None and state.get("extra", {}).get("evals"):
            evals = dict(state["extra"]["evals"])

    def log(rec):
        history.append(rec)
        if log_f is not None:
            log_f.write(json.dumps(rec) + "\n")
            log_f.flush()

    def save(step):
        if out is None:
            return
        extra = {"config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(config).items()},
                 "evals": {str(k): v for k, v in evals.items()}}
        ckpt.save_train_state(out, opt, None, step, extra={"evals": extra["evals"]})
        ckpt.save_vif(vif.with_(training=False), out, vlm, step=step, extra=extra)

    def evaluate_now(step):
        if not eval_samples:
            return
        module.eval()
        with torch.no_grad():
            acc = _accuracy(vlm, vif.with_(training=False, sample=False), eval_samples, config)
        module.train()
        evals[str(step)] = acc
        log({"step": step, "eval": acc})
        bar.write(f"step {step}: accuracy {acc['accuracy']:.3f} " +
                  " ".join(f"{k} {v:.2f}" for k, v in acc["by_family"].items()))

    flags = [p.requires_grad for p in base_params]
    pre_grads = [p.grad for p in base_params]  # whatever the caller left there must stay untouched
    vlm.hf.requires_grad_(False)
    train_vif = vif.with_(training=True)
    run = interp.intervene(vlm, train_vif)
    t0 = time.monotonic()
    bar = tqdm(total=config.steps, initial=start, disable=not progress, desc="vif", unit="step")
    step, bad = start, 0
    try:
        if eval_samples and "baseline" not in evals:
            with torch.no_grad():
                evals["baseline"] = _accuracy(vlm, None, eval_samples, config)
            log({"step": start, "eval_baseline": evals["baseline"]})
            bar.write(f"baseline (no VIF): accuracy {evals['baseline']['accuracy']:.3f}")
            evaluate_now(start)
        module.train()
        while step < config.steps:
            if config.max_minutes is not None and time.monotonic() - t0 > 60 * config.max_minutes:
                bar.write(f"time limit ({config.max_minutes} min) reached at step {step}")
                break
            batch_samples = _batch_samples(samples, step, config)
            b = vlm.prepare(images=[s.image for s in batch_samples], questions=[s.question for s in batch_samples],
                            answers=[s.answer for s in batch_samples])
            for g in opt.param_groups:
                g["lr"] = config.lr_at(step)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(config.seed * 1_000_003 + 7919 * step + 1)  # the posterior's ε, resumable
                res = run.forward(b, grad=True)
                loss, terms = vif_loss(res.logits, b, res.diagnostics[train_vif.name], config, module)
                opt.zero_grad(set_to_none=True)
                loss.backward()
            leaked = [i for i, p in enumerate(base_params) if p.grad is not pre_grads[i]]
            if leaked:
                raise InterpError(f"{len(leaked)} base-model parameters received gradients; VIF must train only "
                                  "its CVAE (the base model is frozen)")
            if not math.isfinite(terms["loss"]):
                raise InterpError(f"VIF loss is {terms['loss']} at step {step}; lower the learning rate")
            norm = torch.nn.utils.clip_grad_norm_(module.parameters(), config.clip or float("inf"))
            terms["grad_norm"] = float(norm)
            if not math.isfinite(terms["grad_norm"]):  # skip the update rather than poison the weights
                bad += 1
                bar.write(f"step {step}: non-finite gradient norm, update skipped ({bad} in a row)")
                if bad >= 5:
                    raise InterpError(f"non-finite gradients {bad} steps in a row at step {step}; "
                                      "lower the learning rate")
                opt.zero_grad(set_to_none=True)
            else:
                bad = 0
                opt.step()
            step += 1
            log({"step": step, "lr": config.lr_at(step - 1), **terms})
            bar.update(1)
            bar.set_postfix(loss=f"{terms['loss']:.3f}", ce=f"{terms['ce']:.3f}", kl=f"{terms['kl']:.2f}")
            if config.eval_every and step % config.eval_every == 0 and step < config.steps:
                evaluate_now(step)
            if config.save_every and step % config.save_every == 0:
                save(step)
        if str(step) not in evals:
            evaluate_now(step)
        save(step)
    finally:
        bar.close()
        for p, f in zip(base_params, flags):
            p.requires_grad_(f)
        module.eval()
        if log_f is not None:
            log_f.close()
    return TrainResult(vif=vif.with_(training=False), step=step, history=history, evals=evals, out=out)


# --------------------------------------------------------------------------------------------- CLI


def _toy_stream(seed: int):
    from interp.toy import FAMILIES, dataset

    def stream(step, bs):  # fresh scenes every step, a pure function of (seed, step); families rotate
        k = step % len(FAMILIES)
        return dataset(bs, seed=seed + step, families=FAMILIES[k:] + FAMILIES[:k])

    return stream


def main(argv=None) -> TrainResult:
    ap = argparse.ArgumentParser(prog="python -m interp.vif.train", description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="toy", help="'toy' (the shipped toy model) or a model directory / hub id")
    ap.add_argument("--data", default="toy", help="'toy' (fresh toy scenes each step) or what load_samples takes")
    ap.add_argument("--out", required=True, help="checkpoint directory (resumed if it holds one)")
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--beta", type=float, default=0.1, help="KL weight β (paper 0.1)")
    ap.add_argument("--gamma", type=float, default=0.1, help="sparsity weight γ on H(map) + volume (paper 0.1)")
    ap.add_argument("--minutes", type=float, default=None, help="wall-time limit; saves and stops")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    ap.add_argument("--eval-every", type=int, default=0)
    ap.add_argument("--save-every", type=int, default=100)
    ap.add_argument("--eval-n", type=int, default=50, help="held-out samples per toy family (0 = no eval)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--latent", type=int, default=32)
    ap.add_argument("--components", type=int, default=16)
    ap.add_argument("--min-sigma", type=float, default=0.035,
                    help="floor of a component's spread in image units (reference 0.035 = 0.84 cells of 24)")
    ap.add_argument("--alpha", type=float, default=0.5)
    ap.add_argument("--normalize", choices=("paper", "reference"), default="paper")
    ap.add_argument("--no-positions", action="store_true", help="do not feed token (x, y) to the CVAE (reference)")
    ap.add_argument("--pairs", default=None, help="e.g. '2:6,3:7' (default: the paper's, scaled)")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.threads:
        torch.set_num_threads(args.threads)

    import interp

    vlm = interp.toy.load() if args.model == "toy" else interp.load(args.model)
    eval_samples = None
    if args.data == "toy":
        from interp.toy import EVAL_SEED, FAMILIES, dataset

        samples = _toy_stream(7_000_000 + 10_000 * args.seed)  # disjoint from the toy model's training seeds
        if args.eval_n:
            eval_samples = dataset(args.eval_n * len(FAMILIES), seed=EVAL_SEED)
    else:
        from interp.data.loaders import load_samples

        samples = load_samples(args.data)
    pairs = None
    if args.pairs:
        pairs = tuple(tuple(int(x) for x in p.split(":")) for p in args.pairs.split(","))
    vif = VIF.build(vlm, seed=args.seed, width=args.width, latent=args.latent, n_components=args.components,
                    min_sigma=args.min_sigma, alpha=args.alpha, normalize=args.normalize, positions=not args.no_positions,
                    **({"pairs": pairs} if pairs else {}))
    config = TrainConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr, warmup=args.warmup,
                         beta=args.beta, gamma=args.gamma, eval_every=args.eval_every, save_every=args.save_every, max_minutes=args.minutes,
                         seed=args.seed)
    res = train(vlm, samples, config, out=args.out, vif=vif, eval_samples=eval_samples,
                progress=not args.no_progress)
    print(json.dumps({"step": res.step, "out": str(res.out), "parameters": vif.module.num_parameters(),
                      "evals": res.evals}, indent=1))
    return res
