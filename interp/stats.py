"""Small, seeded statistics for accuracy tables and analyses: bootstrap (one- and two-sample) and Wilson intervals,
exact McNemar test."""

from __future__ import annotations

import math

import numpy as np

from interp.errors import InputError


def bootstrap_ci(values, *, level: float = 0.95, n_resamples: int = 2000, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of `values` ([N] scores, or paired differences).

    Seeded, so the same values give the same interval. N = 0 gives (nan, nan); a constant vector gives
    (c, c).
    """
    x = np.asarray(values, dtype=np.float64).ravel()  # [N]
    if not 0 < level < 1:
        raise InputError(f"bootstrap_ci: level must be in (0, 1), got {level}")
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
    if not 0 < level < 1:
        raise InputError(f"bootstrap_diff_ci: level must be in (0, 1), got {level}")
    if x.size == 0 or y.size == 0:
        return (math.nan, math.nan)
    rng = np.random.default_rng(seed)
    mx = x[rng.integers(0, x.size, size=(n_resamples, x.size))].mean(axis=1)  # [R]
    my = y[rng.integers(0, y.size, size=(n_resamples, y.size))].mean(axis=1)
    alpha = (1 - level) / 2
    lo, hi = np.quantile(mx - my, [alpha, 1 - alpha])
    return (float(lo), float(hi))
