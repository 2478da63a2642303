"""Train VIF's CVAE (VIF paper §4.4, Eqs. 8–9) on a frozen base, or jointly with the base as the reference does.

    res = interp.vif.train(vlm, samples, interp.vif.TrainConfig(steps=500), out="runs/vif")        # frozen base
    cfg = interp.vif.TrainConfig(base="joint", base_lr=1e-4, train_modules=("decoder", "projector"))
    res = interp.vif.train(vlm, samples, cfg, out="runs/vif_joint")   # fine-tunes `vlm` in place, saved beside
    vlm2, vif = interp.vif.load_joint("runs/vif_joint")               # later: a fresh base + its weights + VIF

Loss per batch (teacher forcing: `vlm.prepare(images, questions, answers=...)`, z from the posterior):

    CE(answer tokens) + β · KL(posterior ‖ prior) + γ · (H(map) + volume)        β = γ = 0.1

base="frozen": only the CVAE trains; the base's parameters get `requires_grad=False` for the run (restored
afterwards) and every step checks that none of them received a gradient.
base="joint" (the reference, `finetune_7b.sh`): the base modules in `train_modules` ("decoder" = language
model + lm_head, "projector", optionally "vision"; the reference keeps CLIP frozen) train too, at `base_lr`
with weight decay 0 (LLaVA's fine-tune), and the CVAE's loss terms reach them through the hidden states it
reads (`VIF.detach=False`, as the reference's hook). Every other base parameter is checked as in frozen mode.
The checkpoint holds the trained base modules (`joint.py`) and `VIF.load` refuses any other weights.
focus: "cvae" (VIF) or a control with no CVAE, joint only: "none" (fine-tuning alone), "uniform" (a uniform
map injected where VIF injects), "oracle" (the evidence boxes as the map; samples need boxes) — `FixedMap`.

Not in the paper, off by default: `kl_anneal` (β ramps linearly from 0 over that many steps) and
`free_bits` (each latent dimension's KL is floored at that many nats). Every step logs ce, kl, kl_active
(dimensions above 0.01 nats), the map's entropy and, when samples carry boxes, its mass on the evidence and
the evidence's area share (`diagnostics.py`); `PosteriorCollapseWarning` fires once KL stayed under
`collapse_kl` for `collapse_steps` steps. AdamW with linear warmup and a cosine decay; periodic greedy
evaluation (prior mean); checkpoints written atomically into `out`; a run pointed at an `out` that holds
one resumes from it. The command line is `python -m interp.vif.train` (`train.py`).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from interp.errors import CheckpointError, InputError, InterpError
from interp.vif import checkpoint as ckpt
from interp.vif.diagnostics import CollapseWatch, evidence_mask, free_bits_kl, map_stats
from interp.vif.fixed import FixedMap
from interp.vif.intervention import VIF, scale_pairs
from interp.vif.loading import base_source
from interp.vif.joint import (BASE_WEIGHTS, FOCUS, apply_base, read_base, resolve_modules, save_base,
                                     saved_step, trained_parameters)

LOG = "train_log.jsonl"
BASES = ("frozen", "joint")


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings (the VIF's own sizes and pairs live on the `VIF` passed to `train`).

    steps: optimizer steps in total (a resumed run continues up to it); batch_size; lr, weight_decay, betas:
    AdamW of the CVAE; warmup: linear warmup steps, then cosine decay to lr · min_lr (both groups); clip:
    gradient-norm clip over everything trained (0 = off); beta: KL weight β; gamma: sparsity weight γ on
    H(map) + volume; volume: "paper" (Σ w σ²) or "reference" (mean σ²); eval_every / save_every: steps between
    evaluations / checkpoints (0 = only at the end); max_minutes: stop (and save) after this much wall time;
    seed: batch order and the posterior's ε; eval_batch_size, max_new_tokens: of the greedy evaluation.
    base: "frozen" | "joint"; base_lr: peak lr of the base modules (joint); train_modules: which (joint);
    focus: "cvae" | "none" | "uniform" | "oracle" (see the module docstring).
    kl_anneal, free_bits: off (0) by default, not in the paper. collapse_kl (nats), collapse_steps: the
    posterior-collapse warning (collapse_steps = 0: never).
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
    base: str = "frozen"
    base_lr: float = 1e-4
    train_modules: tuple = ("decoder", "projector")
    focus: str = "cvae"
    kl_anneal: int = 0
    free_bits: float = 0.0
    collapse_kl: float = 0.01
    collapse_steps: int = 100

    def __post_init__(self):
        if self.steps < 1 or self.batch_size < 1:
            raise InputError(f"TrainConfig: steps and batch_size must be ≥ 1, got {self.steps}, {self.batch_size}")
        if self.volume not in ("paper", "reference"):
            raise InputError(f"TrainConfig.volume must be 'paper' or 'reference', got {self.volume!r}")
        if self.base not in BASES:
            raise InputError(f"TrainConfig.base must be one of {BASES}, got {self.base!r}")
        if self.focus not in FOCUS:
            raise InputError(f"TrainConfig.focus must be one of {FOCUS}, got {self.focus!r}")
        if self.focus != "cvae" and self.base != "joint":
            raise InputError(f"TrainConfig(focus={self.focus!r}) has no CVAE, so only the base could train: "
                             "use base='joint'")
        if self.kl_anneal < 0 or self.free_bits < 0 or self.base_lr < 0:
            raise InputError("TrainConfig: kl_anneal, free_bits and base_lr must be ≥ 0")
        mods = (self.train_modules,) if isinstance(self.train_modules, str) else tuple(self.train_modules)
        if self.base == "joint" and not mods:
            raise InputError("TrainConfig(base='joint') needs train_modules, e.g. ('decoder', 'projector')")
        object.__setattr__(self, "train_modules", mods)

    def lr_scale(self, step: int) -> float:
        """The schedule's factor at optimizer step `step` (0-based): linear warmup, cosine to min_lr."""
        if step < self.warmup:
            return (step + 1) / self.warmup
        t = (step - self.warmup) / max(1, self.steps - self.warmup)
        return self.min_lr + (1 - self.min_lr) * 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))

    def lr_at(self, step: int) -> float:
        """Learning rate of the CVAE at optimizer step `step`."""
        return self.lr * self.lr_scale(step)

    def beta_at(self, step: int) -> float:
        """KL weight at step `step`: β, or β·(step+1)/kl_anneal while annealing (not in the paper)."""
        return self.beta * min(1.0, (step + 1) / self.kl_anneal) if self.kl_anneal else self.beta


