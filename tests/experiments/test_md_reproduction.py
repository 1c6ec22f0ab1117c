"""`trustlab reproduce md --preset smoke`: four models, PGD-20 vs MD, the diagnostic, claims."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from trustlab.cli import app
from trustlab.experiments.base import ResultTable
from trustlab.experiments.imbalanced_gradients import MDReproduction
from trustlab.results import RunStore


@pytest.mark.slow
def test_reproduce_md_smoke(_isolated_home: Path) -> None:
    out = CliRunner().invoke(
        app,
        ["reproduce", "md", "--preset", "smoke", "--device", "cpu", "--workers", "1", "--quiet"],
        catch_exceptions=False,
    )
    marks = re.findall(r"(PASS|FAIL|INCONCLUSIVE) ", out.output)
    assert len(marks) == 3, out.output
    assert out.exit_code == (0 if set(marks) == {"PASS"} else 1)
    (run,) = RunStore(_isolated_home).list()
    rows = json.loads((run.dir / "table.json").read_text())["rows"]
    assert [r["model"] for r in rows] == ["standard", "pgd-at", "ls", "pgd-at+ls"]
    for r in rows:
        assert 0 <= r["md_acc"] <= r["clean_acc"] and 0 <= r["pgd_acc"] <= r["clean_acc"]
        assert r["imbalance"] >= 1.0  # max(r, 1/r)


def _table(
    per_seed: list[dict[str, tuple[float, float]]], imbalance: dict[str, float] | None = None
) -> ResultTable:
    """A table by hand: per seed ``{model: (pgd_acc, md_acc)}``; the diagnostic per model from
    ``imbalance`` (default: the two label-smoothing models most imbalanced)."""
    exp = MDReproduction()
    imb = imbalance or {"standard": 1.5, "pgd-at": 1.5, "ls": 5.0, "pgd-at+ls": 4.0}
    rows = [
        {
            "model": m,
            "seed": seed,
            "clean_acc": 0.9,
            "pgd_acc": pgd,
            "md_acc": md,
            "imbalance": imb[m],
        }  # fmt: skip
        for seed, models in enumerate(per_seed)
        for m, (pgd, md) in models.items()
    ]
    return ResultTable(exp.keys, exp.metrics, rows)


def test_claims_judge_the_per_seed_gaps_with_their_interval() -> None:
    exp = MDReproduction()
    base = {"standard": (0.0, 0.0), "pgd-at": (0.40, 0.39), "pgd-at+ls": (0.50, 0.40)}
    # LS gaps +8 and -1 points: the mean (+3.5) is >= 3 but the interval straddles it
    straddle = _table([{**base, "ls": (0.30, 0.22)}, {**base, "ls": (0.30, 0.31)}])
    weaker, gap, ranked = exp.check_claims(straddle)
    assert gap.verdict == "INCONCLUSIVE" and "per seed 8.0 pts/-1.0 pts" in gap.detail
    assert "PGD-AT+LS PGD - MD 10.0 pts" in gap.detail and "means: PGD 30.0, MD 26.5" in gap.detail
    # on the LS model MD - PGD is -8 and +1 points: the mean is <= +0.5, the interval is not
    assert weaker.verdict == "INCONCLUSIVE" and ranked.verdict == "PASS"
    clear = _table([{**base, "ls": (0.30, 0.20)}, {**base, "ls": (0.32, 0.25)},
                    {**base, "ls": (0.28, 0.20)}])  # fmt: skip
    weaker, gap, _ = exp.check_claims(clear)
    assert weaker.verdict == "PASS" and gap.verdict == "PASS"
    # MD above PGD by 2 points on every seed of one model: the claim over all models fails
    worse = _table([{**base, "pgd-at": (0.40, 0.42), "ls": (0.30, 0.20)},
                    {**base, "pgd-at": (0.41, 0.43), "ls": (0.30, 0.20)}])  # fmt: skip
    assert exp.check_claims(worse)[0].verdict == "FAIL"


def test_quick_preset_is_digits_cnn_small_at_eps_0_1_with_three_seeds() -> None:
    # on shapes10 at 8/255 LS alone had ~0% PGD robustness: nothing for MD to overestimate
    quick = MDReproduction().preset("quick")
    assert (quick.dataset, quick.model, quick.options["eps"]) == ("digits", "cnn-small", 0.1)
    assert quick.seeds == 3 and "3 seeds" in quick.description
    assert quick.options["n"] == 360  # the whole digits test split


def test_gap_claim_judges_both_label_smoothing_models() -> None:
    exp = MDReproduction()
    base = {"standard": (0.0, 0.0), "pgd-at": (0.40, 0.39), "ls": (0.30, 0.20)}
    # LS alone: +10 points on both seeds; PGD-AT + LS: no gap -> the claim fails
    no_at_gap = _table([{**base, "pgd-at+ls": (0.50, 0.50)}, {**base, "pgd-at+ls": (0.51, 0.50)}])
    gap = exp.check_claims(no_at_gap)[1]
    assert gap.verdict == "FAIL", gap.detail
    assert "LS model PGD - MD 10.0 pts" in gap.detail and "PGD-AT+LS PGD - MD 0.5 pts" in gap.detail
    # and the other way round: PGD-AT + LS shows the gap, LS alone does not
    ls_flat = {**base, "ls": (0.30, 0.30), "pgd-at+ls": (0.50, 0.40)}
    assert exp.check_claims(_table([ls_flat, ls_flat]))[1].verdict == "FAIL"
    both = {**base, "pgd-at+ls": (0.50, 0.40)}
    assert exp.check_claims(_table([both, {**both, "ls": (0.31, 0.20)}]))[1].verdict == "PASS"


def test_ranking_claim_needs_both_label_smoothing_models_above_the_others() -> None:
    exp = MDReproduction()
    rows = [{m: (0.5, 0.4) for m in ("standard", "pgd-at", "ls", "pgd-at+ls")}]
    # PGD-AT + LS first, LS second: both above the others
    at_first = {"standard": 1.3, "pgd-at": 1.5, "ls": 1.8, "pgd-at+ls": 3.0}
    ranked = exp.check_claims(_table(rows, at_first))[2]
    assert ranked.verdict == "PASS" and "most imbalanced: pgd-at+ls" in ranked.detail
    # LS alone first but PGD-AT + LS below the standard model
    at_low = {"standard": 1.6, "pgd-at": 1.5, "ls": 3.0, "pgd-at+ls": 1.4}
    assert exp.check_claims(_table(rows, at_low))[2].verdict == "FAIL"


def test_ranking_claim_is_judged_on_paired_differences_with_their_interval() -> None:
    exp = MDReproduction()

    def table(diag: dict[str, tuple[float, ...]]) -> ResultTable:
        rows = [
            {
                "model": m,
                "seed": s,
                "clean_acc": 0.9,
                "pgd_acc": 0.5,
                "md_acc": 0.4,
                "imbalance": v,
            }  # fmt: skip
            for m, values in diag.items()
            for s, v in enumerate(values)
        ]
        return ResultTable(exp.keys, exp.metrics, rows)

    # the quick run's near-tie: PGD-AT + LS vs PGD-AT differ by -0.004 / +0.003 / -0.001 per
    # seed: the interval straddles 0, so the ranking cannot be told either way
    near = {"standard": (1.26, 1.27, 1.26), "pgd-at": (1.292, 1.287, 1.290),
            "ls": (1.35, 1.34, 1.35), "pgd-at+ls": (1.288, 1.290, 1.289)}  # fmt: skip
    ranked = exp.check_claims(table(near))[2]
    assert ranked.verdict == "INCONCLUSIVE", ranked.detail
    assert (
        "PGD-AT+LS - pgd-at diagnostic" in ranked.detail and "most imbalanced: ls" in ranked.detail
    )
    # below on every seed: FAIL; above on every seed: PASS
    below = {**near, "pgd-at+ls": (1.20, 1.21, 1.20)}
    assert exp.check_claims(table(below))[2].verdict == "FAIL"
    above = {**near, "pgd-at+ls": (1.40, 1.41, 1.42)}
    assert exp.check_claims(table(above))[2].verdict == "PASS"
