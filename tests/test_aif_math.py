"""AIF math against a plain-Python reference written from the formulas (lists and floats, no torch)."""

from __future__ import annotations

import math
import random

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from interp.errors import InputError
from interp.methods.aif_math import DEFAULT_RATIOS, choose_ratio, mu_keep, token_stats

NAN = float("nan")


@pytest.fixture(autouse=True)
def _seed():
    random.seed(0)
    torch.manual_seed(0)


# ----------------------------------------------------------------------------------- plain-Python reference


def ref_round(x: float) -> int:
    """round half up, as documented in aif_math"""
    return math.floor(x + 0.5 + 1e-9)


def ref_entropy(ws: list[float]) -> float:
    """H of ws normalised to sum 1; all-zero → uniform."""
    total = sum(ws)
    ps = [w / total for w in ws] if total > 0 else [1.0 / len(ws)] * len(ws)
    return -sum(p * math.log(p) for p in ps if p > 0)


def ref_token_stats(d: list[list[list[float]]]):
    """d[b][l][i] → (mu[b][i], ent[b][i]), NaN for tokens with a NaN in their curve."""
    mus, ents = [], []
    for rows in d:
        L, Nv = len(rows), len(rows[0])
        mu_row, ent_row = [], []
        for i in range(Nv):
            curve = [rows[l][i] for l in range(L)]
            if any(math.isnan(x) for x in curve):
                mu_row.append(NAN)
                ent_row.append(NAN)
                continue
            mu = sum(curve) / L
            if mu == 0:
                ent = math.log(L)
            else:
                ent = 0.0
                for x in curve:
                    p = x / (L * mu)
                    if p > 0:
                        ent -= p * math.log(p)
            mu_row.append(mu)
            ent_row.append(ent)
        mus.append(mu_row)
        ents.append(ent_row)
    return mus, ents


def ref_choose_ratio(mu: list[float], ent: list[float], ratios, criterion="paper", max_ratio=None):
    """One row → (ratio, kept set, n_masked, S0, [S])."""
    valid = [i for i in range(len(mu)) if not (math.isnan(mu[i]) or math.isnan(ent[i]))]
    n = len(valid)
    order = sorted(valid, key=lambda i: (-ent[i], i))  # highest entropy first, ties: lower index first

    def crit(idx):
        h = ref_entropy([mu[i] for i in idx])
        if criterion == "normalized":
            h = h / math.log(len(idx)) if len(idx) > 1 else 1.0
        return h

    s0 = crit(valid)
    cands = sorted({r for r in ratios if max_ratio is None or r <= max_ratio})
    results = []
    for r in cands:
        k = min(ref_round(r * n), n - 1)
        kept = sorted(set(valid) - set(order[:k]))
        results.append((r, kept, k, crit(kept)))
    scores = [abs(s - s0) for (_, _, _, s) in results]
    best = max(scores)
    j = next(j for j, sc in enumerate(scores) if sc >= best - 1e-12)
    r, kept, k, _ = results[j]
    return r, set(kept), k, s0, [s for (*_, s) in results]


def ref_mu_mask(mu: list[float], fraction: float, which: str) -> set[int]:
    valid = [i for i in range(len(mu)) if not math.isnan(mu[i])]
    k = ref_round(fraction * len(valid))
    if which == "lowest":
        order = sorted(valid, key=lambda i: (mu[i], i))
    else:
        order = sorted(valid, key=lambda i: (-mu[i], i))
    return set(valid) - set(order[:k])


def random_dynamics(B, L, Nv, n_valid=None, zero_frac=0.0, rng=random):
    """Nested lists d[b][l][i] with NaN padding after n_valid[b] tokens and some exact zeros."""
    d = []
    for b in range(B):
        nv = Nv if n_valid is None else n_valid[b]
        rows = []
        for _ in range(L):
            rows.append(
                [(0.0 if rng.random() < zero_frac else rng.random() ** 3) if i < nv else NAN for i in range(Nv)]
            )
        d.append(rows)
    return d


def as_lists(t: torch.Tensor):
    return t.double().tolist()


def assert_close_nan(actual: torch.Tensor, expected, tol=1e-5):
    a = torch.as_tensor(actual, dtype=torch.float64)
    e = torch.tensor(expected, dtype=torch.float64)
    assert torch.equal(a.isnan(), e.isnan())
    assert torch.allclose(a.nan_to_num(0.0), e.nan_to_num(0.0), atol=tol, rtol=tol)


