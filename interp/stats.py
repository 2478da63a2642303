"""Every statistic interp reports, in one place: the mean with a t-interval (`mean_ci`) or a seeded percentile
bootstrap (`bootstrap_mean`, `bootstrap_ci`, `bootstrap_diff_ci`), Wilson intervals for proportions, the exact
McNemar test for paired right/wrong outcomes, and the Shannon entropy of a distribution.

    mean_ci([[1.0, 2.0], [3.0, nan]])          # per column: (mean [2, 2], lo, hi); one finite value → lo = hi = mean
    bootstrap_mean(scores, seed=0)             # accuracies: (mean, lo, hi), the interval `interp.evaluate` reports
    entropy(probs)                             # nats along the last dim, 0 · log 0 = 0

Intervals are two-sided at `level` (default 0.95). NaN values are "not measured" and left out where a function
says so. Seeded functions give the same interval for the same values and seed."""

from __future__ import annotations

import math

import numpy as np

from interp.errors import InputError


def _check_level(level: float, who: str) -> None:
    if not 0 < level < 1:
        raise InputError(f"{who}: level must be in (0, 1), got {level}")


def mean_ci(values, *, level: float = 0.95, axis: int = 0):
    """Mean and Student-t interval of the mean along `axis`, NaN left out: (mean, lo, hi).

    values: e.g. [N, L] per-sample curves → three [L] arrays; a 1-D sample → three floats. Where fewer than two
    values are finite the interval collapses onto the mean (NaN where none is). The half-width is
    t(level, n − 1) · sd / √n with sd the n − 1 standard deviation (`scipy.stats.t.interval` of the mean).
    """
    import warnings

    from scipy import stats

    _check_level(level, "mean_ci")
    x = np.asarray(values, dtype=np.float64)
    if x.ndim == 0:
        raise InputError("mean_ci needs a sample (1-D or more), got a scalar")
    n = np.sum(np.isfinite(x), axis=axis)
    with warnings.catch_warnings():  # all-NaN columns: their mean is NaN, said in the docstring
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(x, axis=axis)
        sd = np.nanstd(x, axis=axis, ddof=1) if x.shape[axis] > 1 else np.zeros_like(mean)
    with np.errstate(invalid="ignore", divide="ignore"):
        half = stats.t.ppf(0.5 + level / 2, np.maximum(n - 1, 1)) * sd / np.sqrt(np.maximum(n, 1))
    half = np.where(n > 1, half, 0.0)
    lo, hi = mean - half, mean + half
    if np.ndim(mean) == 0:
        return float(mean), float(lo), float(hi)
    return mean, lo, hi


def bootstrap_mean(values, *, level: float = 0.95, n_resamples: int = 2000, seed: int = 0, axis: int | None = None):
    """(mean, lo, hi) of the finite values with a seeded percentile bootstrap interval (`bootstrap_ci`).

    axis None: the whole sample, three floats ((nan, nan, nan) when no value is finite). axis=k: each slice along
    the other axes on its own (e.g. [N, L] with axis=0: per layer), three arrays, each slice with the same seed.
    """
    x = np.asarray(values, dtype=np.float64)
    if axis is not None:
        cols = np.moveaxis(x, axis, 0).reshape(x.shape[axis], -1)  # [N, rest]
        out = np.array([bootstrap_mean(cols[:, j], level=level, n_resamples=n_resamples, seed=seed)
                        for j in range(cols.shape[1])]).reshape(-1, 3)  # [rest, 3]
        rest = tuple(d for i, d in enumerate(x.shape) if i != axis % x.ndim)
        return tuple(out[:, k].reshape(rest) for k in range(3))
    x = x[np.isfinite(x)]
    if x.size == 0:
        return math.nan, math.nan, math.nan
    lo, hi = bootstrap_ci(x, level=level, n_resamples=n_resamples, seed=seed)
    return float(x.mean()), lo, hi