@dataclass
class TrainResult:
    """vif: the trained VIF in inference mode (None for the controls); intervention: what to evaluate the
    trained model with (the VIF, a `FixedMap`, or None for fine-tuning alone); step: optimizer steps done;
    history: the log records; evals: {"baseline": {...}, step: {...}}; out: checkpoint dir; base: the dotted
    paths of the base modules trained (joint), else ()."""

    vif: VIF | None
    step: int
    history: list = field(default_factory=list)
    evals: dict = field(default_factory=dict)
    out: Path | None = None
    intervention: object = None
    base: tuple = ()


def answer_ce(logits: torch.Tensor, batch) -> torch.Tensor:
    """Mean cross-entropy of the teacher-forced answer tokens. logits: [B, T, V]; batch.layout.answer [B, T]."""
    ans = batch.layout.answer.to(logits.device)
    target = batch.input_ids.to(logits.device)
    pred = logits[:, :-1].float()  # position t-1 predicts token t
    sel = ans[:, 1:]
    if not bool(sel.any()):
        raise InputError("no answer tokens in the batch: prepare it with answers=[...]")
    return torch.nn.functional.cross_entropy(pred[sel], target[:, 1:][sel])


def vif_loss(logits, batch, diag: dict, config: TrainConfig, module=None, step: int = 0) -> tuple[torch.Tensor, dict]:
    """Eq. 9: CE + β·KL + γ·(H(map) + volume) (β per `beta_at`, KL floored per dimension with free bits);
    returns (loss, {term: float}); "kl" is the plain KL whatever the options."""
    ce = answer_ce(logits, batch)
    vol = diag["volume"]
    if config.volume == "reference":
        from interp.vif.gmm import gmm_volume

        vol = torch.stack([gmm_volume(m.sigmas, m.weights, mode="reference").mean() for m in diag["mixtures"]]).mean()
    kl = free_bits_kl(diag["kl_dims"], config.free_bits) if config.free_bits else diag["kl"]
    beta = config.beta_at(step)
    loss = ce + beta * kl + config.gamma * (diag["entropy"] + vol)
    terms = {"loss": loss, "ce": ce, "kl": diag["kl"], "entropy": diag["entropy"], "volume": vol}
    out = {k: float(v.detach()) for k, v in terms.items()}
    out["beta"] = beta
    return loss, out


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


