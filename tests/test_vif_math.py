"""VIF math: the GMM renderer against plain double loops, regularisers, and the CVAE's contracts."""

from __future__ import annotations

import math
import random

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from interp.errors import InputError
from interp.vif.cvae import CVAE, FocusDecoder, FocusEncoder, VIFConfig, gaussian_kl
from interp.vif.gmm import GMMParams, gmm_entropy, gmm_volume, grid_points, render_gmm, render_gmm_grids


@pytest.fixture(autouse=True)
def _seed():
    random.seed(0)
    torch.manual_seed(0)


# ----------------------------------------------------------------------------------- plain-loop reference


def ref_render(centers, sigmas, weights, rows, cols, normalize, coords):
    """One mixture (lists) → list of rows·cols floats, row-major, with explicit loops over cells."""
    out = []
    for r in range(rows):
        for c in range(cols):
            if coords == "centers":
                x, y = (c + 0.5) / cols, (r + 0.5) / rows
            else:
                x = c / (cols - 1) if cols > 1 else 0.0
                y = r / (rows - 1) if rows > 1 else 0.0
            v = 0.0
            for (cx, cy), s, w in zip(centers, sigmas, weights):
                sx, sy = (s, s) if isinstance(s, float) else s
                v += w * math.exp(-0.5 * ((x - cx) ** 2 / sx**2 + (y - cy) ** 2 / sy**2))
            out.append(v)
    if normalize == "paper":
        total = sum(out)
        out = [v / total for v in out] if total > 0 else out
    elif normalize == "reference":
        m = max(out)
        e = [math.exp(v - m) for v in out]
        out = [v / sum(e) for v in e]
    return out


def random_mixture(B, K, per_axis, dtype=torch.float64):
    centers = torch.rand(B, K, 2, dtype=dtype)
    sigmas = 0.03 + 0.3 * torch.rand((B, K, 2) if per_axis else (B, K), dtype=dtype)
    weights = torch.softmax(torch.randn(B, K, dtype=dtype), -1)
    return centers, sigmas, weights


GRIDS = [(1, 1), (3, 3), (2, 5), (5, 2), (24, 24), (7, 13)]


@pytest.mark.parametrize("normalize", ["paper", "reference", "none"])
@pytest.mark.parametrize("coords", ["centers", "reference"])
def test_render_matches_double_loop(normalize, coords):
    B, K = 2, 3
    for grid in GRIDS:
        for per_axis in (False, True):
            case = f"grid {grid}, per_axis {per_axis}"
            centers, sigmas, weights = random_mixture(B, K, per_axis)
            got = render_gmm(centers, sigmas, weights, grid, normalize=normalize, coords=coords)
            assert got.shape == (B, grid[0] * grid[1]), case
            for b in range(B):
                exp = ref_render(centers[b].tolist(), sigmas[b].tolist(), weights[b].tolist(), *grid, normalize, coords)
                assert got[b].tolist() == pytest.approx(exp, rel=1e-10, abs=1e-12), case
            if normalize != "none":
                assert torch.allclose(got.sum(-1), torch.ones(B, dtype=got.dtype)), case


def test_grid_points_layout():
    pts = grid_points((2, 3))
    expected = [[1 / 6, 0.25], [0.5, 0.25], [5 / 6, 0.25], [1 / 6, 0.75], [0.5, 0.75], [5 / 6, 0.75]]
    assert torch.allclose(pts, torch.tensor(expected))
    ref = grid_points((2, 3), coords="reference")
    assert torch.equal(ref, torch.tensor([[0, 0], [0.5, 0], [1, 0], [0, 1], [0.5, 1], [1, 1.0]]))


def test_render_orientation():
    # x along columns, y along rows: a blob at (x=0.9, y=0.1) lands in the top-right cell of a 4×6 grid
    m = render_gmm(torch.tensor([[[0.9, 0.1]]]), torch.tensor([[0.05]]), torch.ones(1, 1), (4, 6))
    assert m.view(4, 6)[0, 5] == m.max()