# ----------------------------------------------------------------------------------- token_stats

STATS_CASES = [
    # (B, L, Nv, n_valid per row, fraction of exact zeros)
    (1, 1, 5, None, 0.0),
    (2, 4, 8, None, 0.0),
    (3, 6, 10, [10, 7, 1], 0.2),
    (2, 32, 24, [24, 2], 0.5),
    (4, 3, 4, [4, 1, 2, 4], 0.9),  # mostly zeros: exercises mu = 0 and 0·log0
]


@pytest.mark.parametrize("B,L,Nv,n_valid,zero_frac", STATS_CASES)
def test_token_stats_matches_reference(B, L, Nv, n_valid, zero_frac):
    d = random_dynamics(B, L, Nv, n_valid, zero_frac)
    mu, ent = token_stats(torch.tensor(d, dtype=torch.float64))
    ref_mu, ref_ent = ref_token_stats(d)
    assert_close_nan(mu, ref_mu, 1e-12)
    assert_close_nan(ent, ref_ent, 1e-12)
    # float32 agrees to float32 precision
    mu32, ent32 = token_stats(torch.tensor(d, dtype=torch.float32))
    assert mu32.dtype == torch.float32
    assert_close_nan(ent32, ref_ent, 1e-4)


def test_token_stats_known_values():
    d = torch.tensor([[[1.0, 0.2, 0.0], [0.0, 0.2, 0.0]]])  # one peak / flat / never attended
    mu, ent = token_stats(d)
    assert torch.allclose(mu, torch.tensor([[0.5, 0.2, 0.0]]))
    assert torch.allclose(ent, torch.tensor([[0.0, math.log(2), math.log(2)]]))
    assert not torch.signbit(ent).any()  # no -0.0


def test_token_stats_bf16_no_nan():
    d = torch.rand(3, 16, 50).pow(4).to(torch.bfloat16)
    d[:, :, :5] = 0  # never-attended tokens
    d[1, 3, 7] = 0
    mu, ent = token_stats(d)
    assert mu.dtype == torch.float32 and torch.isfinite(mu).all() and torch.isfinite(ent).all()
    assert (ent >= 0).all() and (ent <= math.log(16) + 1e-5).all()
    ch = choose_ratio(mu, ent)
    assert torch.isfinite(ch.S).all()


def test_token_stats_explicit_valid():
    d = torch.rand(2, 3, 4)
    valid = torch.tensor([[True, True, False, True], [True, False, False, False]])
    mu, ent = token_stats(d, valid)
    assert torch.equal(mu.isnan(), ~valid) and torch.equal(ent.isnan(), ~valid)


@pytest.mark.parametrize(
    "d,valid,match",
    [
        (torch.rand(3, 4), None, r"\[B, L, Nv\]"),
        (torch.rand(1, 0, 4), None, "0 layers"),
        (-torch.rand(1, 2, 3), None, "negative"),
        (torch.full((1, 2, 3), NAN), torch.ones(1, 3, dtype=torch.bool), "NaN"),
        (torch.rand(1, 2, 3), torch.ones(1, 3), "bool"),
        (torch.rand(1, 2, 3), torch.ones(1, 4, dtype=torch.bool), "shape"),
    ],
)
def test_token_stats_bad_input(d, valid, match):
    with pytest.raises(InputError, match=match):
        token_stats(d, valid)


# ----------------------------------------------------------------------------------- choose_ratio

CHOOSE_CASES = [
    # (B, L, Nv, n_valid, zero_frac, criterion, ratios, max_ratio)
    (3, 8, 20, None, 0.0, "paper", DEFAULT_RATIOS, None),
    (3, 8, 20, None, 0.0, "normalized", DEFAULT_RATIOS, None),
    (4, 5, 12, [12, 4, 2, 1], 0.1, "paper", DEFAULT_RATIOS, None),
    (4, 5, 12, [12, 4, 2, 1], 0.1, "normalized", DEFAULT_RATIOS, None),
    (2, 6, 30, [30, 17], 0.3, "paper", DEFAULT_RATIOS, 0.5),
    (2, 6, 30, [30, 17], 0.3, "normalized", (0.9, 0.25, 0.5, 0.25), 0.6),  # unsorted, duplicate
    (5, 3, 9, [9, 8, 5, 3, 6], 0.8, "paper", (0.15, 0.35, 0.55, 0.75), None),  # many zeros, many ties
    (2, 32, 576, [576, 300], 0.0, "paper", DEFAULT_RATIOS, None),  # LLaVA-size
]


