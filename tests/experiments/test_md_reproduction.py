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


def _table(per_seed: list[dict[str, tuple[float, float]]]) -> ResultTable:
    """A table by hand: per seed ``{model: (pgd_acc, md_acc)}``; the LS model most imbalanced."""
    exp = MDReproduction()
    rows = [
        {
            "model": m,
            "seed": seed,
            "clean_acc": 0.9,
            "pgd_acc": pgd,
            "md_acc": md,
            "imbalance": 5.0 if m == "ls" else 1.5,
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
    assert "shown, not judged: PGD-AT+LS PGD - MD 10.0 pts" in gap.detail
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