def test_render_half_precision_and_isotropic_equals_per_axis():
    c, s, w = random_mixture(2, 4, False, torch.float32)
    iso = render_gmm(c, s, w, (6, 5))
    per = render_gmm(c, s.unsqueeze(-1).expand(-1, -1, 2), w, (6, 5))
    assert torch.allclose(iso, per, atol=1e-7)
    half = render_gmm(c.bfloat16(), s.bfloat16(), w.bfloat16(), (6, 5))
    # bfloat16 inputs are rendered in float32: exactly the float32 map of the rounded inputs
    rounded = render_gmm(c.bfloat16().float(), s.bfloat16().float(), w.bfloat16().float(), (6, 5))
    assert half.dtype == torch.float32 and torch.equal(half, rounded)


@pytest.mark.parametrize("normalize", ["paper", "reference"])
@pytest.mark.parametrize("per_axis", [False, True])
def test_render_gradcheck(normalize, per_axis):
    c, s, w = random_mixture(1, 2, per_axis)
    c, s, w = (t.clone().requires_grad_() for t in (c, s, w))
    f = lambda c, s, w: render_gmm(c, s, w, (2, 3), normalize=normalize)  # noqa: E731
    assert torch.autograd.gradcheck(f, (c, s, w))


def test_render_gradient_reaches_all_parameters():
    c, s, w = (t.float().requires_grad_() for t in random_mixture(2, 3, False))
    m = render_gmm(c, s, w, (8, 8))
    (gmm_entropy(m).sum() + gmm_volume(s, w).sum()).backward()
    for t in (c, s, w):
        assert t.grad is not None and torch.isfinite(t.grad).all() and t.grad.abs().sum() > 0


def test_reference_normalisation_is_nearly_uniform():
    """Quantify DESIGN.md's claim on a 24×24 grid (N = 576 cells, uniform entropy log 576 = 6.356).

    The raw map lies in [0, Σ w] = [0, 1], so the reference softmax has max/min ≤ e whatever the mixture.
    Measured: a single focused component (σ = 0.05) gives reference max/min 2.63 and entropy 6.350 (0.006 from
    uniform), while the paper's sum-normalised map has entropy 3.20 and max/min > 1e6; the broad mixture of an
    untrained decoder (σ ≈ 0.16) gives reference max/min ≈ 1.3–1.4 vs paper ≈ 16–90.
    """
    N, log_n = 576, math.log(576)
    dec = FocusDecoder(VIFConfig(d_model=8))
    with torch.no_grad():
        broad = dec(torch.randn(4, 32))
        focused = GMMParams(torch.tensor([[[0.3, 0.6]]]), torch.tensor([[0.05]]), torch.ones(1, 1))
        maps = {}
        for name, p in (("broad", broad), ("focused", focused)):
            maps[name] = [
                render_gmm(p.centers, p.sigmas, p.weights, (24, 24), normalize=n) for n in ("reference", "paper")
            ]
        for ref, pap in maps.values():
            assert (ref.max(-1).values / ref.min(-1).values <= math.e + 1e-4).all()
            assert (ref.max(-1).values < math.e / N).all()  # no cell gets even e× the uniform share
            assert (gmm_entropy(ref) > log_n - 0.01).all()
            assert (gmm_entropy(pap) < gmm_entropy(ref) - 0.05).all()
        ref, pap = maps["broad"]
        assert (ref.max(-1).values / ref.min(-1).values < 1.5).all()
        assert (pap.max(-1).values / pap.min(-1).values > 10).all()
        ref, pap = maps["focused"]
        assert (pap.max() / pap.min() > 1e6) and gmm_entropy(pap).item() < 3.5


@settings(max_examples=25, deadline=None, database=None)
@given(seed=st.integers(0, 2**16), K=st.integers(1, 16), rows=st.integers(1, 12), cols=st.integers(1, 12))
def test_property_reference_bound(seed, K, rows, cols):
    g = torch.Generator().manual_seed(seed)
    c = torch.rand(1, K, 2, generator=g, dtype=torch.float64)
    s = 0.035 + torch.rand(1, K, generator=g, dtype=torch.float64)
    w = torch.softmax(3 * torch.randn(1, K, generator=g, dtype=torch.float64), -1)
    ref = render_gmm(c, s, w, (rows, cols), normalize="reference")
    assert ref.max() / ref.min() <= math.e + 1e-9
    pap = render_gmm(c, s, w, (rows, cols))
    assert pap.sum().item() == pytest.approx(1.0) and (pap >= 0).all()


