"""Uncertainty of a reproduction's numbers: bootstrap intervals over seeds, Wilson intervals for
rates, and the three-way verdict of a claim against a threshold.

A claim measured on a few seeds is an estimate. :func:`bootstrap_ci` gives the percentile
bootstrap interval of the mean of per-seed values (Efron & Tibshirani, "An Introduction to the
Bootstrap", 1993, ch. 13): resample the seeds with replacement, take each resample's mean, and
read the ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles. For a paired comparison (the
same seeds with and without a method) bootstrap the per-seed differences. With ``n`` seeds the
bootstrap sees only what those seeds show: for 2 seeds the interval is (nearly) the range of
the two values, for 1 seed it is the value itself (no uncertainty can be estimated; the verdict
says so). :func:`wilson_interval` is the Wilson score interval of a rate measured on ``n``
examples (Wilson, JASA 1927), for a metric that is a proportion of a test set.

Where each seed's number is such a rate (an attack success rate, an accuracy) and the number of
test examples behind it is known, ``bootstrap_ci(values, counts=...)`` bootstraps over both
levels: resample the seeds, then replace each drawn seed's rate ``s / n`` by a draw from its
Jeffreys posterior ``Beta(s + 1/2, n - s + 1/2)`` (the Jeffreys interval of Brown, Cai &
DasGupta, Statistical Science 2001, which behaves well at rates of 0 and 1, where resampling the
examples alone would give a zero-width interval). With one seed this is the Jeffreys interval of
that seed's rate, so a one-seed verdict still carries the test set's uncertainty.

:func:`verdict` decides a claim ``mean OP threshold``: ``PASS`` when the whole interval satisfies
it, ``FAIL`` when none of it does, ``INCONCLUSIVE`` when the interval straddles the threshold.

Everything is deterministic: the resamples come from ``numpy.random.default_rng(seed)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from trustlab.errors import InputError

__all__ = [
    "LEVEL",
    "OPS",
    "RESAMPLES",
    "VERDICTS",
    "bootstrap_ci",
    "verdict",
    "wilson_interval",
]

#: the confidence level of every interval trustlab reports
LEVEL = 0.95
#: bootstrap resamples
RESAMPLES = 10_000
#: a claim's comparison with its threshold
OPS = (">", ">=", "<", "<=")
#: the three outcomes of a claim
VERDICTS = ("PASS", "FAIL", "INCONCLUSIVE")


def _finite(values: Sequence[float]) -> np.ndarray:
    v = np.asarray([float(x) for x in values], dtype=np.float64)
    return v[np.isfinite(v)]


def bootstrap_ci(
    values: Sequence[float],
    level: float = LEVEL,
    resamples: int = RESAMPLES,
    seed: int = 0,
    counts: Sequence[float] | None = None,
) -> tuple[float, float, float]:
    """``(mean, lo, hi)``: the mean of ``values`` (NaNs dropped) and the percentile bootstrap
    interval of the mean at ``level``. One value gives ``(v, v, v)``; none gives NaNs.

    ``counts`` (one per value): the values are rates measured on that many test examples, and
    the interval covers the examples too (seeds resampled, then each drawn rate redrawn from its
    Jeffreys posterior; see the module). Values must then lie in [0, 1].

    Example:
        >>> m, lo, hi = bootstrap_ci([1.0, 2.0, 3.0, 4.0])
        >>> m, lo <= m <= hi
        (2.5, True)
        >>> m, lo, hi = bootstrap_ci([0.9], counts=[100])  # one seed: the test set's interval
        >>> round(lo, 2), round(hi, 2)
        (0.83, 0.95)
    """
    if not 0 < level < 1:
        raise InputError(f"level must be in (0, 1), got {level}.")
    if resamples < 1:
        raise InputError(f"resamples must be >= 1, got {resamples}.")
    if counts is not None:
        return _two_level(values, counts, level, resamples, seed)
    v = _finite(values)
    if v.size == 0:
        return math.nan, math.nan, math.nan
    mean = float(v.mean())
    if v.size == 1 or float(v.max() - v.min()) == 0.0:
        return mean, mean, mean
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, v.size, size=(resamples, v.size))].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return mean, float(lo), float(hi)


def _two_level(
    values: Sequence[float], counts: Sequence[float], level: float, resamples: int, seed: int
) -> tuple[float, float, float]:
    if len(counts) != len(values):
        raise InputError(f"counts has {len(counts)} entries for {len(values)} values.")
    pairs = [(float(v), float(n)) for v, n in zip(values, counts, strict=True)]
    pairs = [(v, n) for v, n in pairs if math.isfinite(v)]
    if not pairs:
        return math.nan, math.nan, math.nan
    v = np.asarray([p[0] for p in pairs])
    n = np.asarray([p[1] for p in pairs])
    if (v < 0).any() or (v > 1).any():
        raise InputError("rates with counts must lie in [0, 1]; a difference of rates has none.")
    if (n < 1).any() or not np.isfinite(n).all():
        raise InputError(f"counts must be >= 1 test examples, got {n.tolist()}.")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, v.size, size=(resamples, v.size))
    s, m = v[idx] * n[idx], n[idx]
    draws = rng.beta(s + 0.5, m - s + 0.5)
    lo, hi = np.quantile(draws.mean(axis=1), [(1 - level) / 2, (1 + level) / 2])
    # Brown et al.'s end correction: a rate observed as exactly 0 (1) keeps 0 (1) in its interval
    lo = 0.0 if (v == 0).all() else float(lo)
    hi = 1.0 if (v == 1).all() else float(hi)
    return float(v.mean()), lo, hi


def wilson_interval(successes: float, n: int, level: float = LEVEL) -> tuple[float, float]:
    """The Wilson score interval ``(lo, hi)`` of a rate ``successes / n`` at ``level``.

    Example:
        >>> lo, hi = wilson_interval(90, 100)
        >>> round(lo, 3), round(hi, 3)
        (0.826, 0.945)
    """
    if n <= 0:
        return math.nan, math.nan
    if not 0 <= successes <= n:
        raise InputError(f"successes must be in [0, n={n}], got {successes}.")
    from statistics import NormalDist

    z = NormalDist().inv_cdf((1 + level) / 2)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    lo = 0.0 if successes == 0 else max(0.0, centre - half)  # exact at the ends (no rounding)
    hi = 1.0 if successes == n else min(1.0, centre + half)
    return lo, hi


def _holds(value: float, op: str, threshold: float) -> bool:
    return {
        ">": value > threshold,
        ">=": value >= threshold,
        "<": value < threshold,
        "<=": value <= threshold,
    }[op]


def verdict(lo: float, hi: float, op: str, threshold: float) -> str:
    """``PASS`` if every value in ``[lo, hi]`` satisfies ``value OP threshold``, ``FAIL`` if
    none does, else ``INCONCLUSIVE`` (also for a NaN interval: nothing was measured).

    Example:
        >>> verdict(0.2, 0.4, ">", 0.0), verdict(-0.1, 0.3, ">", 0.0), verdict(-2, -1, ">", 0)
        ('PASS', 'INCONCLUSIVE', 'FAIL')
    """
    if op not in OPS:
        raise InputError(f"unknown comparison {op!r}; use one of {', '.join(OPS)}.")
    if math.isnan(lo) or math.isnan(hi):
        return "INCONCLUSIVE"
    both = _holds(lo, op, threshold), _holds(hi, op, threshold)
    if all(both):
        return "PASS"
    if not any(both):
        return "FAIL"
    return "INCONCLUSIVE"
