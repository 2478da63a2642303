"""The words of REPORT findings, shared by every analysis's `finding(data)`: intervals as text, the verdict
words and the rules that pick them from an interval.

A finding is one paragraph computed from an analysis's JSON alone; its verdicts are bold (`**held**`,
`**did not hold**`, `**inconclusive**`, `**confirmed**`), which is how REPORT's summary finds them (`verdicts`).
"""

from __future__ import annotations

import re

HELD, NOT_HELD, UNSURE = "**held**", "**did not hold**", "**inconclusive**"
_VERDICT = re.compile(r"\*\*(held|did not hold|inconclusive|confirmed)\*\*")


def fmt(m, lo, hi, digits: int = 3) -> str:
    """'m [lo, hi]'."""
    return f"{m:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def verdict(held: bool | None) -> str:
    """True → **held**, False → **did not hold**, None → **inconclusive**."""
    return {True: HELD, False: NOT_HELD, None: UNSURE}[held]


def diff_verdict(lo: float, hi: float, want_positive: bool) -> bool | None:
    """Whether a claimed sign holds for a difference with interval [lo, hi]: None when the interval spans 0."""
    if lo > 0:
        return want_positive
    if hi < 0:
        return not want_positive
    return None


def paired_text(p: dict, label: str = "") -> str:
    """A paired difference against the baseline: 'label +d [lo, hi] (McNemar p = ...)'."""
    lead = f"{label} " if label else ""
    return f"{lead}{p['difference']:+.3f} [{p['ci'][0]:+.3f}, {p['ci'][1]:+.3f}] (McNemar p = {p['p_value']:.2g})"


def span(layers) -> str:
    """'layer 3' or 'layers 3–7' (`layers`: sorted ints, consecutive or not: the first and last are named)."""
    return f"layers {layers[0]}–{layers[-1]}" if len(layers) > 1 else f"layer {layers[0]}"


def verdicts(text: str) -> list[str]:
    """The verdict words of a finding, in order: e.g. ['held', 'inconclusive']."""
    return _VERDICT.findall(text)
