"""Running a model over samples, for every analysis: chunks with a progress bar, a batch per chunk, greedy answers
and their scores, and the token helpers that map evidence boxes and vision tokens between a row's positions
[B, T] and its vision tokens [B, Nv]."""

from __future__ import annotations

import sys

from interp.errors import InputError


def batches(samples, size: int, *, progress: bool = True, desc: str = ""):
    """Consecutive chunks of `samples`, with a progress bar over samples."""
    from tqdm.auto import tqdm

    if size < 1:
        raise InputError(f"batch_size must be >= 1, got {size}")
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


def generate_scores(vlm, batch, samples, interventions=(), *, max_new_tokens: int, metric: str = "auto"):
    """Greedy answers under `interventions` and their scores: (texts [B], scores [B] floats in [0, 1], output)."""
    import interp
    from interp.data.scoring import score

    out = interp.intervene(vlm, *interventions).generate(batch, max_new_tokens=max_new_tokens)
    return out.texts, [float(score(s, t, metric)) for s, t in zip(samples, out.texts)], out


# ------------------------------------------------------------------------------------------- tokens


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


def evidence(layout, samples):
    """bool [B, Nv]: the vision tokens whose patch overlaps one of the sample's evidence boxes."""
    return vision_index(layout, layout.boxes_to_mask([list(s.boxes) for s in samples]))


def grid_extent(piece) -> list:
    """[x0, y0, x1, y1] in image pixels covered by an image piece's token grid (`layout.images[b][0].main`)."""
    pb = piece.boxes
    return [float(pb[:, 0].min()), float(pb[:, 1].min()), float(pb[:, 2].max()), float(pb[:, 3].max())]
