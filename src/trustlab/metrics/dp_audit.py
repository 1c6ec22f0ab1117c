"""Empirical lower bounds on the epsilon of a differentially private training algorithm, from an
attack's decisions on canaries (pure functions of counts and scores; numpy and scipy only).

Two statistics, each a one-sided lower confidence bound: with probability at least
``confidence`` over the training randomness, an algorithm that is (epsilon, delta)-DP does not
produce data that give a bound above epsilon.

**Clopper-Pearson (hypothesis-testing) bound.** Jagielski, Ullman, Oprea, "Auditing
Differentially Private Machine Learning: How Private is Private SGD?" (NeurIPS 2020; code:
github.com/jagielski/auditing-dpsgd and its port ``tensorflow/privacy research/audit_2020/
audit.py``, ``compute_epsilon_and_acc``); Nasr, Song, Thakurta, Papernot, Carlini, "Adversary
Instantiation: Lower Bounds for Differentially Private Machine Learning" (S&P 2021). A membership
test "in" (the canary was trained on) vs "out" at one threshold has a false-positive rate FPR and
a false-negative rate FNR; (epsilon, delta)-DP implies ``FPR + e^eps FNR >= 1 - delta`` and
``FNR + e^eps FPR >= 1 - delta``, so with Clopper-Pearson upper bounds ``FPR_hi``, ``FNR_hi``

    eps_lb = max(0, log((1 - delta - FPR_hi) / FNR_hi), log((1 - delta - FNR_hi) / FPR_hi)).

Each rate gets a one-sided Clopper-Pearson bound at level ``1 - (1 - confidence) / 2`` (the
authors' code: ``proportion_confint(..., alpha, method="beta")`` keeps one side of a two-sided
interval; google-deepmind/jax_privacy ``auditing.py`` does the same), so the pair holds with
``confidence`` by a union bound. :func:`clopper_pearson` is the exact Beta quantile
(``scipy.stats.beta.ppf``), 1 (upper) at ``k = n`` and 0 (lower) at ``k = 0``.

*Threshold.* Jagielski et al.'s code (``compute_results(threshold=None)``) takes the largest
bound over every threshold, on the same trials it is measured on: an optimistic number (a
maximum of many 95% bounds is not a 95% bound). trustlab offers that as ``threshold="max"`` (for
comparison with the papers) and two valid choices: ``"bonferroni"`` (the default, as
jax_privacy's ``epsilon_clopper_pearson``): every threshold tested at ``significance / T`` for
``T`` thresholds; ``"split"``: the threshold is chosen on a seeded random half of the in and out
scores and the bound measured on the other half (a held-out choice of the threshold). A number
gives the threshold explicitly.

*Group privacy.* A canary set of ``k`` examples that is in or out as a whole (Jagielski et al.'s
``pois_ct``) is tested against the group guarantee ``(k eps, k e^((k - 1) eps) delta)``;
``group=k`` returns the largest ``eps`` it rejects (found by bisection). The authors' code
divides ``log(p1 / p0)`` by ``k`` and drops delta; for ``k = 1`` both are the formula above.

**One-run bound.** Steinke, Nasr, Jagielski, "Privacy Auditing with One (1) Training Run" (NeurIPS
2023; their Algorithm 1 and the p-value of their main theorem, read in two public implementations:
google-deepmind/jax_privacy ``auditing.py`` (``_one_run_p_value``, ``_epsilon_one_run``) and
ubc-systopia/panoramia-privacy-measurement ``O1_Steinke_Code/o1_audit.py`` (``p_value_DP_audit``,
``get_eps_audit``)). ``m`` canaries are each included independently with probability 1/2; the
auditor guesses "in" for the ``k+`` highest-scoring canaries and "out" for the ``k-``
lowest-scoring ones and abstains on the rest: ``r = k+ + k-`` guesses, ``v`` of them correct.
Under (eps, delta)-DP,

    P[W >= v] <= P[Bin(r, q) >= v] + 2 m delta max_{i=1..v} P[v - i <= Bin(r, q) < v] / i,

``q = e^eps / (1 + e^eps)``; the bound is the largest eps whose p-value is below ``1 -
confidence``, found as ``get_eps_audit`` does (raise ``eps_max`` by 1 until the p-value reaches the
level, then 30 bisection steps), vectorised here over candidate ``(k+, k-)`` pairs and over ``i``.
Choosing ``(k+, k-)`` after seeing the scores is again a multiple test: given explicitly, one test;
else trustlab searches a grid (``k- = 0`` and ``k+ = k-``, each of ``m x (1, 2, 5, 10, 20, 30, 40,
50)%``) with the Bonferroni correction (``threshold="bonferroni"``, default) or without it
(``"max"``: the best of the grid, uncorrected, for comparison with numbers reported as the best
over the guesses tried).

Everything is deterministic (``"split"`` draws its halves from ``numpy.random.default_rng(seed)``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from scipy import stats

from trustlab.errors import InputError

__all__ = [
    "DEFAULT_CONFIDENCE",
    "GUESS_FRACTIONS",
    "AuditBound",
    "clopper_pearson",
    "cp_audit",
    "epsilon_lower_bound",
    "guess_grid",
    "one_run_audit",
    "one_run_epsilon",
    "one_run_p_value",
]

#: the confidence of every bound unless told (the papers' 95%)
DEFAULT_CONFIDENCE = 0.95
#: the one-run search grid: k+ (and k-) as fractions of the canaries
GUESS_FRACTIONS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5)
#: bisection steps of the one-run search (the reference ``get_eps_audit``: 30)
BISECTION_STEPS = 30

Strategy = Literal["bonferroni", "split", "max"]
Scores = torch.Tensor | np.ndarray | Sequence[float]


@dataclass
class AuditBound:
    """One empirical lower bound and what it was computed from.

    Attributes:
        epsilon: the lower bound on epsilon (>= 0).
        method: ``"cp"`` or ``"one-run"``.
        confidence: its confidence level.
        delta: the delta it was computed at.
        strategy: how the threshold / the guesses were chosen (``"bonferroni"``, ``"split"``,
            ``"max"`` or ``"explicit"``).
        detail: the numbers at the chosen point: for ``cp`` ``threshold``, ``tp``, ``fn``,
            ``fp``, ``tn``, ``fpr_hi``, ``fnr_hi``, ``tests``; for ``one-run`` ``k_pos``,
            ``k_neg``, ``guesses``, ``correct``, ``m``, ``tests``.

    Example:
        >>> b = cp_audit([3.0, 2.5, 2.0], [0.0, 0.5, 1.0], delta=0.0)
        >>> b.method, b.epsilon >= 0
        ('cp', True)
    """

    epsilon: float
    method: str
    confidence: float
    delta: float
    strategy: str
    detail: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "epsilon": self.epsilon,
            "method": self.method,
            "confidence": self.confidence,
            "delta": self.delta,
            "strategy": self.strategy,
            **self.detail,
        }


# -- checks --------------------------------------------------------------------------------------
def _check_level(name: str, value: float) -> float:
    value = float(value)
    if not 0 < value < 1:
        raise InputError(f"{name} must be in (0, 1), e.g. 0.95; got {value}.")
    return value


def _check_delta(delta: float) -> float:
    delta = float(delta)
    if not 0 <= delta < 1:
        raise InputError(f"delta must be in [0, 1), e.g. 1e-5; got {delta}.")
    return delta


def _counts(k: Any, n: Any) -> tuple[np.ndarray, np.ndarray]:
    k_arr = np.asarray(k, dtype=np.int64)
    n_arr = np.asarray(n, dtype=np.int64)
    if np.any(n_arr < 1) or np.any(k_arr < 0) or np.any(k_arr > n_arr):
        raise InputError(
            "counts must satisfy 0 <= k <= n and n >= 1 (k successes of n trials); got "
            f"k={k_arr.tolist()}, n={n_arr.tolist()}."
        )
    return k_arr, n_arr


def _scores(x: Scores, name: str) -> np.ndarray:
    arr = x.detach().cpu().double().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    arr = np.asarray(arr, dtype=np.float64).reshape(-1)
    if arr.size == 0:
        raise InputError(f"{name} is empty; an audit needs scores of in and out canaries.")
    if not np.all(np.isfinite(arr)):
        raise InputError(f"{name} holds NaN or infinite values; score the canaries again.")
    return arr


# -- Clopper-Pearson -----------------------------------------------------------------------------
def clopper_pearson(
    k: Any, n: Any, confidence: float = DEFAULT_CONFIDENCE, side: str = "upper"
) -> np.ndarray:
    """The one-sided Clopper-Pearson bound of a rate from ``k`` successes in ``n`` trials.

    ``side="upper"``: the ``p`` with ``P[Bin(n, p) <= k] = 1 - confidence``, i.e.
    ``Beta.ppf(confidence, k + 1, n - k)`` (1 when ``k = n``); ``"lower"``:
    ``Beta.ppf(1 - confidence, k, n - k + 1)`` (0 when ``k = 0``). Vectorised (arrays broadcast).

    Example:
        >>> float(clopper_pearson(0, 100, 0.95))  # the "rule of three": about 3/100
        0.0295...
    """
    confidence = _check_level("confidence", confidence)
    k_arr, n_arr = _counts(k, n)
    if side == "upper":
        full = k_arr >= n_arr
        b = np.where(full, 1, n_arr - k_arr)
        out = stats.beta.ppf(confidence, k_arr + 1, b)
        return np.where(full, 1.0, out)
    if side == "lower":
        none = k_arr <= 0
        a = np.where(none, 1, k_arr)
        out = stats.beta.ppf(1 - confidence, a, n_arr - k_arr + 1)
        return np.where(none, 0.0, out)
    raise InputError(f"side must be 'upper' or 'lower', got {side!r}.")


def _group_delta(eps: np.ndarray, delta: float, group: int) -> np.ndarray:
    """delta of the group guarantee of ``group`` examples: ``k e^((k - 1) eps) delta``."""
    return group * np.exp((group - 1) * eps) * delta


def epsilon_lower_bound(
    tp: Any,
    fn: Any,
    fp: Any,
    tn: Any,
    *,
    delta: float = 0.0,
    confidence: float = DEFAULT_CONFIDENCE,
    group: int = 1,
    tests: int = 1,
) -> np.ndarray:
    """The Clopper-Pearson epsilon lower bound at each threshold (vectorised over the counts).

    Jagielski et al. (2020) / Nasr et al. (2021): with ``FPR_hi`` and ``FNR_hi`` the
    one-sided Clopper-Pearson upper bounds of ``fp / (fp + tn)`` and ``fn / (fn + tp)``, each at
    level ``1 - (1 - confidence) / (2 tests)`` (``tests``: the Bonferroni count, 1 for one
    pre-chosen threshold),
    ``max(0, log((1 - delta - FPR_hi) / FNR_hi), log((1 - delta - FNR_hi) / FPR_hi))``; with
    ``group = k`` the largest eps rejected for the group guarantee
    ``(k eps, k e^((k - 1) eps) delta)`` (module docstring).

    Args:
        tp, fn: in-canaries (trained on) decided "in" / "out" at each threshold.
        fp, tn: out-canaries decided "in" / "out".
        delta: the delta of the guarantee tested (default 0).
        confidence: the overall confidence (default 0.95).
        group: canaries that are in or out together (default 1).
        tests: thresholds the level is shared by (Bonferroni; default 1).

    Returns:
        float64 array of the bounds (>= 0), the counts' broadcast shape.

    Example:
        >>> round(float(epsilon_lower_bound(100, 0, 0, 100, delta=0.0)), 2)  # perfect, 100 + 100
        3.28
    """
    confidence = _check_level("confidence", confidence)
    delta = _check_delta(delta)
    if int(group) < 1 or int(tests) < 1:
        raise InputError(f"group and tests must be >= 1, got group={group}, tests={tests}.")
    group, tests = int(group), int(tests)
    tp, fn, fp, tn = (np.asarray(a, dtype=np.int64) for a in (tp, fn, fp, tn))
    level = 1 - (1 - confidence) / (2 * tests)
    fnr_hi = clopper_pearson(fn, fn + tp, level)
    fpr_hi = clopper_pearson(fp, fp + tn, level)
    if group == 1:
        with np.errstate(divide="ignore", invalid="ignore"):
            a = np.log(np.clip(1 - delta - fpr_hi, 0, None)) - np.log(fnr_hi)
            b = np.log(np.clip(1 - delta - fnr_hi, 0, None)) - np.log(fpr_hi)
        out = np.nan_to_num(np.maximum(a, b), nan=0.0, neginf=0.0)
        return np.maximum(out, 0.0)
    return _group_bound(fpr_hi, fnr_hi, delta, group)


def _group_bound(fpr_hi: np.ndarray, fnr_hi: np.ndarray, delta: float, k: int) -> np.ndarray:
    """Largest eps with ``1 - delta_k(eps) - FPR_hi > e^(k eps) FNR_hi`` (or the symmetric
    inequality); 0 where none. The violation shrinks as eps grows: bisection."""

    def violated(eps: np.ndarray) -> np.ndarray:
        d = _group_delta(eps, delta, k)
        e = np.exp(k * eps)
        return (1 - d - fpr_hi > e * fnr_hi) | (1 - d - fnr_hi > e * fpr_hi)

    shape = np.broadcast(fpr_hi, fnr_hi).shape
    lo = np.zeros(shape)
    hi = np.ones(shape)
    for _ in range(64):  # grow the bracket (the bound is finite: the rates' bounds are > 0)
        grow = violated(hi)
        if not grow.any():
            break
        hi = np.where(grow, 2 * hi, hi)
    ok = violated(lo)
    for _ in range(60):
        mid = (lo + hi) / 2
        v = violated(mid)
        lo, hi = np.where(v, mid, lo), np.where(v, hi, mid)
    return np.where(ok, lo, 0.0)


def _roc_counts(in_s: np.ndarray, out_s: np.ndarray) -> tuple[np.ndarray, ...]:
    """``(thresholds, tp, fn, fp, tn)`` at every point of the ROC (decide "in" when
    ``score >= threshold``; the first point, ``inf``, decides nothing "in"), from
    :func:`trustlab.metrics.detection.roc_curve` (the library's one ROC)."""
    from trustlab.metrics.detection import roc_curve

    scores = torch.from_numpy(np.concatenate([in_s, out_s]))
    member = torch.cat(
        [torch.ones(len(in_s), dtype=torch.bool), torch.zeros(len(out_s), dtype=torch.bool)]
    )
    fpr, tpr, thr = roc_curve(scores, member)
    tp = np.rint(tpr.numpy() * len(in_s)).astype(np.int64)
    fp = np.rint(fpr.numpy() * len(out_s)).astype(np.int64)
    return thr.numpy(), tp, len(in_s) - tp, fp, len(out_s) - fp


def _cp_at(in_s: np.ndarray, out_s: np.ndarray, threshold: float) -> tuple[int, ...]:
    tp = int((in_s >= threshold).sum())
    fp = int((out_s >= threshold).sum())
    return tp, len(in_s) - tp, fp, len(out_s) - fp


def cp_audit(
    in_scores: Scores,
    out_scores: Scores,
    *,
    delta: float = 0.0,
    confidence: float = DEFAULT_CONFIDENCE,
    threshold: Strategy | float = "bonferroni",
    group: int = 1,
    seed: int = 0,
) -> AuditBound:
    """The Clopper-Pearson epsilon lower bound of an attack's scores (higher = "in").

    Args:
        in_scores: scores of the canaries that were trained on (one per trial: a canary in one
            training, or one training with the canary set).
        out_scores: scores of those that were not.
        delta: the delta of the guarantee tested (default 0; audit a DP-SGD run at its delta).
        confidence: overall confidence (default 0.95).
        threshold: ``"bonferroni"`` (default: the best threshold, every threshold tested at
            ``significance / T``), ``"split"`` (chosen on a seeded half, measured on the other),
            ``"max"`` (Jagielski et al.'s code: the best threshold, uncorrected; optimistic) or a
            number (decide "in" when ``score >= threshold``).
        group: canaries in or out together per trial (default 1; module docstring).
        seed: the ``"split"`` halves.

    Returns:
        :class:`AuditBound` (``method="cp"``).

    Example:
        >>> cp_audit(torch.randn(200) + 3, torch.randn(200), delta=1e-5).epsilon > 1
        True
    """
    in_s, out_s = _scores(in_scores, "in_scores"), _scores(out_scores, "out_scores")
    confidence = _check_level("confidence", confidence)
    delta = _check_delta(delta)
    kw = {"delta": delta, "confidence": confidence, "group": group}

    def result(eps: float, strategy: str, thr: float, counts: tuple, tests: int) -> AuditBound:
        tp, fn, fp, tn = (int(c) for c in counts)
        level = 1 - (1 - confidence) / (2 * tests)
        detail = {
            "threshold": float(thr), "tp": tp, "fn": fn, "fp": fp, "tn": tn,
            "fnr_hi": float(clopper_pearson(fn, fn + tp, level)),
            "fpr_hi": float(clopper_pearson(fp, fp + tn, level)), "tests": tests,
        }  # fmt: skip
        return AuditBound(float(eps), "cp", confidence, delta, strategy, detail)

    if not isinstance(threshold, str):
        counts = _cp_at(in_s, out_s, float(threshold))
        eps = float(epsilon_lower_bound(*counts, **kw))
        return result(eps, "explicit", float(threshold), counts, 1)
    if threshold in ("bonferroni", "max"):
        thr, tp, fn, fp, tn = _roc_counts(in_s, out_s)
        tests = len(thr) if threshold == "bonferroni" else 1
        eps = epsilon_lower_bound(tp, fn, fp, tn, tests=tests, **kw)
        i = int(np.argmax(eps))
        return result(float(eps[i]), threshold, thr[i], (tp[i], fn[i], fp[i], tn[i]), tests)
    if threshold == "split":
        if len(in_s) < 2 or len(out_s) < 2:
            raise InputError("threshold='split' needs at least 2 in and 2 out scores.")
        rng = np.random.default_rng(seed)
        pi, po = rng.permutation(len(in_s)), rng.permutation(len(out_s))
        hi, ho = len(in_s) // 2, len(out_s) // 2
        thr, tp, fn, fp, tn = _roc_counts(in_s[pi[:hi]], out_s[po[:ho]])
        chosen = float(thr[int(np.argmax(epsilon_lower_bound(tp, fn, fp, tn, **kw)))])
        counts = _cp_at(in_s[pi[hi:]], out_s[po[ho:]], chosen)
        return result(float(epsilon_lower_bound(*counts, **kw)), "split", chosen, counts, 1)
    raise InputError(
        f"threshold must be 'bonferroni', 'split', 'max' or a number, got {threshold!r}."
    )


# -- one run (Steinke, Nasr, Jagielski 2023) -----------------------------------------------------
def one_run_p_value(m: Any, r: Any, v: Any, eps: Any, delta: float = 0.0) -> np.ndarray:
    """Steinke et al.'s p-value: the largest probability, under (eps, delta)-DP, of at least
    ``v`` correct guesses out of ``r`` on ``m`` canaries each included with probability 1/2:
    ``P[Bin(r, q) >= v] + 2 m delta max_{i <= v} P[v - i <= Bin(r, q) < v] / i`` (capped at 1),
    ``q = e^eps / (1 + e^eps)``. Vectorised: the arguments broadcast.

    Example:
        >>> float(one_run_p_value(100, 10, 10, 0.0))  # 10 of 10 right by chance: 2^-10
        0.0009765625
    """
    delta = _check_delta(delta)
    m_a, r_a, v_a, eps_a = np.broadcast_arrays(
        np.asarray(m, np.int64), np.asarray(r, np.int64), np.asarray(v, np.int64),
        np.asarray(eps, np.float64),
    )  # fmt: skip
    if np.any(v_a < 0) or np.any(v_a > r_a) or np.any(r_a > m_a) or np.any(eps_a < 0):
        raise InputError("the one-run p-value needs 0 <= v <= r <= m and eps >= 0.")
    q = 1 / (1 + np.exp(-eps_a))
    tail = stats.binom.sf(v_a - 1, r_a, q)  # P[Bin(r, q) >= v]
    if delta == 0 or v_a.size == 0:
        return np.minimum(tail, 1.0)
    vmax = int(v_a.max())
    if vmax == 0:
        return np.minimum(tail, 1.0)
    i = np.arange(1, vmax + 1)  # (V,)
    j = v_a[..., None] - i  # v - i
    pmf = np.where(j >= 0, stats.binom.pmf(np.maximum(j, 0), r_a[..., None], q[..., None]), 0.0)
    partial = np.cumsum(pmf, axis=-1)  # P[v - i <= Bin < v], summed as the reference does
    alpha = np.max(np.where(i <= v_a[..., None], partial / i, 0.0), axis=-1)
    return np.minimum(tail + alpha * delta * 2 * m_a, 1.0)


def one_run_epsilon(
    m: Any, r: Any, v: Any, *, delta: float = 0.0, confidence: float = DEFAULT_CONFIDENCE
) -> np.ndarray:
    """The largest eps whose :func:`one_run_p_value` is below ``1 - confidence`` (0 if none),
    as the reference implementation (``get_eps_audit``) finds it: ``eps_max`` raised by 1 until
    the p-value reaches the level, then 30 bisection steps; vectorised over broadcast ``(m, r, v)``.

    Example:
        >>> round(float(one_run_epsilon(1000, 100, 100, delta=0.0)), 2)  # 100 of 100 right
        3.49
    """
    confidence = _check_level("confidence", confidence)
    delta = _check_delta(delta)
    m_a, r_a, v_a = np.broadcast_arrays(
        np.asarray(m, np.int64), np.asarray(r, np.int64), np.asarray(v, np.int64)
    )
    level = 1 - confidence

    def below(eps: np.ndarray) -> np.ndarray:
        return one_run_p_value(m_a, r_a, v_a, eps, delta) < level

    lo = np.zeros(m_a.shape)
    hi = np.ones(m_a.shape)
    for _ in range(10_000):  # finite: the p-value tends to 1 (v <= r) as eps grows
        grow = below(hi)
        if not grow.any():
            break
        hi = hi + grow
    for _ in range(BISECTION_STEPS):
        mid = (lo + hi) / 2
        ok = below(mid)
        lo, hi = np.where(ok, mid, lo), np.where(ok, hi, mid)
    return lo


def guess_grid(m: int, fractions: Sequence[float] = GUESS_FRACTIONS) -> list[tuple[int, int]]:
    """The ``(k+, k-)`` pairs :func:`one_run_audit` searches: for each ``k`` in
    ``round(m * f)`` (at least 1, at most ``m // 2``), the one-sided ``(k, 0)`` and the
    symmetric ``(k, k)``; duplicates dropped, order kept."""
    ks = []
    for f in fractions:
        k = min(max(1, round(m * f)), max(1, m // 2))
        if k not in ks:
            ks.append(k)
    pairs: list[tuple[int, int]] = []
    for k in ks:
        for pair in ((k, 0), (k, k)):
            if pair not in pairs and sum(pair) <= m:
                pairs.append(pair)
    return pairs


def one_run_audit(
    scores: Scores,
    is_in: torch.Tensor | np.ndarray | Sequence[bool],
    *,
    delta: float = 0.0,
    confidence: float = DEFAULT_CONFIDENCE,
    k_pos: int | None = None,
    k_neg: int | None = None,
    threshold: Literal["bonferroni", "max"] = "bonferroni",
) -> AuditBound:
    """Steinke et al.'s one-run bound from the ``m`` canaries' scores (higher = "in") and whether
    each was included (each with probability 1/2, independently, before training).

    Args:
        scores: ``(m,)`` one score per canary.
        is_in: ``(m,)`` True where the canary was in the training set.
        delta: the delta of the guarantee tested (default 0).
        confidence: 1 - beta (default 0.95).
        k_pos, k_neg: guess "in" for the ``k_pos`` highest scores and "out" for the ``k_neg``
            lowest; both None (default): search :func:`guess_grid`.
        threshold: with the search, ``"bonferroni"`` (default: each pair at
            ``(1 - confidence) / pairs``) or ``"max"`` (uncorrected best, as reported in the
            paper's experiments).

    Returns:
        :class:`AuditBound` (``method="one-run"``).

    Example:
        >>> s = torch.cat([torch.randn(100) + 4, torch.randn(100)])
        >>> one_run_audit(s, torch.arange(200) < 100, delta=1e-5).epsilon > 1
        True
    """
    s = _scores(scores, "scores")
    member = np.asarray(
        is_in.detach().cpu().numpy() if isinstance(is_in, torch.Tensor) else is_in, dtype=bool
    ).reshape(-1)
    if member.shape != s.shape:
        raise InputError(
            f"scores and is_in must have one entry per canary; got {s.size} and {member.size}."
        )
    m = s.size
    confidence = _check_level("confidence", confidence)
    delta = _check_delta(delta)
    if (k_pos is None) != (k_neg is None):
        raise InputError("give both k_pos and k_neg (the guesses), or neither (a searched grid).")
    if k_pos is not None and k_neg is not None:
        if k_pos < 0 or k_neg < 0 or k_pos + k_neg > m or k_pos + k_neg == 0:
            raise InputError(
                f"k_pos + k_neg guesses must be between 1 and the {m} canaries (both >= 0); got "
                f"k_pos={k_pos}, k_neg={k_neg}."
            )
        pairs, strategy = [(int(k_pos), int(k_neg))], "explicit"
    elif threshold in ("bonferroni", "max"):
        pairs, strategy = guess_grid(m), threshold
    else:
        raise InputError(f"threshold must be 'bonferroni' or 'max', got {threshold!r}.")
    order = np.argsort(-s, kind="stable")  # highest first; ties by canary index
    hit_top = np.concatenate([[0], np.cumsum(member[order])])  # in-canaries among the top j
    hit_bottom = np.concatenate([[0], np.cumsum(~member[order[::-1]])])  # outs among bottom j
    kp = np.array([p for p, _ in pairs])
    kn = np.array([n for _, n in pairs])
    r = kp + kn
    v = hit_top[kp] + hit_bottom[kn]
    tests = len(pairs) if strategy == "bonferroni" else 1
    level = 1 - (1 - confidence) / tests
    eps = one_run_epsilon(m, r, v, delta=delta, confidence=level)
    i = int(np.argmax(eps))
    detail = {
        "k_pos": int(kp[i]), "k_neg": int(kn[i]), "guesses": int(r[i]), "correct": int(v[i]),
        "m": m, "tests": tests,
    }  # fmt: skip
    return AuditBound(float(eps[i]), "one-run", confidence, delta, strategy, detail)