def bootstrap_ci(values, *, level: float = 0.95, n_resamples: int = 2000, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of `values` ([N] scores, or paired differences).

    Seeded, so the same values give the same interval. N = 0 gives (nan, nan); a constant vector gives
    (c, c).
    """
    x = np.asarray(values, dtype=np.float64).ravel()  # [N]
    _check_level(level, "bootstrap_ci")
    if x.size == 0:
        return (math.nan, math.nan)
    rng = np.random.default_rng(seed)
    means = np.empty(n_resamples)
    chunk = max(1, 2_000_000 // x.size)  # bound memory: at most ~2M indices at a time
    for start in range(0, n_resamples, chunk):
        stop = min(n_resamples, start + chunk)
        idx = rng.integers(0, x.size, size=(stop - start, x.size))  # [R, N]
        means[start:stop] = x[idx].mean(axis=1)
    alpha = (1 - level) / 2
    lo, hi = np.quantile(means, [alpha, 1 - alpha])
    return (float(lo), float(hi))


def wilson_ci(successes: int, n: int, *, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion successes / n; (nan, nan) for n = 0."""
    from scipy.stats import norm

    if n < 0 or not 0 <= successes <= max(n, 0):
        raise InputError(f"wilson_ci: need 0 <= successes <= n, got successes={successes}, n={n}")
    if n == 0:
        return (math.nan, math.nan)
    z = float(norm.ppf(1 - (1 - level) / 2))
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    lo = 0.0 if successes == 0 else max(0.0, centre - half)
    hi = 1.0 if successes == n else min(1.0, centre + half)  # exact endpoints, not 1 - 1e-16
    return (lo, hi)


def mcnemar_exact(only_a: int, only_b: int) -> float:
    """Exact McNemar p-value (two-sided): binomial test of the discordant pairs against p = 1/2.

    only_a: pairs where only A is correct; only_b: pairs where only B is correct. No discordant pairs → 1.0.
    """
    from scipy.stats import binomtest

    if only_a < 0 or only_b < 0:
        raise InputError(f"mcnemar_exact: counts must be >= 0, got {only_a}, {only_b}")
    n = only_a + only_b
    if n == 0:
        return 1.0
    return float(binomtest(only_b, n, 0.5, alternative="two-sided").pvalue)


def bootstrap_diff_ci(a, b, *, level: float = 0.95, n_resamples: int = 2000, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of mean(a) − mean(b) for two independent samples ([Na], [Nb]; unpaired:
    each is resampled on its own). Paired values: pass their differences to `bootstrap_ci` instead.
    Either sample empty gives (nan, nan)."""
    x = np.asarray(a, dtype=np.float64).ravel()
    y = np.asarray(b, dtype=np.float64).ravel()
    _check_level(level, "bootstrap_diff_ci")
    if x.size == 0 or y.size == 0:
        return (math.nan, math.nan)
    rng = np.random.default_rng(seed)
    mx = x[rng.integers(0, x.size, size=(n_resamples, x.size))].mean(axis=1)  # [R]
    my = y[rng.integers(0, y.size, size=(n_resamples, y.size))].mean(axis=1)
    alpha = (1 - level) / 2
    lo, hi = np.quantile(mx - my, [alpha, 1 - alpha])
    return (float(lo), float(hi))


def entropy(p, dim: int = -1):
    """Shannon entropy (nats) of distributions `p` along `dim`, each slice summing to 1; 0 · log 0 = 0.

    p: a torch tensor (→ a tensor, same dtype, `dim` reduced) or anything numpy reads (→ an array or a float).
    Entries below 1e-30 enter the log as 1e-30 (their share of the sum is below 1e-28 nats), so an exact 0 adds
    nothing and no NaN appears. A uniform distribution over n outcomes gives log n.
    """
    if type(p).__module__.startswith("torch"):
        import torch

        return -(p * torch.log(p.clamp(min=1e-30))).sum(dim)
    x = np.asarray(p, dtype=np.float64)
    out = -(x * np.log(np.maximum(x, 1e-30))).sum(axis=dim)
    return float(out) if np.ndim(out) == 0 else out
