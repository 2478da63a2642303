"""interp.stats.wilson_ci (the one Wilson interval: evaluation tables, the toy's model card) against scipy's
binomtest(...).proportion_ci(method="wilson") and the closed form at z = 1.96."""
import math

import pytest
from scipy.stats import binomtest

from interp.stats import wilson_ci

CASES = [(0, 1), (1, 1), (0, 10), (1, 2), (8, 10), (10, 10), (37, 250), (125, 250), (249, 250), (3, 1000)]


@pytest.mark.parametrize("k,n", CASES)
@pytest.mark.parametrize("level", [0.95, 0.9, 0.99])
def test_wilson_is_scipys(k, n, level):
    ref = binomtest(k, n).proportion_ci(confidence_level=level, method="wilson")
    assert wilson_ci(k, n, level=level) == pytest.approx((float(ref.low), float(ref.high)), abs=1e-12)


@pytest.mark.parametrize("k,n", CASES)
def test_wilson_is_the_closed_form(k, n):
    z = 1.959963984540054  # the 97.5% normal quantile
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    assert wilson_ci(k, n) == pytest.approx((max(0.0, centre - half), min(1.0, centre + half)), abs=1e-12)