def test_render_gmm_grids_padded():
    c, s, w = random_mixture(3, 4, False)
    grids = [(4, 4), (2, 3), (4, 4)]
    out = render_gmm_grids(GMMParams(c, s, w), grids)
    assert out.shape == (3, 16)
    for b, g in enumerate(grids):
        n = g[0] * g[1]
        assert torch.equal(out[b, :n], render_gmm(c[b : b + 1], s[b : b + 1], w[b : b + 1], g)[0])
        assert out[b, n:].isnan().all()
    ent = gmm_entropy(out)
    assert torch.isfinite(ent).all()
    assert ent[1].item() == pytest.approx(gmm_entropy(render_gmm(c[1:2], s[1:2], w[1:2], (2, 3))).item())
    # gradients flow through the padded assembly
    c2 = c.clone().requires_grad_()
    gmm_entropy(render_gmm_grids(GMMParams(c2, s, w), grids)).sum().backward()
    assert c2.grad.abs().sum(dim=(1, 2)).gt(0).all()


def test_gmm_entropy_and_volume_values():
    assert gmm_entropy(torch.full((1, 8), 1 / 8)).item() == pytest.approx(math.log(8))
    assert gmm_entropy(torch.tensor([[1.0, 0.0, 0.0]])).item() == 0.0
    s = torch.tensor([[0.1, 0.2]])
    w = torch.tensor([[0.25, 0.75]])
    # Eq. 9 (paper): Σ_k w_k σ_k²; reference code: mean_k σ_k²
    assert gmm_volume(s, w).item() == pytest.approx(0.25 * 0.01 + 0.75 * 0.04)
    assert gmm_volume(s, w, mode="reference").item() == pytest.approx((0.01 + 0.04) / 2)
    s2 = torch.tensor([[[0.1, 0.3], [0.2, 0.2]]])
    assert gmm_volume(s2, w).item() == pytest.approx(0.25 * 0.03 + 0.75 * 0.04)


def _mix(B=1, K=2):
    return torch.rand(B, K, 2), torch.rand(B, K), torch.rand(B, K)


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: render_gmm(torch.rand(1, 2, 3), torch.rand(1, 2), torch.rand(1, 2), (2, 2)), "centers"),
        (lambda: render_gmm(torch.rand(1, 2, 2), torch.rand(1, 3), torch.rand(1, 2), (2, 2)), "sigmas"),
        (lambda: render_gmm(torch.rand(1, 2, 2), torch.rand(1, 2), torch.rand(2, 2), (2, 2)), "weights"),
        (lambda: render_gmm(torch.rand(1, 2, 2), torch.rand(1, 2), torch.rand(1, 2), (0, 2)), "grid"),
        (lambda: render_gmm(torch.rand(1, 2, 2), torch.rand(1, 2), torch.rand(1, 2), (2,)), "grid"),
        (lambda: render_gmm(*_mix(), (2, 2), normalize="l1"), "normalize"),
        (lambda: render_gmm(*_mix(), (2, 2), coords="edges"), "coords"),
        (lambda: render_gmm_grids(GMMParams(*_mix(B=2)), [(2, 2)]), "grids"),
        (lambda: gmm_volume(torch.rand(1, 2), torch.rand(1, 3)), "weights"),
    ],
)
def test_gmm_bad_input(call, match):
    with pytest.raises(InputError, match=match):
        call()


# ----------------------------------------------------------------------------------- CVAE

D = 24
CFG = VIFConfig(d_model=D, width=16, latent=8, n_heads=2, n_queries=4, n_components=5)


