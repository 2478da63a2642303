"""What each training stage learns from: its batches (scenes with per-patch labels) and its loss.

    px, y = stage_a_batch(step, 128, seed)                   # stage A: tower + linear per-patch head
    loss = stage_a_loss(tower, head, px, y)[0]
    batch = stage_b_batch(step, 64, seed, families)          # stage B and continuations: VQA
    loss = stage_b_loss(model, *batch, aux=aux, aux_weight=1.0)

Every batch is a pure function of (step, seed, families, ...), so a resumed stage sees the batches it would have.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from interp.toy import scenes
from interp.toy.model import GRID, encode, pixels
from interp.toy.processor import PATCH

HEAD = {"color": 1 + len(scenes.COLORS), "shape": 1 + len(scenes.SHAPES), "size": 3, "centre": 2,
        "row": GRID, "col": GRID}


def patch_labels(objs) -> dict[str, np.ndarray]:
    """Per-patch targets [GRID*GRID] for one scene: the object with most pixels in the patch (≥ 4) else bg=0."""
    owner = np.zeros((scenes.SIZE, scenes.SIZE), np.int64)  # 0 = background, k+1 = objs[k]
    centre = np.zeros(GRID * GRID, np.int64)
    for k, o in enumerate(objs):
        x0, y0, x1, y1 = o.box
        owner[y0:y1, x0:x1][scenes.footprint(o)] = k + 1
        cx, cy = o.center
        centre[int(cy) // PATCH * GRID + int(cx) // PATCH] = 1
    onehot = np.eye(len(objs) + 1, dtype=np.int64)[owner]  # [H, W, n+1]
    counts = onehot.reshape(GRID, PATCH, GRID, PATCH, -1).sum((1, 3)).reshape(GRID * GRID, -1)
    counts[:, 0] = 0
    top = counts.argmax(1)
    top[counts.max(1) < 4] = 0
    colors, shapes = list(scenes.COLORS), list(scenes.SHAPES)
    table = np.array([[0, 0, 0]] + [[1 + colors.index(o.color), 1 + shapes.index(o.shape),
                                     1 + (o.size == "large")] for o in objs])[top]
    idx = np.arange(GRID * GRID)
    return {"color": table[:, 0], "shape": table[:, 1], "size": table[:, 2], "centre": centre,
            "row": idx // GRID, "col": idx % GRID}


def stage_a_batch(step: int, n: int, seed: int):
    """Stage A's batch `step`: pixel_values [n, 3, 64, 64] of scenes over ALL_FAMILIES, per-patch labels
    {head: [n, 64]}."""
    fams = scenes.ALL_FAMILIES
    made = [scenes.make(fams[i % len(fams)], scenes.TRAIN_SEED_BASE + 7919 * seed + step, i) for i in range(n)]
    labels = [patch_labels(objs) for _, objs in made]
    y = {k: torch.from_numpy(np.stack([lab[k] for lab in labels])) for k in HEAD}  # each [B, 64]
    return pixels([s.image for s, _ in made]), y


def stage_a_loss(tower, head, px, y):
    """Summed per-patch cross-entropies of a linear `head` on the tower's patch tokens, and the head's logits
    (one [B, 64, n] per HEAD key)."""
    h = tower(pixel_values=px).last_hidden_state[:, 1:]  # [B, 64, 64], CLS dropped as in "default"
    logits = head(h).split(list(HEAD.values()), dim=-1)
    losses = {k: F.cross_entropy(lg.flatten(0, 1), y[k].flatten()) for k, lg in zip(HEAD, logits)}
    return sum(losses.values()), logits


def restricted(family: str, seed: int, i: int, n: int, *, max_objects=scenes.MAX_OBJECTS, answers=None):
    """scenes.make(family, seed, i), or with answers (a set of answer words) the first of indices i, i + n,
    i + 2n, ... whose answer is in it. Families none of whose choices are in answers are not restricted, so a
    mixed batch can narrow one family (spatial to left/right) and leave the others as they are."""
    if answers and set(scenes.CHOICES.get(family, ())) & answers:  # an unknown family: make says which
        while (made := scenes.make(family, seed, i, max_objects=max_objects))[0].answer not in answers:
            i += n
        return made
    return scenes.make(family, seed, i, max_objects=max_objects)


def stage_b_batch(step: int, n: int, seed: int, families, offset: int = 500_000, max_objects=scenes.MAX_OBJECTS,
                  answers=None):
    """The samples of scenes.dataset(n, seed=..., families, max_objects), encoded, with their patch labels;
    with answers, each family whose choices meet the set only asks questions answered from it (`restricted`)."""
    seed = scenes.TRAIN_SEED_BASE + 7919 * seed + offset + step
    made = [restricted(families[i % len(families)], seed, i, n, max_objects=max_objects, answers=answers)
            for i in range(n)]
    samples = [s for s, _ in made]
    ids, mask, pos = encode(samples, with_answer=True)
    # Loss on the answer word(s) and </s>: the last two positions of every (left-padded) row.
    labels = torch.full_like(ids, -100)
    labels[:, -2:] = ids[:, -2:]
    patches = [patch_labels(objs) for _, objs in made]
    y = {k: torch.from_numpy(np.stack([lab[k] for lab in patches])) for k in HEAD}  # each [B, 64]
    return pixels([s.image for s in samples]), ids, mask, pos, labels, y


def stage_b_loss(model, px, ids, mask, pos, labels, y, aux=None, aux_weight=0.0):
    """Answer cross-entropy; with aux, plus aux_weight × the per-patch label losses of a linear head on the
    projector's output. Without it the projector drops what no answer needed yet (patch column: tower 1.00,
    projector .59 linear-probe accuracy after stage B), and a family that needs it (spatial) cannot start."""
    grab = {}
    hook = aux is not None and model.model.multi_modal_projector.register_forward_hook(
        lambda mod, inp, out: grab.__setitem__("h", out))
    try:
        logits = model(input_ids=ids, pixel_values=px, attention_mask=mask, position_ids=pos).logits
    finally:
        if hook:
            hook.remove()
    loss = F.cross_entropy(logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten(), ignore_index=-100)
    if aux is not None:
        parts = aux(grab["h"].reshape(len(px), -1, grab["h"].shape[-1])).split(list(HEAD.values()), dim=-1)
        loss = loss + aux_weight * sum(F.cross_entropy(lg.flatten(0, 1), y[k].flatten()) for k, lg in zip(HEAD, parts))
    return loss