@pytest.mark.parametrize("B,L,Nv,n_valid,zero_frac,criterion,ratios,max_ratio", CHOOSE_CASES)
def test_choose_ratio_matches_reference(B, L, Nv, n_valid, zero_frac, criterion, ratios, max_ratio):
    d = random_dynamics(B, L, Nv, n_valid, zero_frac)
    ref_mu, ref_ent = ref_token_stats(d)
    for dtype in (torch.float64, torch.float32):
        mu, ent = token_stats(torch.tensor(d, dtype=dtype))
        ch = choose_ratio(mu, ent, ratios=ratios, criterion=criterion, max_ratio=max_ratio)
        for b in range(B):
            r, kept, k, s0, S = ref_choose_ratio(ref_mu[b], ref_ent[b], ratios, criterion, max_ratio)
            assert ch.ratio[b].item() == pytest.approx(r)
            assert set(torch.nonzero(ch.kept[b]).flatten().tolist()) == kept
            assert ch.n_masked[b].item() == k
            tol = 1e-12 if dtype == torch.float64 else 1e-5
            assert ch.S0[b].item() == pytest.approx(s0, abs=tol)
            assert ch.S[b].tolist() == pytest.approx(S, abs=tol)
        assert ch.ratios.tolist() == pytest.approx(sorted({x for x in ratios if max_ratio is None or x <= max_ratio}))


def test_choose_ratio_all_ties():
    # every token has the same curve: entropy ties everywhere → mask by index (lowest indices first)
    mu = torch.full((1, 10), 0.3)
    ent = torch.full((1, 10), 1.2)
    ch = choose_ratio(mu, ent, ratios=(0.3,))
    assert ch.kept[0].tolist() == [False] * 3 + [True] * 7
    # uniform mu: S(r) = log(n_kept); paper picks the largest |log n_kept − log n|, i.e. the largest ratio
    ch = choose_ratio(mu, ent)
    assert ch.ratio.item() == pytest.approx(0.9)
    assert ch.S[0].tolist() == pytest.approx([math.log(10 - k) for k in range(1, 10)])
    # normalised entropy of a uniform distribution is 1 for every n: all candidates tie → smallest ratio
    ch = choose_ratio(mu, ent, criterion="normalized")
    assert ch.ratio.item() == pytest.approx(0.1) and ch.n_masked.item() == 1


@pytest.mark.parametrize("n", [1, 2, 4])
def test_choose_ratio_few_tokens(n):
    mu = torch.tensor([[0.5, 0.1, 0.3, 0.05][:n] + [NAN] * (4 - n)])
    ent = torch.tensor([[0.2, 0.9, 0.5, 1.0][:n] + [NAN] * (4 - n)])
    for criterion in ("paper", "normalized"):
        ch = choose_ratio(mu, ent, criterion=criterion)
        assert ch.kept.sum().item() >= 1  # never mask everything
        assert ch.kept[0, 0].item()  # the lowest-entropy token is always kept
        assert not ch.kept[0, n:].any()  # padding never kept
        if n == 1:
            assert ch.n_masked.item() == 0 and ch.ratio.item() == pytest.approx(0.1)


def test_choose_ratio_max_ratio_caps():
    mu, ent = token_stats(torch.rand(4, 8, 40))
    full = choose_ratio(mu, ent)
    assert (full.ratio > 0.5).all()  # the known bias of the raw criterion
    ch = choose_ratio(mu, ent, max_ratio=0.5)
    low = [r for r in DEFAULT_RATIOS if r <= 0.5]
    # the cap is the same choice over the candidates up to it: the same scores, the best of them chosen
    assert ch.ratios.tolist() == pytest.approx(low) and torch.equal(ch.S, full.S[:, :len(low)])
    best = (ch.S - ch.S0[:, None]).abs().argmax(1)
    assert ch.ratio.tolist() == pytest.approx([low[i] for i in best.tolist()])
    assert torch.equal(ch.kept, choose_ratio(mu, ent, ratios=low).kept)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(ratios=(0.0, 0.5)), "strictly between 0 and 1"),
        (dict(ratios=(0.5, 1.0)), "strictly between 0 and 1"),
        (dict(ratios=(-0.1,)), "strictly between 0 and 1"),
        (dict(ratios=(float("nan"),)), "strictly between 0 and 1"),
        (dict(ratios=()), "empty"),
        (dict(max_ratio=0.05), "excludes every candidate"),
        (dict(max_ratio=1.5), "max_ratio"),
        (dict(criterion="best"), "criterion"),
    ],
)
def test_choose_ratio_bad_input(kwargs, match):
    mu, ent = token_stats(torch.rand(1, 4, 6))
    with pytest.raises(InputError, match=match):
        choose_ratio(mu, ent, **kwargs)