def test_gaussian_kl_matches_torch_distributions():
    mq, mp = torch.randn(3, 8), torch.randn(3, 8)
    lq, lp = torch.randn(3, 8), torch.randn(3, 8)
    ref = torch.distributions.kl_divergence(
        torch.distributions.Normal(mq, torch.exp(0.5 * lq)), torch.distributions.Normal(mp, torch.exp(0.5 * lp))
    ).sum(-1)
    assert torch.allclose(gaussian_kl(mq, lq, mp, lp), ref, atol=1e-5)
    assert CVAE.kl((mq, lq), (mp, lp)).item() == pytest.approx(ref.mean().item(), rel=1e-5)
    assert torch.allclose(gaussian_kl(mq, lq, mq, lq), torch.zeros(3), atol=1e-6)
    with pytest.raises(InputError, match="text_qa"):
        CVAE.kl(None, (mp, lp))


def _inputs(B=2, Nv=10, Nq=5, Nqa=8):
    return torch.randn(B, Nv, D), torch.randn(B, Nq, D), torch.randn(B, Nqa, D)


def test_cvae_shapes_and_ranges():
    m = CVAE(CFG)
    v, q, qa = _inputs()
    out = m(v, q, qa)
    assert out.source == "posterior" and out.sampled
    assert out.prior_mean.shape == out.post_logvar.shape == out.z.shape == (2, 8)
    assert (out.prior_logvar.abs() <= 5.0).all() and (out.post_logvar.abs() <= 5.0).all()
    mix = out.mixture
    assert mix.centers.shape == (2, 5, 2) and mix.sigmas.shape == (2, 5) and mix.weights.shape == (2, 5)
    assert ((mix.centers > 0) & (mix.centers < 1)).all() and (mix.sigmas >= CFG.min_sigma).all()
    assert torch.allclose(mix.weights.sum(-1), torch.ones(2))
    assert m.kl(out.post, out.prior).ndim == 0
    inf = m(v, q)
    assert inf.source == "prior" and inf.post is None


