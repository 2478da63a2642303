"""Posterior-collapse diagnostics of VIF training: KL per latent dimension, map entropy, map mass on the
evidence boxes, and a watch that warns when the KL stays near zero.

A collapsed CVAE has posterior = prior (KL → 0): the answer no longer shapes the latent, so the map cannot
depend on where the answer's evidence is beyond what the prior already guesses. On the toy the paper's
settings collapse within a few hundred steps (DESIGN.md, "VIF, precisely"); the trainer logs these numbers
every step and warns (`PosteriorCollapseWarning`) once the KL has stayed under `collapse_kl` for
`collapse_steps` steps in a row.

    ev, has = evidence_mask(batch.layout, samples)      # [B, Nv] bool, [B] bool (rows with boxes)
    stats = map_stats(maps, ev, has)                    # {"map_entropy", "map_mass", "box_area"}
"""

from __future__ import annotations

import math
import warnings

import torch

from interp.stats import entropy


class PosteriorCollapseWarning(UserWarning):
    """The CVAE's KL(posterior ‖ prior) stayed under the threshold: the posterior has collapsed onto the prior."""


def kl_per_dim(post: tuple, prior: tuple) -> torch.Tensor:
    """KL(q ‖ p) of diagonal Gaussians per latent dimension, mean over the batch: (mean, logvar) [B, Z] ×2 →
    [Z]. Its sum is `CVAE.kl`; free bits floor each entry (Kingma et al. 2016)."""
    (mq, lq), (mp, lp) = post, prior
    return (0.5 * (lp - lq + (lq.exp() + (mq - mp).pow(2)) * torch.exp(-lp) - 1.0)).mean(0)


def free_bits_kl(kl_dims: torch.Tensor, floor: float) -> torch.Tensor:
    """Σ_z max(KL_z, floor): below the floor a dimension's KL costs nothing, so nothing pushes it to 0.
    floor = 0 is the plain KL. kl_dims: [Z] → scalar."""
    return kl_dims.clamp(min=float(floor)).sum() if floor > 0 else kl_dims.sum()


def evidence_mask(layout, samples) -> tuple[torch.Tensor, torch.Tensor]:
    """(ev [B, Nv] bool: vision tokens whose patch overlaps one of the row's evidence boxes, in each row's
    vision-token order; has [B] bool: rows whose sample has boxes)."""
    boxes = [list(getattr(s, "boxes", None) or ()) for s in samples]
    vpos = layout.vision_positions()  # [B, Nv]
    mask = layout.boxes_to_mask(boxes)  # [B, T]
    ev = torch.gather(mask, 1, vpos.clamp(min=0)) & (vpos >= 0)
    return ev, torch.tensor([bool(b) for b in boxes])


def map_stats(maps, ev: torch.Tensor, has: torch.Tensor, *, rows: bool = False) -> dict:
    """Mean over rows of a map's entropy (nats), of its mass on the evidence tokens and of the evidence's
    share of the row's vision tokens (the mass a uniform map would put there). maps: [B, Nv] (NaN padded) or
    a list of them (one per VIF pair: averaged). Mass and area are over rows with boxes (NaN if none).
    rows=True: per-row values instead, [B] float64 tensors (NaN mass / area on rows without boxes)."""
    maps = maps if isinstance(maps, (list, tuple)) else [maps]
    ent, mass = [], []
    for m in maps:
        p = torch.nan_to_num(m.detach().float().cpu(), nan=0.0)  # [B, Nv]
        ent.append(entropy(p, dim=1))
        mass.append((p * ev.float()).sum(1))
    ent, mass = torch.stack(ent).mean(0), torch.stack(mass).mean(0)  # [B]
    n_vis = torch.isfinite(maps[0].detach().float().cpu()).sum(1).clamp(min=1)
    area = ev.float().sum(1) / n_vis
    h = has.bool()
    nan = float("nan")
    if rows:
        return {"map_entropy": ent.double(), "map_mass": torch.where(h, mass, nan).double(),
                "box_area": torch.where(h, area, nan).double()}
    return {"map_entropy": float(ent.mean()),
            "map_mass": float(mass[h].mean()) if h.any() else nan,
            "box_area": float(area[h].mean()) if h.any() else nan}


class CollapseWatch:
    """Counts consecutive steps with KL < threshold; `update` returns a message (and warns, once) when the run
    reaches `patience` of them. threshold: nats (summed over latent dims); patience: steps."""

    def __init__(self, threshold: float = 0.01, patience: int = 100):
        self.threshold, self.patience = float(threshold), int(patience)
        self.run, self.fired_at = 0, None

    def update(self, step: int, kl: float) -> str | None:
        self.run = self.run + 1 if (math.isfinite(kl) and kl < self.threshold) else 0
        if self.fired_at is not None or self.patience < 1 or self.run < self.patience:
            return None
        self.fired_at = step
        msg = (f"posterior collapse: KL(posterior ‖ prior) has stayed under {self.threshold:g} nats for "
               f"{self.run} steps (step {step}); the map no longer depends on the answer. Options that are not "
               "in the paper: KL annealing (TrainConfig.kl_anneal), free bits (TrainConfig.free_bits)")
        warnings.warn(msg, PosteriorCollapseWarning, stacklevel=3)
        return msg