def test_choose_ratio_bad_rows():
    mu, ent = token_stats(torch.rand(2, 4, 6))
    with pytest.raises(InputError, match="no valid vision tokens"):
        choose_ratio(mu, ent, valid=torch.tensor([[True] * 6, [False] * 6]))
    with pytest.raises(InputError, match=r"\[B, Nv\]"):
        choose_ratio(mu, ent[:, :5])


@settings(max_examples=40, deadline=None, database=None)
@given(
    n_valid=st.integers(1, 40),
    pad=st.integers(0, 5),
    r=st.floats(0.01, 0.99),
    seed=st.integers(0, 2**16),
)
def test_property_kept_count(n_valid, pad, r, seed):
    g = torch.Generator().manual_seed(seed)
    d = torch.rand(1, 5, n_valid + pad, generator=g)
    d[:, :, n_valid:] = NAN
    mu, ent = token_stats(d)
    ch = choose_ratio(mu, ent, ratios=(r,))
    expected_masked = min(ref_round(r * n_valid), n_valid - 1)
    assert ch.kept.sum().item() == n_valid - expected_masked
    # every kept token has entropy ≤ every masked valid token (masking goes highest entropy first)
    kept_e = ent[ch.kept]
    masked_e = ent[~ch.kept & ~ent.isnan()]
    if kept_e.numel() and masked_e.numel():
        assert kept_e.max() <= masked_e.min()


@settings(max_examples=30, deadline=None, database=None)
@given(seed=st.integers(0, 2**16), n_valid=st.integers(1, 30), criterion=st.sampled_from(["paper", "normalized"]))
def test_property_choice_is_argmax(seed, n_valid, criterion):
    g = torch.Generator().manual_seed(seed)
    mu, ent = token_stats(torch.rand(1, 4, n_valid, generator=g))
    ch = choose_ratio(mu, ent, criterion=criterion)
    j = ch.ratios.tolist().index(ch.ratio.item())
    assert ch.score[0, j] >= ch.score[0].max() - 1e-12
    assert (ch.score[0, :j] < ch.score[0].max() - 1e-12).all()  # no smaller ratio ties with it


# ----------------------------------------------------------------------------------- mu_keep


@pytest.mark.parametrize("which", ["lowest", "highest"])
@pytest.mark.parametrize("fraction", [0.0, 0.1, 0.5, 0.9, 1.0])
def test_mu_mask_matches_reference(which, fraction):
    d = random_dynamics(3, 4, 11, [11, 6, 1], zero_frac=0.3)
    mu, _ = token_stats(torch.tensor(d))
    mu[0, 3] = mu[0, 4]  # an exact tie
    kept = mu_keep(mu, fraction, which=which)
    for b in range(3):
        assert set(torch.nonzero(kept[b]).flatten().tolist()) == ref_mu_mask(as_lists(mu[b]), fraction, which)


def test_mu_mask_random():
    mu = torch.rand(4, 20)
    mu[2, 12:] = NAN
    k1 = mu_keep(mu, 0.4, which="random", generator=torch.Generator().manual_seed(3))
    k2 = mu_keep(mu, 0.4, which="random", generator=torch.Generator().manual_seed(3))
    k3 = mu_keep(mu, 0.4, which="random", generator=torch.Generator().manual_seed(4))
    assert torch.equal(k1, k2) and not torch.equal(k1, k3)
    assert k1.sum(-1).tolist() == [20 - 8, 20 - 8, 12 - ref_round(0.4 * 12), 20 - 8]  # row 2: 12 valid
    assert not k1[2, 12:].any()


@pytest.mark.parametrize("fraction,which", [(-0.1, "lowest"), (1.1, "lowest"), (0.5, "median")])
def test_mu_mask_bad_input(fraction, which):
    with pytest.raises(InputError):
        mu_keep(torch.rand(1, 5), fraction, which=which)
