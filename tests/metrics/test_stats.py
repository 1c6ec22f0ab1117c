"""Intervals and verdicts: the bootstrap interval of a mean, Wilson's interval, the three-way
verdict, and a claim built on them."""

from __future__ import annotations

import math

import numpy as np
import pytest

from trustlab.errors import InputError
from trustlab.experiments.base import Claim, ClaimResult, ResultTable, interval_check
from trustlab.metrics.stats import bootstrap_ci, verdict, wilson_interval


def test_bootstrap_interval_of_a_mean() -> None:
    rng = np.random.default_rng(1)
    values = rng.normal(3.0, 1.0, size=40)
    mean, lo, hi = bootstrap_ci(values)
    assert mean == pytest.approx(values.mean())
    se = values.std(ddof=1) / math.sqrt(len(values))
    # for 40 normal draws the percentile interval is close to mean +- 1.96 standard errors
    assert lo == pytest.approx(mean - 1.96 * se, abs=0.1) and hi == pytest.approx(
        mean + 1.96 * se, abs=0.1
    )
    assert bootstrap_ci(values) == bootstrap_ci(values)  # seeded
    assert bootstrap_ci([2.0]) == (2.0, 2.0, 2.0)
    assert bootstrap_ci([1.0, math.nan, 3.0])[0] == 2.0  # NaNs dropped
    assert all(math.isnan(v) for v in bootstrap_ci([]))
    m, lo, hi = bootstrap_ci([1.0, 3.0])
    assert (m, lo, hi) == (2.0, 1.0, 3.0)  # two seeds: their range
    with pytest.raises(InputError):
        bootstrap_ci([1.0, 2.0], level=1.5)


def test_wilson_interval_matches_the_formula() -> None:
    lo, hi = wilson_interval(90, 100)
    assert (round(lo, 4), round(hi, 4)) == (0.8256, 0.9448)
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(10, 10)[1] == 1.0
    with pytest.raises(InputError):
        wilson_interval(11, 10)


def test_verdict_is_three_way() -> None:
    assert verdict(0.1, 0.5, ">", 0.0) == "PASS"
    assert verdict(-0.1, 0.5, ">", 0.0) == "INCONCLUSIVE"
    assert verdict(-0.5, -0.1, ">", 0.0) == "FAIL"
    assert verdict(0.0, 0.5, ">=", 0.0) == "PASS" and verdict(0.0, 0.5, ">", 0.0) == "INCONCLUSIVE"
    assert verdict(0.8, 0.9, "<=", 0.9) == "PASS" and verdict(0.95, 1.0, "<", 0.9) == "FAIL"
    assert verdict(math.nan, math.nan, ">", 0) == "INCONCLUSIVE"
    with pytest.raises(InputError):
        verdict(0, 1, "=", 0)


def test_interval_claims_and_claim_results() -> None:
    rows = [{"k": "a", "seed": s, "d": v} for s, v in enumerate((0.3, 0.5, 0.4))]
    table = ResultTable(("k",), ("d",), rows)

    def diffs(t: ResultTable) -> dict[int, float]:
        return {r["seed"]: r["d"] for r in t.rows}

    res = Claim("gain", "B beats A", interval_check(diffs, ">", 0.0, what="B - A")).evaluate(table)
    assert res.verdict == "PASS" and res.passed
    assert "over 3 seeds" in res.detail and "+0.30/+0.50/+0.40" in res.detail
    res = Claim("big", "gain >= 0.45", interval_check(diffs, ">=", 0.45, what="d")).evaluate(table)
    assert res.verdict == "INCONCLUSIVE" and not res.passed
    one = ResultTable(("k",), ("d",), rows[:1])
    res = Claim("gain", "B beats A", interval_check(diffs, ">", 0.0, what="B - A")).evaluate(one)
    assert res.verdict == "PASS" and "1 seed: no interval" in res.detail
    assert ClaimResult("c", "t", True, "x").verdict == "PASS"
    assert ClaimResult("c", "t", False, "x").verdict == "FAIL"
    assert not ClaimResult("c", "t", True, "x", "INCONCLUSIVE").passed
    with pytest.raises(ValueError):
        ClaimResult("c", "t", True, "x", "MAYBE")


