"""The toy model's held-out evaluation and its model card, through the library: `interp.evaluate` (HF generate)
for greedy answers, `interp.EdgeMask("text", "vision")` for the blind control, `interp.data.scoring` for
exact match and `interp.stats.wilson_ci` for intervals.

    acc = evaluate(model, samples)                              # {family: {"acc", "n", "ci95"}, "overall"}
    blind = evaluate(model, samples, block_vision=True)
    card = make_card(model, families, commands=[...], training={...}, per_family=250)
    write(model, card, "runs/toy")                              # HF checkpoint + processor + model_card.json
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import replace
from functools import cache

import numpy as np
import torch

import interp
from interp.data.scoring import exact_match
from interp.stats import wilson_ci
from interp.toy import processor as P
from interp.toy import scenes
from interp.toy.model import VOCAB
from interp.training import publish

MAX_NEW_TOKENS = 3  # every toy answer is one word, then </s>


@cache
def _processor():
    return P.build_processor()


def as_vlm(model):
    """An `interp.VLM` over the built (or training) HF model itself, with the toy's processor; eval mode."""
    model.eval()
    return interp.load(model, processor=_processor(), check=False)


def _vlm(model):
    if hasattr(model, "prepare"):  # an interp.VLM already
        model.hf.eval()
        return model
    return as_vlm(model)


def _blocked(block_vision: bool) -> tuple:
    return (interp.EdgeMask("text", "vision"),) if block_vision else ()


def greedy(model, samples, *, block_vision=False, max_new_tokens=MAX_NEW_TOKENS, batch_size=64) -> list[str]:
    """Greedy answers of `model` (an HF Llava or an `interp.VLM`; left in eval mode), with `interp.evaluate`:
    HF generate."""
    vlm = _vlm(model)
    rows = [replace(s, id=str(i)) for i, s in enumerate(samples)]  # positional ids: a list may repeat a sample
    res = interp.evaluate(vlm, rows, *_blocked(block_vision), batch_size=batch_size, max_new_tokens=max_new_tokens,
                          metric="exact_match", progress=False)
    return [r["prediction"] for r in res.records]


@torch.no_grad()
def choose(model, samples, *, block_vision=False, batch_size=64) -> list[str]:
    """Each sample's choice with the highest first-token logit: the blind control scored as a forced choice,
    so a model that cannot see lands at chance instead of below it (free decoding may leave the answer set)."""
    vlm = _vlm(model)
    runner = interp.intervene(vlm, *_blocked(block_vision))
    out = []
    for i in range(0, len(samples), batch_size):
        chunk = samples[i:i + batch_size]
        batch = vlm.prepare(images=[s.image for s in chunk], questions=[s.question for s in chunk])
        # positions as generate's prefill counts them: a left-padded row is computed as it would be alone
        logits = runner.forward(batch, inputs={"position_ids": vlm.generation_positions(batch)}).logits[:, -1]
        for row, s in zip(logits, chunk):  # row: [V]
            out.append(max(s.choices, key=lambda c: row[VOCAB[c]].item()))
    return out


def score(preds, samples, key=lambda s: s.family) -> dict:
    """Accuracy per group {key(sample): {"acc", "n", "ci95"}} of predicted answers against samples' answers
    (exact match after VQA normalisation; ci95: Wilson)."""
    res = {}
    for g in dict.fromkeys(key(s) for s in samples):
        hits = [exact_match(p, s.answer) == 1.0 for p, s in zip(preds, samples) if key(s) == g]
        res[g] = {"acc": sum(hits) / len(hits), "n": len(hits), "ci95": wilson_ci(sum(hits), len(hits))}
    return res


def by_answer(preds, samples) -> dict:
    """{family: {answer: {"acc", "n", "ci95"}}}: a family mean can hide a half it never learned (spatial
    above/below right, left/right at chance)."""
    out = {f: {} for f in dict.fromkeys(s.family for s in samples)}
    for (f, a), r in sorted(score(preds, samples, key=lambda s: (s.family, s.answer)).items()):
        out[f][a] = r
    return out


def evaluate(model, samples, *, block_vision=False, forced_choice=False, preds_out=None) -> dict:
    """Per-family accuracy {family: {"acc", "n", "ci95"}} and "overall" (mean over families).

    Greedy decoding, or with forced_choice the best-scoring of the sample's choices; preds_out (a list)
    receives the predictions. Leaves `model` in eval mode."""
    preds = (choose if forced_choice else greedy)(model, samples, block_vision=block_vision)
    if preds_out is not None:
        preds_out.extend(preds)
    res = score(preds, samples)
    res["overall"] = {"acc": float(np.mean([r["acc"] for r in res.values()]))}
    return res