TOY_SEED_BASE = 7_000_000  # the VIF runs' scenes: disjoint from the toy model's training seeds and EVAL_SEED


def toy_stream(seed: int = 0):
    """Fresh toy scenes every step, a pure function of (seed, step), families rotating: `samples` for `train`."""
    from interp.toy import FAMILIES, dataset

    def stream(step, bs):
        k = step % len(FAMILIES)
        return dataset(bs, seed=TOY_SEED_BASE + 10_000 * seed + step, families=FAMILIES[k:] + FAMILIES[:k])

    return stream


def _with_samples(iv, chunk) -> tuple:
    if iv is None:
        return ()
    return (iv.for_samples(chunk),) if isinstance(iv, FixedMap) else (iv,)


def evaluate_focus(vlm, intervention, samples, *, batch_size: int = 32, max_new_tokens: int = 4) -> dict:
    """Greedy accuracy (overall, by family) under `intervention` (VIF, FixedMap or None), and the mean map
    statistics over the samples with boxes (`map_stats` of the injected map): {"accuracy", "by_family", ...}."""
    import interp
    from interp.data.scoring import score

    ok, fam, stats = [], {}, []
    for i in range(0, len(samples), batch_size):
        chunk = samples[i:i + batch_size]
        b = vlm.prepare(images=[s.image for s in chunk], questions=[s.question for s in chunk])
        ivs = _with_samples(intervention, chunk)
        out = interp.intervene(vlm, *ivs).generate(b, max_new_tokens=max_new_tokens)
        for s, t in zip(chunk, out.texts):
            ok.append(float(score(s, t)))
            fam.setdefault(s.family, []).append(ok[-1])
        ev, has = evidence_mask(b.layout, chunk)
        for iv in ivs:
            if "maps" in out.diagnostics.get(iv.name, {}) and bool(has.any()):
                stats.append((int(has.sum()), map_stats(out.diagnostics[iv.name]["maps"], ev, has)))
    res = {"accuracy": sum(ok) / len(ok), "by_family": {f: sum(v) / len(v) for f, v in sorted(fam.items())}}
    if stats:
        n = sum(k for k, _ in stats)
        res.update({key: sum(k * st[key] for k, st in stats) / n for key in stats[0][1]})
    return res


def _resume(vlm, out, vif, config, paths):
    """(vif, start step, optimizer state or None, saved FixedMap settings or None) from `out`, if it holds a
    run; the fine-tuned base of a joint run is copied into `vlm`."""
    if out is None or not ((out / ckpt.CONFIG).exists() or read_base(out) is not None):
        return vif, 0, None, None
    info = read_base(out)
    if (info is not None) != (config.base == "joint"):
        raise CheckpointError(f"{out} holds a {'joint' if info else 'frozen-base'} run but the config asks for "
                              f"base={config.base!r}; use another out directory to start over")
    start = 0
    if info is not None:
        if info.get("focus") != config.focus or info.get("modules") != list(paths):
            raise CheckpointError(f"{out} holds a joint run of focus {info.get('focus')!r} on {info.get('modules')}, "
                                  f"not focus {config.focus!r} on {list(paths)}; use another out directory")
        start = int(info.get("step") or 0)
        if saved_step(out) != str(start):
            raise CheckpointError(f"{out}: {BASE_WEIGHTS} is not from step {start} of base.json (a crash between "
                                  "writes); use another out directory or delete this one")
        apply_base(out, vlm)
    if config.focus == "cvae":
        saved = VIF.load(out, vlm)
        if vif is not None and vif.module is not None and asdict(vif.module.cfg) != asdict(saved.module.cfg):
            raise CheckpointError(f"{out} holds a VIF with sizes {asdict(saved.module.cfg)}, not the "
                                  f"{asdict(vif.module.cfg)} given; use another out directory to start over")
        vif_step = int(ckpt.read_config(out).get("step") or 0)
        if info is not None and vif_step != start:
            raise CheckpointError(f"{out}: the CVAE is from step {vif_step} but the base from step {start} (a crash "
                                  "between writes); use another out directory or delete this one")
        vif, start = saved, vif_step
    state = ckpt.load_train_state(out)
    if state is not None and int(state["step"]) != start:
        state = None  # weights and optimizer from different steps (a crash between writes): fresh optimizer
    return vif, start, state, (info or {}).get("inject")


