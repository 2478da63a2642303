"""`interp.VIF`: the trained CVAE as an intervention (VIF paper §4.3, Eqs. 1–7).

At each extraction layer's output the CVAE reads the hidden states of the vision and question tokens
(prior branch; the posterior also reads the answer tokens while training), decodes a Gaussian mixture and
renders it on the row's vision tokens; at the paired injection layer's attention call an `InjectAttention`
whose weights are that map blends it into the attention probabilities of text-query rows × vision-key columns:

    A' = (1 − α)·A + α·M   on text rows × vision columns          (Eq. 6, the reference's convex form)
    A'' = RowNorm(A' ⊙ visible)                                    (Eq. 7: masked entries stay zero)

so an edge cut by `EdgeMask` / AIF stays exactly zero under VIF.

    vif = interp.VIF.load("interp/vif/checkpoints/ablation/vif_frozen", vlm)   # or interp.VIF.build(vlm) (untrained)
    vlm2, vif2 = interp.vif.load_joint("interp/vif/checkpoints/toy")           # the shipped toy VIF: trained with its base
    out = interp.intervene(vlm, vif).generate(batch, max_new_tokens=4)
    out.diagnostics["vif"]["maps"][0]                              # [B, Nv] map of the first pair
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace

import torch

from interp.attention.inject import InjectAttention
from interp.errors import InputError, SiteError
from interp.engine import EditOutput, Intervention, repeat_layout
from interp.engine.core import describe
from interp.layout import check_group
from interp.vif.cvae import CVAE, VIFConfig
from interp.vif.gmm import GMMParams, gmm_entropy, gmm_volume, grid_points, render_gmm_points

# LLaVA-1.5-7B (32 decoder layers): extract at 11, 13, 15, 17 → inject at 25, 27, 29, 31 (paper §5.1).
PAPER_PAIRS = ((11, 25), (13, 27), (15, 29), (17, 31))
PAPER_LAYERS = 32
NORMALIZE = ("paper", "reference")


def scale_pairs(num_layers: int, pairs=PAPER_PAIRS, reference_layers: int = PAPER_LAYERS) -> tuple:
    """The paper's layer pairs scaled to a model with `num_layers` decoder layers.

    Rule: each layer keeps its relative depth, ℓ' = round(ℓ · (L − 1) / (L_ref − 1)) with halves rounded up,
    so layer 0 stays 0 and the last layer stays last. Pairs whose injection layer repeats an earlier pair's
    are dropped (one map per injection layer), as are pairs with ℓ'_extract ≥ ℓ'_inject.

        scale_pairs(32) == PAPER_PAIRS;  scale_pairs(8) == ((2, 6), (3, 7));  scale_pairs(4) == ((1, 2), (1, 3))
    """
    L, R = int(num_layers), int(reference_layers)
    if L < 2:
        raise InputError(f"VIF needs at least 2 decoder layers (extract below, inject above); the model has {L}")

    def scale(l):  # round half up, in integers (no float ties)
        return (2 * l * (L - 1) + (R - 1)) // (2 * (R - 1))

    out, seen = [], set()
    for e, i in pairs:
        e2, i2 = scale(int(e)), scale(int(i))
        if e2 < i2 and i2 not in seen:
            out.append((e2, i2))
            seen.add(i2)
    if not out:
        raise InputError(f"no (extract < inject) pair survives scaling {tuple(pairs)} to {L} layers; pass pairs=")
    return tuple(out)


def check_pairs(pairs, num_layers: int) -> tuple:
    """Validate explicit pairs: ((extract, inject), ...), extract < inject < L, injection layers distinct."""
    try:
        pairs = tuple((int(e), int(i)) for e, i in pairs)
    except (TypeError, ValueError):
        raise InputError(f"pairs must be ((extract, inject), ...) layer indices, got {pairs!r}") from None
    if not pairs:
        raise InputError("VIF needs at least one (extract, inject) pair")
    for e, i in pairs:
        if not 0 <= e < i < num_layers:
            raise InputError(f"VIF pair ({e}, {i}) must satisfy 0 ≤ extract < inject < {num_layers} (the model's "
                             "layer count): the map is computed at the extraction layer's output and injected later")
    inj = [i for _, i in pairs]
    if len(set(inj)) != len(inj):
        raise InputError(f"VIF pairs {pairs} inject twice into one layer; give each injection layer one pair")
    return pairs


# --------------------------------------------------------------------------------------------- geometry


def vision_geometry(layout, coords: str = "centers"):
    """Where each vision token sits on its image, in the frame of the image's main piece.

    Returns (points [B, Nv, 2] float32, on_piece [B, Nv] bool, valid [B, Nv] bool). The main piece (LLaVA's
    grid, LLaVA-NeXT's base image, Idefics3's global image, Qwen's merged grid) gets exactly
    `grid_points(grid, coords)`, so a single-grid map is `render_gmm` on that grid; tokens of other pieces
    (tiles) get their patch centre mapped into the main piece's pixel region, so one mixture lights the same
    spot of the picture in every piece. Tokens that cover no patch (image-newline, a CLS token) are off-piece.
    `valid` is False on padding entries of rows with fewer vision tokens.
    """
    vpos = layout.vision_positions()  # [B, Nv]
    B, Nv = vpos.shape
    points = torch.zeros(B, Nv, 2)
    on_piece = torch.zeros(B, Nv, dtype=torch.bool)
    index = torch.full((layout.seq_len,), -1, dtype=torch.long)
    for b in range(B):
        index.fill_(-1)
        pos = vpos[b][vpos[b] >= 0]
        index[pos] = torch.arange(len(pos))
        for img in layout.images[b]:
            main = img.main
            mb = main.boxes.double()
            x0, y0 = float(mb[:, 0].min()), float(mb[:, 1].min())
            w = max(float(mb[:, 2].max()) - x0, 1e-9)
            h = max(float(mb[:, 3].max()) - y0, 1e-9)
            for piece in img.pieces:
                idx = index[piece.positions]
                if piece is main:
                    pts = grid_points(piece.grid, coords=coords)
                else:
                    pb = piece.boxes.double()
                    pts = torch.stack([((pb[:, 0] + pb[:, 2]) / 2 - x0) / w, ((pb[:, 1] + pb[:, 3]) / 2 - y0) / h], 1)
                points[b, idx] = pts.float()
                on_piece[b, idx] = True
    return points, on_piece, vpos >= 0


def _gather(h: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """h [B, T, D], pos [B, N] long (-1 = none) → [B, N, D] (zeros where pos < 0)."""
    idx = pos.clamp(min=0)[..., None].expand(-1, -1, h.shape[-1])
    return torch.gather(h, 1, idx) * (pos >= 0)[..., None].to(h.dtype)


def _positions(group: torch.Tensor) -> torch.Tensor:
    """bool [B, T] → [B, N] long positions in sequence order, -1 padded."""
    n = int(group.sum(1).max()) if group.numel() else 0
    out = torch.full((group.shape[0], max(n, 1)), -1, dtype=torch.long)
    for b in range(group.shape[0]):
        p = group[b].nonzero().squeeze(1)
        out[b, : len(p)] = p
    return out


def fingerprint(module: torch.nn.Module) -> str:
    """Short sha1 of a module's parameters and buffers (tells two trainings of one architecture apart)."""
    h = hashlib.sha1()
    for k, v in sorted(module.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().float().numpy().tobytes())
    return h.hexdigest()[:10]


# --------------------------------------------------------------------------------------------- intervention


@dataclass(frozen=True, eq=False)
class VIF(Intervention):
    """Variational Information Flow: CVAE focus maps from middle layers injected into deep-layer attention.

    module: a `CVAE` (trained: `VIF.load(path, vlm)`; untrained: `VIF.build(vlm)`).
    pairs: ((extract, inject), ...); None = the paper's LLaVA-1.5 pairs scaled to the model (`scale_pairs`).
    alpha: injection strength α of A' = (1 − α)·A + α·M (0 = no-op, bit-identical to the plain model).
    normalize: "paper" (sum-normalised map, patch-centre points) or "reference" (softmax over the map,
        linspace points; the public code's choice, nearly uniform: see `gmm.py`).
    decode: False = inject during prefill only (reference); True = at every decode step too (the prefill map).
    sample: False = the prior mean (deterministic, default); True = z drawn from the prior (Eq. 1).
    positions: feed each vision token's (x, y) to the CVAE (our addition; False = reference behaviour, the
        CVAE then localises only from what the hidden states carry).
    queries: the text-query rows that get the map ("after_image": question, template, answer and generated
        tokens, the default; or any token group / bool [B, T]).
    training: teacher-forced training pass: z from the posterior (question + answer tokens, reparameterised
        sample) and the loss terms KL, entropy and volume in the diagnostics (graph attached).
    detach: the CVAE reads the base's hidden states detached (True, a frozen base); False lets the CVAE's
        loss terms reach the base, as the reference's joint fine-tune does (its hook reads `output[0]` as is).

    Diagnostics (`out.diagnostics[name]`): pairs; maps (per pair [B, Nv] float32 over the row's vision tokens
    in sequence order, NaN padded, 0 on tokens that cover no patch); mixtures (per pair a `GMMParams`);
    source ("prior" / "posterior"); applied, entries, kept, visible (the injection's, as `InjectAttention`'s);
    while training also kl, entropy, volume (scalars).
    """

    module: CVAE | None = None
    pairs: tuple | None = None
    alpha: float = 0.5
    normalize: str = "paper"
    decode: bool = False
    sample: bool = False
    positions: bool = True
    queries: object = "after_image"
    training: bool = False
    detach: bool = True
    name: str = "vif"

    def __post_init__(self):
        if self.normalize not in NORMALIZE:
            raise InputError(f"VIF normalize must be one of {NORMALIZE}, got {self.normalize!r}")
        a = self.alpha
        if isinstance(a, bool) or not isinstance(a, (int, float)) or not 0.0 <= float(a) <= 1.0:
            raise InputError(f"VIF alpha must be a number in [0, 1] (A' = (1 − α)·A + α·M), got {a!r}")
        check_group(self.queries, f"{self.name} queries")
        if self.module is not None and not isinstance(self.module, CVAE):
            raise InputError(f"VIF module must be an interp CVAE, got {type(self.module).__name__}")
        if self.pairs is not None:
            object.__setattr__(self, "pairs", check_pairs(self.pairs, 10**9))

    def __repr__(self):
        m = self.module
        mod = "None" if m is None else (f"CVAE(d_model={m.cfg.d_model}, width={m.cfg.width}, latent={m.cfg.latent}, "
                                        f"K={m.cfg.n_components}, sha={fingerprint(m)})")
        return (f"VIF(pairs={self.pairs}, alpha={self.alpha}, normalize={self.normalize!r}, decode={self.decode}, "
                f"sample={self.sample}, positions={self.positions}, queries={self.queries!r}, "
                f"training={self.training}, name={self.name!r}, module={mod})")

    # ----------------------------------------------------------------------------------- construction
    @classmethod
    def build(cls, vlm, *, seed: int = 0, width: int = 64, latent: int = 32, n_heads: int = 4, n_queries: int = 16,
              n_components: int = 16, min_sigma: float = 0.035, **fields) -> "VIF":
        """An untrained VIF for `vlm`: a fresh CVAE (seeded) at the model's hidden size, on its device, with the
        paper's pairs scaled to its depth unless `pairs=` is given. Other fields (alpha, normalize, ...) pass."""
        ident = vlm.identity()
        cfg = VIFConfig(d_model=ident["hidden_size"], width=width, latent=latent, n_heads=n_heads,
                        n_queries=n_queries, n_components=n_components, min_sigma=min_sigma)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            module = CVAE(cfg)
        module = module.to(vlm.device)
        pairs = fields.pop("pairs", None)
        pairs = scale_pairs(ident["num_layers"]) if pairs is None else check_pairs(pairs, ident["num_layers"])
        return cls(module=module, pairs=pairs, **fields)

    @classmethod
    def load(cls, path, vlm, *, allow_other_base: bool = False, **fields) -> "VIF":
        """A trained VIF from a checkpoint directory (or its vif.json); refuses one made for another base model
        (`CheckpointError`): another architecture or size, or other base weights (a fingerprint of the input
        embedding and output head, `VLM.weights_fingerprint`); `allow_other_base=True` accepts other weights of
        the same architecture. `fields` override the saved alpha / normalize / decode / sample / queries."""
        from interp.vif.checkpoint import _dir, load_parts, read_config
        from interp.vif.identity import check_identity
        from interp.vif.joint import check_base

        cfg = read_config(path)
        check_identity(cfg.get("base_model", {}), vlm.identity(), _dir(path))
        if cfg.get("base") and not allow_other_base:  # trained jointly with a fine-tuned base
            check_base(_dir(path), vlm)  # its message says how to load that base (interp.vif.load_joint)
        module, saved = load_parts(path, vlm, allow_other_base=allow_other_base)
        return cls(module=module, **{**saved, **fields})

    def save(self, path, vlm, *, extra: dict | None = None):
        """Write the CVAE weights (safetensors) and config + base-model identity (JSON) into directory `path`."""
        from interp.vif.checkpoint import save_vif

        return save_vif(self, path, vlm, extra=extra)

    def with_(self, **changes) -> "VIF":
        """A copy with some fields changed (same module object): `vif.with_(alpha=0.0)`."""
        return replace(self, **changes)

    # ----------------------------------------------------------------------------------- engine hooks
    def pairs_for(self, vlm) -> tuple:
        """The ((extract, inject), ...) pairs this VIF uses on `vlm` (`pairs`, or the scaled paper pairs)."""
        L = vlm.num_layers
        return scale_pairs(L) if self.pairs is None else check_pairs(self.pairs, L)

    def prepare(self, ctx):
        if self.module is None:
            raise InputError("VIF has no CVAE: use interp.VIF.load(path, vlm) for a trained one or "
                             "interp.VIF.build(vlm) for an untrained one")
        d = ctx.vlm.identity()["hidden_size"]
        if self.module.cfg.d_model != d:
            raise InputError(f"VIF's CVAE reads hidden size {self.module.cfg.d_model} but the model's is {d}; "
                             "build or train a VIF for this model")
        s = ctx.scratch(self)
        s.clear()
        lay = ctx.batch.layout
        if not bool(lay.vision.any(1).all()):
            raise InputError("VIF: every row needs vision tokens (an image)")
        if not bool(lay.question.any(1).all()):
            raise InputError("VIF: every row needs question tokens after the image")
        if self.training and not bool(lay.answer.any(1).all()):
            raise InputError("VIF training needs teacher-forced answers in every row: "
                             "vlm.prepare(images, questions, answers=[...])")
        s["pairs"] = pairs = self.pairs_for(ctx.vlm)
        lay = repeat_layout(lay, ctx.expand)  # HF generate's beams / return sequences
        coords = "centers" if self.normalize == "paper" else "reference"
        points, on_piece, valid = vision_geometry(lay, coords)
        s["points"], s["on_piece"], s["valid"] = points, on_piece, valid
        s["vpos"] = lay.vision_positions()
        s["qpos"] = _positions(lay.question)
        if self.training:
            s["qapos"] = _positions(lay.question | lay.answer)
        if not bool((ctx.group(self.queries).cpu() & ctx.layout.text).any()):
            raise InputError(f"VIF: query group {describe(self.queries)} selects no text token")
        s["maps"], s["weights"], s["mix"], s["terms"] = {}, {}, {}, {}
        # the injection (Eqs. 6–7) is InjectAttention's, its weights at each injection layer the map its pair's
        # extraction layer rendered earlier in the same pass (`_map`); it reports under this VIF's name
        s["inject"] = InjectAttention(layers=tuple(i for _, i in pairs), queries=self.queries, keys="vision",
                                      weights=self._map, alpha=self.alpha, mode="convex", decode=self.decode,
                                      name=self.name)
        s["inject"].prepare(ctx)

    def edits(self, ctx):
        s = ctx.scratch(self)
        read = EditOutput("resid", tuple(sorted({e for e, _ in s["pairs"]})), self._extract, start=0)
        # alpha = 0: InjectAttention declares nothing, the maps are still read (diagnostics), bit-identical logits
        return [read, *s["inject"].edits(ctx)]

    def _extract(self, ctx, layer, value):
        """At extraction layer `layer`'s output (resid [B, T, D], prefill only): the CVAE's mixture and its map."""
        if ctx.step > 0:
            return None
        s = ctx.scratch(self)
        m = self.module
        dev = next(m.parameters()).device
        h = (value.detach() if self.detach else value).to(dev)  # [B, T, D]

        def take(pos):
            pos = pos.to(dev)
            return _gather(h, pos), pos >= 0

        vis, vmask = take(s["vpos"])  # [B, Nv, D]
        vmask = vmask & s["on_piece"].to(dev)
        q, qmask = take(s["qpos"])
        qa, qamask = take(s["qapos"]) if self.training else (None, None)
        xy = s["points"].to(dev) if self.positions else None
        out = m(vis, q, qa, vision_mask=vmask, q_mask=qmask, qa_mask=qamask, vision_xy=xy,
                sample=self.training or self.sample)
        mix = out.mixture
        maps = render_gmm_points(mix.centers, mix.sigmas, mix.weights, s["points"].to(dev), vmask,
                                 normalize=self.normalize)  # [B, Nv], 0 where vmask is False
        s["weights"][layer] = maps  # what InjectAttention blends in: 0 past a row's own vision tokens
        s["maps"][layer] = torch.where(s["valid"].to(dev), maps, torch.full_like(maps, float("nan")))
        s["mix"][layer] = mix
        s["source"] = out.source
        if self.training:
            from interp.vif.diagnostics import kl_per_dim

            s["terms"][layer] = (m.kl(out.post, out.prior), gmm_entropy(maps).mean(),
                                 gmm_volume(mix.sigmas, mix.weights).mean(), kl_per_dim(out.post, out.prior))
        return None

    def _map(self, ctx, call) -> torch.Tensor:
        """InjectAttention's weights at injection layer `call.layer`: the map [B, Nv] of its pair's extraction layer."""
        s = ctx.scratch(self)
        e = dict((i, e) for e, i in s["pairs"])[call.layer]
        if e not in s["weights"]:
            raise SiteError(f"VIF: no map from extraction layer {e} before injection layer {call.layer}; the "
                            "layer output site did not run")
        return s["weights"][e]

    def finish(self, ctx) -> dict:
        s = ctx.scratch(self)
        pairs = s["pairs"]
        missing = [e for e, _ in pairs if e not in s["maps"]]
        if missing:
            raise SiteError(f"VIF: extraction layers {missing} never produced a map; was the forward interrupted?")
        inj = s["inject"].finish(ctx)  # applied [(step, layer)]; entries / kept / visible per layer
        if float(self.alpha) != 0.0:
            done = {l for st, l in inj["applied"] if st == 0}
            lost = [i for _, i in pairs if i not in done]
            if lost:
                raise SiteError(f"VIF: injection layers {lost} never ran; was the forward interrupted?")

        def keep(t):
            return t if self.training else t.detach().cpu()

        out = {
            "pairs": list(pairs),
            "maps": [keep(s["maps"][e]) for e, _ in pairs],
            "mixtures": [GMMParams(*(keep(getattr(s["mix"][e], k)) for k in ("centers", "sigmas", "weights")))
                         for e, _ in pairs],
            "source": s.get("source"),
            **inj,
        }
        if self.training:  # one CVAE pass per distinct extraction layer; mean over them
            terms = list(s["terms"].values())
            out["kl"], out["entropy"], out["volume"], out["kl_dims"] = (torch.stack(t).mean(0) for t in zip(*terms))
        return out


def load_vif(path, vlm, **kw) -> VIF:
    """`interp.vif.load(path, vlm)`: the same as `VIF.load(path, vlm, **kw)`."""
    return VIF.load(path, vlm, **kw)