def test_all_of_combines_verdicts() -> None:
    from trustlab.experiments.base import all_of

    table = ResultTable(("k",), ("d",), [{"k": "a", "seed": 0, "d": 1.0}])

    def part(outcome):
        return lambda t: (outcome, f"part {outcome}")

    assert all_of(part("PASS"), part(True))(table) == ("PASS", "part PASS; part True")
    assert all_of(part("PASS"), part("INCONCLUSIVE"))(table)[0] == "INCONCLUSIVE"
    assert all_of(part("INCONCLUSIVE"), part(False))(table)[0] == "FAIL"


def test_per_seed_paired_and_noted() -> None:
    from trustlab.experiments.base import noted, paired

    rows = [
        {"m": "a", "seed": 0, "x": 1.0},
        {"m": "a", "seed": 1, "x": 3.0},
        {"m": "b", "seed": 0, "x": 0.5},
        {"m": "b", "seed": 2, "x": 9.0},
        {"m": "b", "seed": 1},  # no value: left out
    ]
    t = ResultTable(("m",), ("x",), rows)
    assert t.per_seed("x", m="a") == {0: 1.0, 1: 3.0} and t.per_seed("x", m="b") == {0: 0.5, 2: 9.0}
    assert paired(t.per_seed("x", m="a"), t.per_seed("x", m="b")) == {0: 0.5}
    assert paired({0: 4.0}, {0: 2.0}, lambda a, b: a / b) == {0: 2.0}
    check = noted(lambda _t: ("PASS", "judged"), lambda _t: "shown")
    assert check(t) == ("PASS", "judged; shown")
    assert noted(lambda _t: (True, "judged"), lambda _t: "shown", before=True)(t) == (
        True,
        "shown; judged",
    )


def test_bootstrap_over_seeds_and_test_examples() -> None:
    from scipy.stats import beta

    # one seed: the Jeffreys interval of the rate (Brown, Cai & DasGupta 2001)
    m, lo, hi = bootstrap_ci([0.9], counts=[100], resamples=100_000)
    assert m == 0.9
    assert lo == pytest.approx(beta.ppf(0.025, 90.5, 10.5), abs=2e-3)
    assert hi == pytest.approx(beta.ppf(0.975, 90.5, 10.5), abs=2e-3)
    # a rate of exactly 1 keeps 1 in its interval, and the interval is not a point
    m, lo, hi = bootstrap_ci([1.0, 1.0], counts=[300, 300])
    assert hi == 1.0 and 0.98 < lo < 1.0
    # more test examples, narrower; the seed level still counts (wider than examples alone)
    narrow = bootstrap_ci([0.9], counts=[10_000])
    assert narrow[2] - narrow[1] < hi - lo + 0.1 and narrow[2] - narrow[1] < 0.02
    seeds = bootstrap_ci([0.80, 0.95], counts=[10_000, 10_000])
    assert seeds[1] < 0.81 and seeds[2] > 0.94
    assert bootstrap_ci([0.9], counts=[100]) == bootstrap_ci([0.9], counts=[100])  # seeded
    with pytest.raises(InputError, match="difference"):
        bootstrap_ci([-0.1], counts=[100])
    with pytest.raises(InputError, match="entries"):
        bootstrap_ci([0.5, 0.6], counts=[100])


def test_interval_check_with_test_examples_gives_one_seed_an_interval() -> None:
    rows = [{"seed": 0, "asr": 0.93, "n": 200}]
    table = ResultTable((), ("asr",), rows)
    plain = interval_check(lambda t: t.per_seed("asr"), ">=", 0.9, what="ASR")
    both = interval_check(
        lambda t: t.per_seed("asr"), ">=", 0.9, what="ASR", examples=lambda t: t.per_seed("n")
    )
    assert plain(table)[0] == "PASS" and "no interval" in plain(table)[1]
    outcome, detail = both(table)
    assert outcome == "INCONCLUSIVE"  # 186/200: the test set cannot tell 93% from 90%
    assert "over 200 test examples" in detail
    rows = [{"seed": s, "asr": 0.99, "n": 2000} for s in range(3)]
    assert both(ResultTable((), ("asr",), rows))[0] == "PASS"
    assert "3 seeds and 2000 test examples" in both(ResultTable((), ("asr",), rows))[1]


def test_interval_check_without_counts_falls_back_to_the_seeds() -> None:
    rows = [{"seed": 0, "asr": 0.93}]  # a table stored before the counts were kept
    check = interval_check(
        lambda t: t.per_seed("asr"), ">=", 0.9, what="ASR", examples=lambda t: t.per_seed("n")
    )
    outcome, detail = check(ResultTable((), ("asr",), rows))
    assert outcome == "PASS" and "1 seed: no interval" in detail