def test_prior_mean_path_is_deterministic_and_sampling_is_seeded():
    m = CVAE(CFG).eval()
    v, q, _ = _inputs()
    a = m(v, q, sample=False)
    b = m(v, q, sample=False)
    assert torch.equal(a.z, b.z) and torch.equal(a.z, a.prior_mean)
    assert torch.equal(a.mixture.centers, b.mixture.centers)
    s1 = m(v, q, generator=torch.Generator().manual_seed(1))
    s2 = m(v, q, generator=torch.Generator().manual_seed(1))
    s3 = m(v, q, generator=torch.Generator().manual_seed(2))
    assert torch.equal(s1.z, s2.z) and not torch.equal(s1.z, s3.z)
    # reparameterisation (Eq. 1): z = mean + exp(½ logvar) ε
    eps = torch.randn(a.prior_mean.shape, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(s1.z, a.prior_mean + torch.exp(0.5 * a.prior_logvar) * eps, atol=1e-6)


@pytest.mark.parametrize("train", [False, True])
def test_padding_invariance(train):
    """Adding padded (masked) vision/text tokens with garbage values changes no output."""
    m = CVAE(CFG).train(train)
    v, q, qa = _inputs(B=2, Nv=10, Nq=5, Nqa=8)
    xy = torch.rand(2, 10, 2)
    pad = lambda x, n: torch.cat([x, 100 * torch.randn(x.shape[0], n, *x.shape[2:])], dim=1)  # noqa: E731
    mask = lambda n, p: torch.cat(  # noqa: E731
        [torch.ones(2, n, dtype=torch.bool), torch.zeros(2, p, dtype=torch.bool)], 1
    )
    # row 1 is shorter: its last 3 vision tokens and last 2 question tokens are padding already
    vm, qm, qam = mask(10, 0), mask(5, 0), mask(8, 0)
    vm[1, 7:] = False
    qm[1, 3:] = False
    qam[1, 6:] = False
    with torch.set_grad_enabled(train):
        base = m(v, q, qa, vision_mask=vm, q_mask=qm, qa_mask=qam, vision_xy=xy, sample=False)
        more = m(
            pad(v, 4), pad(q, 3), pad(qa, 2),
            vision_mask=torch.cat([vm, torch.zeros(2, 4, dtype=torch.bool)], 1),
            q_mask=torch.cat([qm, torch.zeros(2, 3, dtype=torch.bool)], 1),
            qa_mask=torch.cat([qam, torch.zeros(2, 2, dtype=torch.bool)], 1),
            vision_xy=pad(xy, 4),
            sample=False,
        )
        # and row 1 alone, truncated to its real tokens, gives the same as inside the padded batch
        alone = m(v[1:, :7], q[1:, :3], qa[1:, :6], vision_xy=xy[1:, :7], sample=False)
    for a, b in ((base.prior_mean, more.prior_mean), (base.post_logvar, more.post_logvar), (base.z, more.z)):
        assert torch.allclose(a, b, atol=1e-5)
    assert torch.allclose(base.post_mean[1:], alone.post_mean, atol=1e-5)
    assert torch.allclose(base.prior_logvar[1:], alone.prior_logvar, atol=1e-5)


def test_vision_positions_matter():
    m = CVAE(CFG).eval()
    v, q, _ = _inputs()
    a = m(v, q, vision_xy=torch.rand(2, 10, 2), sample=False)
    b = m(v, q, vision_xy=torch.rand(2, 10, 2), sample=False)
    assert not torch.allclose(a.prior_mean, b.prior_mean)


def test_gradients_reach_both_branches_through_the_map():
    m = CVAE(CFG)
    v, q, qa = _inputs()
    out = m(v, q, qa)
    mix = out.mixture
    maps = render_gmm(mix.centers, mix.sigmas, mix.weights, (3, 4))
    loss = (maps * torch.rand_like(maps)).sum() + 0.1 * m.kl(out.post, out.prior)
    loss = loss + 0.1 * (gmm_entropy(maps) + gmm_volume(mix.sigmas, mix.weights)).mean()
    loss.backward()
    for name in ("prior.mean_head.weight", "posterior.mean_head.weight", "posterior.vision_in.1.weight",
                 "decoder.out.weight", "prior.queries"):
        g = dict(m.named_parameters())[name].grad
        assert g is not None and g.abs().sum() > 0, name


def test_encoder_branches_have_separate_weights():
    m = CVAE(CFG)
    prior_ids = {id(p) for p in m.prior.parameters()}
    assert prior_ids.isdisjoint(id(p) for p in m.posterior.parameters())
    n_enc = sum(p.numel() for p in m.prior.parameters())
    assert m.num_parameters() == 2 * n_enc + sum(p.numel() for p in m.decoder.parameters())
    m.prior.requires_grad_(False)
    assert m.num_parameters(trainable_only=True) == m.num_parameters() - n_enc


@pytest.mark.parametrize(
    "make,match",
    [
        (lambda: VIFConfig(d_model=16, width=10, n_heads=4), "divisible"),
        (lambda: VIFConfig(d_model=0), "d_model"),
        (lambda: CVAE(CFG)(torch.randn(1, 4, D + 1), torch.randn(1, 3, D)), "d_model"),
        (
            lambda: CVAE(CFG)(torch.randn(1, 4, D), torch.randn(1, 3, D), q_mask=torch.zeros(1, 3, dtype=torch.bool)),
            "no valid token",
        ),
        (lambda: CVAE(CFG)(torch.randn(1, 4, D), torch.randn(1, 3, D), q_mask=torch.ones(1, 3)), "bool"),
        (lambda: CVAE(CFG)(torch.randn(1, 4, D), torch.randn(1, 3, D), vision_xy=torch.rand(1, 3, 2)), "vision_xy"),
        (lambda: FocusDecoder(CFG)(torch.randn(2, 3)), "latent"),
    ],
)
def test_cvae_bad_input(make, match):
    with pytest.raises(InputError, match=match):
        make()


def test_encoder_standalone():
    enc = FocusEncoder(CFG)
    mean, logvar = enc(torch.randn(3, 6, D), torch.randn(3, 2, D))
    assert mean.shape == logvar.shape == (3, 8)
