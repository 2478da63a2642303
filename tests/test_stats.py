"""interp.stats against plain references: scipy's t-interval and entropy, a loop over the same bootstrap draws,
the binomial sum behind McNemar, Python's math for entropy. (Wilson: tests/test_wilson.py.)"""

import math

import numpy as np
import pytest
import torch
from scipy import stats as sps

from interp.errors import InputError
from interp.stats import bootstrap_ci, bootstrap_diff_ci, bootstrap_mean, entropy, mcnemar_exact, mean_ci

RNG = np.random.default_rng(0)
SAMPLES = [RNG.normal(2.0, 1.0, 30), RNG.uniform(0, 1, 7), np.array([0.0, 1.0, 1.0, 0.0, 1.0]), np.array([3.0, 3.0])]


@pytest.mark.parametrize("x", SAMPLES, ids=["normal30", "uniform7", "binary5", "constant2"])
@pytest.mark.parametrize("level", [0.95, 0.9, 0.99])
def test_mean_ci_is_scipys_t_interval(x, level):
    m, lo, hi = mean_ci(x, level=level)
    assert m == pytest.approx(x.mean(), abs=1e-12)
    if x.std() == 0:
        assert lo == hi == m
        return
    ref = sps.t.interval(level, len(x) - 1, loc=x.mean(), scale=sps.sem(x))
    assert (lo, hi) == pytest.approx(ref, abs=1e-12)


def test_mean_ci_per_column_leaves_nan_out_and_collapses_below_two_values():
    x = np.array([[1.0, 2.0, np.nan], [3.0, np.nan, np.nan], [5.0, np.nan, np.nan]])  # [N=3, L=3]
    m, lo, hi = mean_ci(x)
    assert m.shape == lo.shape == hi.shape == (3,)
    ref = sps.t.interval(0.95, 2, loc=3.0, scale=sps.sem([1.0, 3.0, 5.0]))
    assert (lo[0], hi[0]) == pytest.approx(ref, abs=1e-12)
    assert m[1] == lo[1] == hi[1] == 2.0  # one finite value: the band collapses
    assert all(math.isnan(v[2]) for v in (m, lo, hi))  # none: NaN
    m1, lo1, hi1 = mean_ci(x.T, axis=1)  # the same along the other axis
    np.testing.assert_array_equal(np.stack([m, lo, hi]), np.stack([m1, lo1, hi1]))
    assert mean_ci([4.0]) == (4.0, 4.0, 4.0)
    with pytest.raises(InputError):
        mean_ci([1.0, 2.0], level=1.5)


def test_bootstrap_ci_is_the_percentiles_of_a_loop_over_the_same_draws():
    x = RNG.normal(0.5, 2.0, 41)
    idx = np.random.default_rng(7).integers(0, x.size, size=(500, x.size))  # the draws bootstrap_ci makes
    means = [sum(x[i] for i in row) / x.size for row in idx]
    want = np.quantile(means, [0.025, 0.975])
    assert bootstrap_ci(x, n_resamples=500, seed=7) == pytest.approx(tuple(want), abs=1e-12)
    assert bootstrap_ci(x, seed=3) == bootstrap_ci(x, seed=3) != bootstrap_ci(x, seed=4)  # seeded
    assert bootstrap_ci([2.0, 2.0]) == (2.0, 2.0) and all(math.isnan(v) for v in bootstrap_ci([]))


def test_bootstrap_ci_agrees_with_scipys_bootstrap():
    x = RNG.exponential(1.0, 200)
    ref = sps.bootstrap((x,), np.mean, method="percentile", n_resamples=20_000, random_state=0).confidence_interval
    lo, hi = bootstrap_ci(x, n_resamples=20_000)
    assert lo == pytest.approx(ref.low, abs=0.01) and hi == pytest.approx(ref.high, abs=0.01)


def test_bootstrap_mean_leaves_nan_out_and_goes_per_column():
    x = np.array([1.0, np.nan, 0.0, 1.0, 1.0])
    assert bootstrap_mean(x, seed=2) == (0.75, *bootstrap_ci([1.0, 0.0, 1.0, 1.0], seed=2))
    assert all(math.isnan(v) for v in bootstrap_mean([np.nan]))
    cols = RNG.normal(size=(20, 3))
    cols[0, 1] = np.nan
    m, lo, hi = bootstrap_mean(cols, seed=5, axis=0)
    for j in range(3):  # each column on its own, with the same seed
        assert (m[j], lo[j], hi[j]) == bootstrap_mean(cols[:, j], seed=5)
    m1, lo1, hi1 = bootstrap_mean(cols.T, seed=5, axis=1)
    np.testing.assert_array_equal(np.stack([m, lo, hi]), np.stack([m1, lo1, hi1]))


def test_bootstrap_diff_ci_is_seeded_and_contains_the_difference():
    rng = np.random.default_rng(0)
    a, b = rng.normal(1.0, 1.0, 200), rng.normal(0.0, 1.0, 50)
    lo, hi = bootstrap_diff_ci(a, b, seed=3)
    assert lo < a.mean() - b.mean() < hi and (lo, hi) == bootstrap_diff_ci(a, b, seed=3) and lo > 0
    assert bootstrap_diff_ci([2.0, 2.0], [0.5]) == (1.5, 1.5)
    assert all(math.isnan(v) for v in bootstrap_diff_ci([], [1.0]))


@pytest.mark.parametrize("only_a,only_b", [(0, 0), (0, 1), (3, 3), (2, 9), (10, 1), (0, 20), (37, 51)])
def test_mcnemar_is_the_two_sided_binomial_sum(only_a, only_b):
    n = only_a + only_b
    if n == 0:
        assert mcnemar_exact(0, 0) == 1.0
        return
    k = min(only_a, only_b)
    want = min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n)
    assert mcnemar_exact(only_a, only_b) == pytest.approx(want, rel=1e-9)
    with pytest.raises(InputError):
        mcnemar_exact(-1, 2)


DISTRIBUTIONS = [[1.0], [0.5, 0.5], [0.25] * 4, [0.7, 0.2, 0.1, 0.0], [1.0, 0.0, 0.0], [0.9, 0.05, 0.05]]


@pytest.mark.parametrize("p", DISTRIBUTIONS, ids=str)
def test_entropy_is_the_plain_sum(p):
    want = -sum(x * math.log(x) for x in p if x > 0)
    assert entropy(p) == pytest.approx(want, abs=1e-12)
    assert entropy(p) == pytest.approx(float(sps.entropy(p)), abs=1e-12)
    t = torch.tensor([p, p], dtype=torch.float64)  # torch in, torch out, the last dim reduced
    got = entropy(t)
    assert isinstance(got, torch.Tensor) and got.shape == (2,) and got.tolist() == pytest.approx([want] * 2, abs=1e-12)
    assert float(entropy(t.T, dim=0)[0]) == pytest.approx(want, abs=1e-12)


def test_entropy_of_uniform_is_log_n_and_float32_stays_float32():
    p = torch.full((3, 64), 1 / 64, dtype=torch.float32)
    e = entropy(p)
    assert e.dtype == torch.float32 and torch.allclose(e, torch.full((3,), math.log(64)), atol=1e-5)
    assert np.allclose(entropy(np.full((2, 5), 0.2), dim=1), math.log(5))