def blind_best(samples) -> dict[str, float]:
    """Per family, the accuracy of the best guesser who sees the question's choices but not the image (the most
    common answer among samples with the same choices): chance on this very set, where 1/len(choices) holds only
    in expectation (a blind model that always says "no" scores the set's share of "no")."""
    groups: dict[str, dict] = {}
    for s in samples:
        groups.setdefault(s.family, {}).setdefault(tuple(s.choices), []).append(s.answer)
    return {f: sum(max(map(a.count, set(a))) for a in g.values()) / sum(map(len, g.values()))
            for f, g in groups.items()}


def targets(card) -> dict:
    """Check the card against the toy's targets: overall in [.6, .9]; per family ≥ chance + .20 and, with
    vision blocked, ≤ chance + .05, chance there being the larger of 1/len(choices) and blind_best on the eval
    set (below it is expected: a blind model may answer outside the choices; the forced-choice blind accuracy,
    reported beside it, shows where it lands among them). Families that miss belong out of scenes.FAMILIES."""
    ev = card["eval"]
    per = {}
    for f in card["families"]:
        above = ev["accuracy"][f]["acc"] - ev["chance"][f]
        blind = ev["accuracy_vision_blocked"][f]["acc"] - max(ev["chance"][f], ev.get("blind_best", {}).get(f, 0))
        forced = ev["accuracy_vision_blocked_forced_choice"][f]["acc"] - ev["chance"][f]
        per[f] = {"above_chance": round(above, 4), "blocked_above_chance": round(blind, 4),
                  "blocked_forced_choice_minus_chance": round(forced, 4),
                  "met": above >= 0.20 - 1e-9 and blind <= 0.05 + 1e-9}
    met = [f for f in per if per[f]["met"]]
    overall = float(np.mean([ev["accuracy"][f]["acc"] for f in met])) if met else 0.0
    return {"per_family": per, "default_families": met, "overall_on_default_families": overall,
            "overall_in_0.6_0.9": 0.6 <= overall <= 0.9}


def held_out(model, families, per_family: int, log=print) -> dict:
    """The card's "eval" section: greedy accuracy (and by true answer), the blind control (greedy and forced
    choice) and chance, on `per_family` held-out scenes (scenes.EVAL_SEED) of each family."""
    test = scenes.dataset(per_family * len(families), seed=scenes.EVAL_SEED, families=families)
    vlm = as_vlm(model)
    preds = []
    acc = evaluate(vlm, test, preds_out=preds)
    blind = evaluate(vlm, test, block_vision=True)
    forced = evaluate(vlm, test, block_vision=True, forced_choice=True)
    split = by_answer(preds, test)
    log(f"eval\n  acc {json.dumps(acc)}\n  by answer {json.dumps(split)}\n  blocked {json.dumps(blind)}\n"
        f"  blocked, forced choice {json.dumps(forced)}")
    return {"seed": scenes.EVAL_SEED, "per_family": per_family,
            "metric": f"greedy decode (≤ {MAX_NEW_TOKENS} tokens, interp.evaluate), exact match "
                      "(interp.data.scoring); ci95 = Wilson (interp.stats.wilson_ci)",
            "accuracy": acc, "accuracy_by_answer": split, "accuracy_vision_blocked": blind,
            "accuracy_vision_blocked_forced_choice": forced,
            "vision_blocked": "interp.EdgeMask('text', 'vision'): every text query → image key edge cut, "
                              "every layer",
            "chance": {f: scenes.CHANCE[f] for f in families}, "blind_best": blind_best(test)}


def git_rev() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
                              cwd=os.path.dirname(__file__)).stdout.strip()
    except Exception:  # not a checkout, or no git: the card says so
        return None


def make_card(model, families, *, commands, training, eval_) -> dict:
    """The model card: how the model was made (`commands`, `training`), what it is, how it scores (`eval_`,
    from `held_out`) and whether it meets the toy's targets."""
    card = {
        "command": commands[-1],
        "commands": list(commands),  # every invocation (first, then each --resume)
        "git_revision": git_rev(),
        "architecture": "LlavaForConditionalGeneration (CLIP vision tower + Llama decoder)",
        "parameters": sum(p.numel() for p in model.parameters()),
        "decoder_layers": model.config.text_config.num_hidden_layers,
        "config": model.config.to_dict(),
        "families": list(families),
        "training": training,
        "eval": eval_,
    }
    card["targets"] = targets(card)
    return card


def write(model, card, out) -> None:
    """The HF checkpoint (model.safetensors, config), the processor and model_card.json into `out`, each file
    fsynced and renamed over the old one; other files there (train_state.pt) stay."""
    os.makedirs(out, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".final.", dir=out)  # inside out: the renames stay on one filesystem
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        _processor().save_pretrained(tmp)
        with open(os.path.join(tmp, "model_card.json"), "w") as f:
            json.dump(card, f, indent=1)
        publish(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # gone already unless a write failed