def train(vlm, samples, config: TrainConfig = TrainConfig(), *, out=None, vif: VIF | None = None,
          eval_samples=None, progress: bool = True) -> TrainResult:
    """Train `vif` (default `VIF.build(vlm)`) on `samples`, the base frozen or joint; see the module docstring.

    samples: a sequence of `Sample`s (reshuffled per epoch) or a callable `(step, batch_size) → [Sample]`.
    out: checkpoint directory (resumed when it already holds one); eval_samples: held-out `Sample`s for the
    periodic greedy evaluation (the untouched base is evaluated once at the start). For the controls
    (focus != "cvae") `vif` only gives the pairs, α and query rows of the fixed map. joint: `vlm` is
    fine-tuned in place.
    """
    from tqdm.auto import tqdm

    import interp

    joint, cvae = config.base == "joint", config.focus == "cvae"
    out = Path(out) if out is not None else None
    paths = resolve_modules(vlm, config.train_modules) if joint else ()
    vif, start, state, inject = _resume(vlm, out, vif, config, paths)
    if vif is None:
        vif = VIF.build(vlm, seed=config.seed) if cvae else VIF(pairs=scale_pairs(vlm.num_layers))
    if cvae and vif.module is None:
        raise InputError("train needs a VIF with a CVAE: VIF.build(vlm, ...) or VIF.load(path, vlm)")
    if vif.pairs is None:
        vif = vif.with_(pairs=vif.pairs_for(vlm))
    fixed = None
    if config.focus in ("uniform", "oracle"):
        fixed = FixedMap(**inject) if inject else FixedMap(
            kind="uniform" if config.focus == "uniform" else "boxes", layers=tuple(i for _, i in vif.pairs),
            alpha=vif.alpha, decode=vif.decode, queries=vif.queries)
    module = vif.module if cvae else None
    base_params = list(vlm.hf.parameters())
    trained = list(trained_parameters(vlm, paths).values())
    trained_ids = {id(p) for p in trained}
    if module is not None and {id(p) for p in module.parameters()} & {id(p) for p in base_params}:
        raise InputError("the CVAE shares parameters with the base model; VIF trains its own module")
    groups = []
    if module is not None:
        groups.append({"params": list(module.parameters()), "lr": config.lr, "weight_decay": config.weight_decay,
                       "peak": config.lr})
    if joint:  # weight decay 0 on the base, as LLaVA's fine-tune
        groups.append({"params": trained, "lr": config.base_lr, "weight_decay": 0.0, "peak": config.base_lr})
    opt = torch.optim.AdamW(groups, betas=tuple(config.betas))
    if state is not None:
        opt.load_state_dict(state["optimizer"])
    params = [p for g in opt.param_groups for p in g["params"]]
    history, evals = [], dict((state or {}).get("extra", {}).get("evals") or {})
    log_f = None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        log_f = open(out / LOG, "a", encoding="utf-8")

    def log(rec):
        history.append(rec)
        if log_f is not None:
            log_f.write(json.dumps(rec) + "\n")
            log_f.flush()

    eval_iv = (lambda: vif.with_(training=False, sample=False)) if cvae else (lambda: fixed)  # prior mean

    def save(step):
        if out is None:
            return
        extra = {"config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(config).items()},
                 "evals": {str(k): v for k, v in evals.items()}}
        ckpt.save_train_state(out, opt, None, step, extra={"evals": extra["evals"]})
        base = None
        if joint:
            base = save_base(out, vlm, paths, train_modules=config.train_modules, focus=config.focus, step=step,
                             source=base_source(vlm),
                             inject=fixed.settings() if fixed is not None else None,
                             extra=None if cvae else {"training": extra})
        if cvae:
            ckpt.save_vif(vif.with_(training=False), out, vlm, step=step, extra=extra, base=base)

    def evaluate_now(step, key=None, iv=None):
        if not eval_samples:
            return
        if module is not None:
            module.eval()
        with torch.no_grad():
            acc = evaluate_focus(vlm, iv if key else eval_iv(), eval_samples, batch_size=config.eval_batch_size,
                                 max_new_tokens=config.max_new_tokens)
        if module is not None:
            module.train()
        evals[key or str(step)] = acc
        log({"step": step, "eval_baseline" if key else "eval": acc})
        bar.write(f"{key or f'step {step}'}: accuracy {acc['accuracy']:.3f} "
                  + " ".join(f"{k} {v:.2f}" for k, v in acc["by_family"].items()))

    flags = [p.requires_grad for p in base_params]
    pre_grads = [p.grad for p in base_params]  # whatever the caller left there must stay untouched
    vlm.hf.requires_grad_(False)
    for p in trained:
        p.requires_grad_(True)
    train_vif = vif.with_(training=True, detach=not joint) if cvae else None
    watch = CollapseWatch(config.collapse_kl, config.collapse_steps)
    t0 = time.monotonic()
    bar = tqdm(total=config.steps, initial=start, disable=not progress, desc=f"vif {config.base} {config.focus}",
               unit="step")
    step, bad = start, 0
    try:
        if eval_samples and "baseline" not in evals:
            evaluate_now(start, "baseline", None)
            evaluate_now(start)
        if module is not None:
            module.train()
        while step < config.steps:
            if config.max_minutes is not None and time.monotonic() - t0 > 60 * config.max_minutes:
                bar.write(f"time limit ({config.max_minutes} min) reached at step {step}")
                break
            chunk = _batch_samples(samples, step, config)
            b = vlm.prepare(images=[s.image for s in chunk], questions=[s.question for s in chunk],
                            answers=[s.answer for s in chunk])
            for g in opt.param_groups:
                g["lr"] = g["peak"] * config.lr_scale(step)
            ivs = (train_vif,) if cvae else _with_samples(fixed, chunk)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(config.seed * 1_000_003 + 7919 * step + 1)  # the posterior's ε, resumable
                res = interp.intervene(vlm, *ivs).forward(b, grad=True)
                if cvae:
                    diag = res.diagnostics[train_vif.name]
                    loss, terms = vif_loss(res.logits, b, diag, config, module, step)
                else:
                    diag = res.diagnostics.get(fixed.name, {}) if fixed is not None else {}
                    loss = answer_ce(res.logits, b)
                    terms = {"loss": float(loss.detach()), "ce": float(loss.detach())}
                opt.zero_grad(set_to_none=True)
                loss.backward()
            leaked = [i for i, p in enumerate(base_params) if id(p) not in trained_ids and p.grad is not pre_grads[i]]
            if leaked:
                raise InterpError(f"{len(leaked)} base-model parameters outside {list(paths) or 'the CVAE'} received "
                                  f"gradients; base={config.base!r} trains only those")
            if not math.isfinite(terms["loss"]):
                raise InterpError(f"VIF loss is {terms['loss']} at step {step}; lower the learning rate")
            terms["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(params, config.clip or float("inf")))
            if "maps" in diag:
                ev, has = evidence_mask(b.layout, chunk)
                terms.update(map_stats(diag["maps"], ev, has))
            if cvae:
                terms["kl_active"] = int((diag["kl_dims"].detach() > 0.01).sum())
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
            if cvae and (msg := watch.update(step, terms["kl"])):
                bar.write(msg)
                log({"step": step, "collapse": msg})
            bar.update(1)
            bar.set_postfix(loss=f"{terms['loss']:.3f}", ce=f"{terms['ce']:.3f}",
                            **({"kl": f"{terms['kl']:.2f}"} if cvae else {}))
            if config.eval_every and step % config.eval_every == 0 and step < config.steps:
                evaluate_now(step)
            if config.save_every and step % config.save_every == 0:
                save(step)
        if str(step) not in evals:
            evaluate_now(step)
        save(step)
    finally:
        bar.close()
        for p, f, g in zip(base_params, flags, pre_grads):
            p.requires_grad_(f)
            if id(p) in trained_ids:
                p.grad = g
        if module is not None:
            module.eval()
        if log_f is not None:
            log_f.close()
    done = vif.with_(training=False) if cvae else None
    return TrainResult(vif=done, step=step, history=history, evals=evals, out=out,
                       intervention=done if cvae else fixed, base=paths)
