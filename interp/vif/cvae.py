"""The CVAE of VIF: encode (image, question[, answer]) hidden states into a latent, decode it into a GMM.

Pure torch (VIF paper §4.2–4.3, Eqs. 1–2). Shapes: B batch, Nv vision tokens, Nt text tokens, D the base
model's hidden size (`d_model`), W the internal `width`, Z the `latent` size, K mixture components.

    vision [B, Nv, D], text [B, Nt, D] ──FocusEncoder──► mean, logvar [B, Z]      (prior: question;
                                                                                   posterior: question+answer)
    z = mean + exp(½ logvar) · ε   (Eq. 1)  ──FocusDecoder──► GMMParams (centres, sigmas, weights)
    KL(posterior ‖ prior)          (Eq. 2)

Where we differ from the public reference code, and why:

- Width: the reference runs at the base model's width (4096 for LLaVA-1.5-7B → ~3.4B parameters); we
  project to a small `width` (64) first, so the module is ~1M parameters at D = 4096.
- One latent vector per sample (the learnable queries are mean-pooled before the heads) decoded into K
  components; the reference keeps one latent per query ("slot") and decodes one component per slot.
- Optional 2-D positions for vision tokens (`vision_xy`): attention is permutation-invariant, so without
  them the encoder can only localise from whatever position the base model's hidden states happen to
  carry; the reference passes none. Default None = reference behaviour.
- Padded tokens are masked as keys everywhere (the reference masks padded text only in one direction).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from interp.errors import InputError
from interp.vif.gmm import GMMParams


@dataclass(frozen=True)
class VIFConfig:
    """Sizes of the VIF module. Only `d_model` (the base LLM's hidden size) is required.

    width: internal width W (attention and FFN run at W; FFNs are 2W wide). latent: Z. n_heads: heads of
    every attention (W must divide by it). n_queries: learnable compression queries. n_components: K.
    min_sigma: floor of each component's spread (in image units, [0, 1]). logvar_clamp: log-variances are
    clamped to ±this (reference: 5).
    """

    d_model: int
    width: int = 64
    latent: int = 32
    n_heads: int = 4
    n_queries: int = 16
    n_components: int = 16
    min_sigma: float = 0.035
    logvar_clamp: float = 5.0

    def __post_init__(self):
        for name in ("d_model", "width", "latent", "n_heads", "n_queries", "n_components"):
            if int(getattr(self, name)) < 1:
                raise InputError(f"VIFConfig.{name} must be a positive integer, got {getattr(self, name)}.")
        if self.width % self.n_heads:
            raise InputError(
                f"VIFConfig.width={self.width} is not divisible by n_heads={self.n_heads}. "
                "Fix: choose a width that is a multiple of n_heads (e.g. width=64, n_heads=4)."
            )
        if not (self.min_sigma > 0 and self.logvar_clamp > 0):
            raise InputError("VIFConfig.min_sigma and logvar_clamp must be > 0.")


# ------------------------------------------------------------------------------------------ building blocks


def _check_tokens(x: torch.Tensor, mask: torch.Tensor | None, name: str, d_model: int) -> torch.Tensor:
    """Validate [B, N, D] features and their bool mask (True = valid); return the mask (all-True if None)."""
    if x.ndim != 3 or x.shape[-1] != d_model:
        raise InputError(
            f"`{name}` must be [B, N, d_model={d_model}], got shape {tuple(x.shape)}. "
            "Fix: pass hidden states of the base model's layer (check VIFConfig.d_model)."
        )
    if mask is None:
        return torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
    if mask.dtype != torch.bool or tuple(mask.shape) != tuple(x.shape[:2]):
        raise InputError(
            f"the mask of `{name}` must be bool [B, N] = {tuple(x.shape[:2])} (True = real token), "
            f"got {mask.dtype} {tuple(mask.shape)}. Fix: pass `mask.bool()` with one flag per token."
        )
    if not bool(mask.any(-1).all()):
        raise InputError(
            f"some rows of `{name}` have no valid token (mask all False); attention over nothing is undefined. "
            "Fix: drop those rows or check the token layout."
        )
    return mask


def _fourier_xy(xy: torch.Tensor, n_freq: int) -> torch.Tensor:
    """[B, N, 2] positions in [0, 1] → [B, N, 4 · n_freq] sin/cos features at frequencies π · 2^f."""
    freqs = math.pi * 2.0 ** torch.arange(n_freq, device=xy.device, dtype=xy.dtype)  # [F]
    ang = xy.unsqueeze(-1) * freqs  # [B, N, 2, F]
    return torch.cat([ang.sin(), ang.cos()], dim=-1).flatten(-2)  # [B, N, 4F]


class _Attn(nn.Module):
    """Pre-norm residual multi-head attention: x + MHA(LN(x), LN(ctx)) with masked padded keys."""

    def __init__(self, width: int, n_heads: int):
        super().__init__()
        self.norm_q = nn.LayerNorm(width)
        self.norm_kv = nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, n_heads, batch_first=True)

    def forward(self, x: torch.Tensor, ctx: torch.Tensor, ctx_mask: torch.Tensor) -> torch.Tensor:
        kv = self.norm_kv(ctx)
        out, _ = self.attn(self.norm_q(x), kv, kv, key_padding_mask=~ctx_mask, need_weights=False)
        return x + out


class _FFN(nn.Module):
    """Pre-norm residual MLP W → 2W → W."""

    def __init__(self, width: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.LayerNorm(width), nn.Linear(width, 2 * width), nn.GELU(), nn.Linear(2 * width, width)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.net(x)


# ------------------------------------------------------------------------------------------ encoder


class FocusEncoder(nn.Module):
    """One CVAE branch (prior or posterior): vision + text hidden states → Gaussian (mean, logvar) [B, Z].

    Architecture (VIF §4.3 "Encoding Latent Variables via CVAE"): per-modality LayerNorm(D) + Linear(D → W);
    bidirectional cross-attention (vision attends text, text attends vision, both from the same inputs) with
    FFNs; one self-attention layer + FFN over the concatenation [vision; text]; `n_queries` learnable queries
    cross-attend to that sequence; their mean goes through LayerNorm to linear heads for mean and
    log-variance (clamped to ±logvar_clamp). LayerNorm comes before the projection because LLM residual
    streams carry a few huge outlier channels that would otherwise dominate the projection.
    Padded tokens (mask False) are never attended to, so outputs do not depend on padding.
    """

    N_FREQ = 8  # Fourier frequencies per axis for `vision_xy`

    def __init__(self, cfg: VIFConfig):
        super().__init__()
        self.cfg = cfg
        W = cfg.width
        self.vision_in = nn.Sequential(nn.LayerNorm(cfg.d_model), nn.Linear(cfg.d_model, W))
        self.text_in = nn.Sequential(nn.LayerNorm(cfg.d_model), nn.Linear(cfg.d_model, W))
        self.pos_in = nn.Linear(4 * self.N_FREQ, W)
        self.v_from_t = _Attn(W, cfg.n_heads)
        self.t_from_v = _Attn(W, cfg.n_heads)
        self.v_ffn, self.t_ffn = _FFN(W), _FFN(W)
        self.joint = _Attn(W, cfg.n_heads)
        self.joint_ffn = _FFN(W)
        self.queries = nn.Parameter(torch.randn(cfg.n_queries, W) * W**-0.5)
        self.compress = _Attn(W, cfg.n_heads)
        self.out_norm = nn.LayerNorm(W)
        self.mean_head = nn.Linear(W, cfg.latent)
        self.logvar_head = nn.Linear(W, cfg.latent)

    def forward(
        self,
        vision: torch.Tensor,
        text: torch.Tensor,
        vision_mask: torch.Tensor | None = None,
        text_mask: torch.Tensor | None = None,
        vision_xy: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """vision: [B, Nv, D]; text: [B, Nt, D]; masks: [B, Nv] / [B, Nt] bool (True = valid) or None;
        vision_xy: [B, Nv, 2] patch-centre (x, y) in [0, 1] or None. Returns (mean, logvar), each [B, Z]."""
        vm = _check_tokens(vision, vision_mask, "vision", self.cfg.d_model)
        tm = _check_tokens(text, text_mask, "text", self.cfg.d_model)
        dtype = self.queries.dtype  # bf16 hidden states of the base model run through a float32 module
        v = self.vision_in(vision.to(dtype))  # [B, Nv, W]
        t = self.text_in(text.to(dtype))  # [B, Nt, W]
        if vision_xy is not None:
            if tuple(vision_xy.shape) != (*vision.shape[:2], 2):
                raise InputError(
                    f"`vision_xy` must be [B, Nv, 2] = {(*vision.shape[:2], 2)}, got {tuple(vision_xy.shape)}. "
                    "Fix: one (x, y) patch centre in [0, 1] per vision token."
                )
            v = v + self.pos_in(_fourier_xy(vision_xy.to(dtype), self.N_FREQ))

        v, t = self.v_from_t(v, t, tm), self.t_from_v(t, v, vm)  # bidirectional, from the same inputs
        v, t = self.v_ffn(v), self.t_ffn(t)
        seq = torch.cat([v, t], dim=1)  # [B, Nv + Nt, W]
        seq_mask = torch.cat([vm, tm], dim=1)
        seq = self.joint_ffn(self.joint(seq, seq, seq_mask))

        q = self.queries.expand(vision.shape[0], -1, -1)  # [B, Q, W]
        pooled = self.out_norm(self.compress(q, seq, seq_mask).mean(dim=1))  # [B, W]
        mean = self.mean_head(pooled)
        logvar = self.logvar_head(pooled).clamp(-self.cfg.logvar_clamp, self.cfg.logvar_clamp)
        return mean, logvar


# ------------------------------------------------------------------------------------------ decoder


class FocusDecoder(nn.Module):
    """Latent z [B, Z] → K mixture components (VIF §4.3 "Decoding to Spatial GMM").

    MLP Z → W → K · 4; per component: centre = sigmoid(·) ∈ (0, 1)² [B, K, 2], spread = softplus(·) +
    min_sigma [B, K] (isotropic), weight = softmax over K [B, K]. The last layer starts near zero with
    biases spreading the centres over (0.12, 0.88)² and spreads at softplus(−2) + min_sigma ≈ 0.16 (the
    reference's starting spread), so an untrained decoder gives a broad, well-spread mixture.
    """

    def __init__(self, cfg: VIFConfig):
        super().__init__()
        self.cfg = cfg
        K = cfg.n_components
        self.hidden = nn.Sequential(nn.Linear(cfg.latent, cfg.width), nn.GELU())
        self.out = nn.Linear(cfg.width, K * 4)
        with torch.no_grad():
            self.out.weight.normal_(0.0, 0.01)
            bias = self.out.bias.view(K, 4)
            bias[:, 0:2].uniform_(-2.0, 2.0)  # centre logits
            bias[:, 2].fill_(-2.0)  # spread
            bias[:, 3].zero_()  # weight logits

    def forward(self, z: torch.Tensor) -> GMMParams:
        """z: [B, Z] → GMMParams(centers [B, K, 2], sigmas [B, K], weights [B, K])."""
        if z.ndim != 2 or z.shape[-1] != self.cfg.latent:
            raise InputError(f"`z` must be [B, latent={self.cfg.latent}], got shape {tuple(z.shape)}.")
        raw = self.out(self.hidden(z)).view(z.shape[0], self.cfg.n_components, 4)  # [B, K, 4]
        return GMMParams(
            centers=torch.sigmoid(raw[..., 0:2]),
            sigmas=F.softplus(raw[..., 2]) + self.cfg.min_sigma,
            weights=torch.softmax(raw[..., 3], dim=-1),
        )


# ------------------------------------------------------------------------------------------ CVAE


def gaussian_kl(
    mean_q: torch.Tensor, logvar_q: torch.Tensor, mean_p: torch.Tensor, logvar_p: torch.Tensor
) -> torch.Tensor:
    """KL(q ‖ p) of diagonal Gaussians, summed over the latent axis: [B, Z] ×4 → [B] (VIF Eq. 2).

        KL = ½ Σ_z [ logvar_p − logvar_q + (exp(logvar_q) + (mean_q − mean_p)²) / exp(logvar_p) − 1 ]
    """
    return 0.5 * (
        logvar_p - logvar_q + (logvar_q.exp() + (mean_q - mean_p).pow(2)) * torch.exp(-logvar_p) - 1.0
    ).sum(-1)


@dataclass(frozen=True)
class CVAEOutput:
    """What one CVAE forward produced (B rows, Z latent dims).

    prior_mean, prior_logvar: [B, Z]. post_mean, post_logvar: [B, Z] or None (no answer given).
    z: [B, Z], the latent that was decoded. mixture: GMMParams decoded from z. source: "posterior" or
    "prior" (where z came from); sampled: whether z was drawn (Eq. 1) or is the branch mean.
    """

    prior_mean: torch.Tensor
    prior_logvar: torch.Tensor
    post_mean: torch.Tensor | None
    post_logvar: torch.Tensor | None
    z: torch.Tensor
    mixture: GMMParams
    source: str
    sampled: bool

    @property
    def prior(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.prior_mean, self.prior_logvar

    @property
    def post(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        return None if self.post_mean is None else (self.post_mean, self.post_logvar)


class CVAE(nn.Module):
    """VIF's conditional VAE: prior and posterior `FocusEncoder`s (same architecture, separate weights) and
    one `FocusDecoder`.

    Example:
        >>> m = CVAE(VIFConfig(d_model=128))
        >>> out = m(torch.randn(2, 64, 128), torch.randn(2, 9, 128), torch.randn(2, 12, 128))
        >>> loss_kl = m.kl(out.post, out.prior)             # scalar
        >>> from interp.vif.gmm import render_gmm
        >>> mix = out.mixture
        >>> maps = render_gmm(mix.centers, mix.sigmas, mix.weights, (8, 8))   # [2, 64], see gmm.py
    """

    def __init__(self, cfg: VIFConfig):
        super().__init__()
        self.cfg = cfg
        self.prior = FocusEncoder(cfg)
        self.posterior = FocusEncoder(cfg)
        self.decoder = FocusDecoder(cfg)

    def forward(
        self,
        vision: torch.Tensor,
        text_q: torch.Tensor,
        text_qa: torch.Tensor | None = None,
        *,
        vision_mask: torch.Tensor | None = None,
        q_mask: torch.Tensor | None = None,
        qa_mask: torch.Tensor | None = None,
        vision_xy: torch.Tensor | None = None,
        sample: bool = True,
        generator: torch.Generator | None = None,
    ) -> CVAEOutput:
        """vision: [B, Nv, D]; text_q: [B, Nq, D] question tokens; text_qa: [B, Nqa, D] question + answer
        tokens (training) or None (inference); masks bool (True = valid) or None; vision_xy: [B, Nv, 2] or
        None.

        z comes from the posterior when `text_qa` is given (training), else from the prior (inference).
        sample=True draws z = mean + exp(½ logvar) · ε (Eq. 1; `generator` seeds ε); sample=False uses the
        branch mean, deterministic. The prior is always computed, so `kl(out.post, out.prior)` is available
        whenever an answer was given.
        """
        prior_mean, prior_logvar = self.prior(vision, text_q, vision_mask, q_mask, vision_xy)
        post_mean = post_logvar = None
        if text_qa is not None:
            post_mean, post_logvar = self.posterior(vision, text_qa, vision_mask, qa_mask, vision_xy)
            mean, logvar, source = post_mean, post_logvar, "posterior"
        else:
            mean, logvar, source = prior_mean, prior_logvar, "prior"
        if sample:
            # drawn on the generator's device so a seeded CPU generator gives the same ε on any device
            eps_device = generator.device if generator is not None else mean.device
            eps = torch.randn(mean.shape, generator=generator, dtype=mean.dtype, device=eps_device).to(mean.device)
            z = mean + torch.exp(0.5 * logvar) * eps
        else:
            z = mean
        return CVAEOutput(prior_mean, prior_logvar, post_mean, post_logvar, z, self.decoder(z), source, sample)

    @staticmethod
    def kl(post: tuple[torch.Tensor, torch.Tensor], prior: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """KL(posterior ‖ prior) (VIF Eq. 2): summed over latent dims, mean over the batch → scalar.

        post, prior: (mean, logvar), each [B, Z] (`CVAEOutput.post`, `CVAEOutput.prior`). The reference
        code averages over latent dims instead of summing (a constant factor Z smaller).
        """
        if post is None:
            raise InputError(
                "no posterior: the CVAE was called without `text_qa`, so KL(post ‖ prior) is undefined. "
                "Fix: pass question+answer tokens as `text_qa` when training."
            )
        return gaussian_kl(post[0], post[1], prior[0], prior[1]).mean()

    def num_parameters(self, trainable_only: bool = False) -> int:
        """Number of parameters (all, or only those with requires_grad)."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)
