"""`FixedMap`: a map that is not learned, injected where VIF injects its map — the ablation's controls.

    uniform = FixedMap(kind="uniform", layers=(6, 7))                 # every vision token alike
    oracle = FixedMap(kind="boxes", layers=(6, 7)).for_samples(chunk)  # the evidence boxes as a map
    out = interp.intervene(vlm, oracle).generate(batch, max_new_tokens=1)

Same blend as VIF (Eqs. 6–7): A' = (1 − α)·A + α·M on the query rows × vision columns, masked entries zeroed,
rows renormalised. kind="boxes": M is uniform over the vision tokens whose patch overlaps one of the row's
evidence boxes (`layout.boxes_to_mask`); a row whose boxes cover no token falls back to uniform (counted in
the diagnostics). Diagnostics: maps (per layer one [B, Nv] float32, like VIF's), applied, entries, kept,
visible (InjectAttention's), fallback_rows.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from interp.attention.inject import InjectAttention
from interp.engine import Intervention
from interp.engine.plan import layer_tuple
from interp.errors import InputError
from interp.layout import check_group

KINDS = ("uniform", "boxes")


@dataclass(frozen=True, eq=False)
class FixedMap(Intervention):
    """A uniform or evidence-box map over the vision tokens, blended into attention at `layers`.

    kind: "uniform" | "boxes"; layers: injection layers (VIF's: `[i for _, i in vif.pairs_for(vlm)]`);
    boxes: per batch row a list of pixel boxes (kind "boxes"; set with `for_samples`); alpha, decode, queries:
    as VIF (prefill only by default, the reference's choice).
    """

    kind: str = "uniform"
    layers: tuple = ()
    boxes: tuple | None = None
    alpha: float = 0.5
    decode: bool = False
    queries: object = "after_image"
    name: str = "focus"

    def __post_init__(self):
        if self.kind not in KINDS:
            raise InputError(f"FixedMap kind must be one of {KINDS}, got {self.kind!r}")
        object.__setattr__(self, "layers", layer_tuple(self.layers, self.name))
        if not self.layers:
            raise InputError("FixedMap needs injection layers, e.g. layers=(6, 7)")
        a = self.alpha
        if isinstance(a, bool) or not isinstance(a, (int, float)) or not 0.0 <= float(a) <= 1.0:
            raise InputError(f"FixedMap alpha must be a number in [0, 1] (A' = (1 − α)·A + α·M), got {a!r}")
        check_group(self.queries, f"{self.name} queries")

    def __repr__(self):
        return (f"FixedMap(kind={self.kind!r}, layers={self.layers}, alpha={self.alpha}, decode={self.decode}, "
                f"queries={self.queries!r}, name={self.name!r})")

    def for_samples(self, samples) -> "FixedMap":
        """A copy holding each sample's evidence boxes (kind "boxes"; a no-op for "uniform")."""
        if self.kind != "boxes":
            return self
        return replace(self, boxes=tuple(tuple(tuple(b) for b in s.boxes) for s in samples))

    def settings(self) -> dict:
        """What a checkpoint stores to rebuild this value (boxes are per batch, never saved)."""
        q = self.queries if isinstance(self.queries, str) else "after_image"
        return {"kind": self.kind, "layers": list(self.layers), "alpha": float(self.alpha),
                "decode": bool(self.decode), "queries": q, "name": self.name}

    def maps(self, layout) -> tuple:
        """(map [B, Nv] float32 over each row's vision tokens in sequence order, 0 past a row's tokens;
        fallback [B] bool: rows whose boxes cover no vision token, given the uniform map)."""
        from interp.vif.intervention import vision_geometry

        _, on_piece, valid = vision_geometry(layout)
        sel = on_piece & valid
        fallback = torch.zeros(sel.shape[0], dtype=torch.bool)
        if self.kind == "boxes":
            if self.boxes is None or len(self.boxes) != layout.batch_size:
                raise InputError("FixedMap(kind='boxes') needs each row's evidence boxes: "
                                 "fixed.for_samples(samples) with the batch's samples")
            vpos = layout.vision_positions()
            box = torch.gather(layout.boxes_to_mask([list(b) for b in self.boxes]), 1, vpos.clamp(min=0)) & sel
            fallback = ~box.any(1)
            sel = torch.where(fallback[:, None], sel, box)
        m = sel.float()
        return m / m.sum(1, keepdim=True).clamp(min=1), fallback

    def prepare(self, ctx):
        s = ctx.scratch(self)
        m, fallback = self.maps(ctx.batch.layout)  # per prompt row (boxes are); InjectAttention repeats them
        s["map"], s["fallback"] = ctx.rows(m), int(fallback.sum())  # for HF's beam expansion
        # the injection (Eqs. 6–7) is InjectAttention's, with this batch's map as weights; it reports as this value
        s["inject"] = InjectAttention(layers=self.layers, queries=self.queries, keys="vision", weights=m,
                                      alpha=self.alpha, mode="convex", decode=self.decode, name=self.name)
        s["inject"].prepare(ctx)

    def edits(self, ctx):
        return ctx.scratch(self)["inject"].edits(ctx)  # its target: the plan refuses a mask that cuts them all

    def finish(self, ctx) -> dict:
        """maps: per layer the [B, Nv] map; applied, entries, kept, visible (InjectAttention's); fallback_rows."""
        s = ctx.scratch(self)
        return {"maps": [s["map"].cpu()] * len(self.layers), **s["inject"].finish(ctx), "fallback_rows": s["fallback"]}
