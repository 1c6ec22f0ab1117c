"""`trustlab reproduce fdpddl --preset smoke`: FDPDDL and its three baselines in the three
settings, with the four claims of methods.md decided and every seed's numbers in the table."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from trustlab.cli import app
from trustlab.collab.settings import SETTINGS
from trustlab.experiments.base import ResultTable
from trustlab.experiments.fdpddl import FDPDDLReproduction
from trustlab.results import RunStore


@pytest.mark.slow
def test_reproduce_fdpddl_smoke(_isolated_home: Path) -> None:
    out = CliRunner().invoke(
        app,
        ["reproduce", "fdpddl", "--preset", "smoke", "--device", "cpu", "--quiet"],
        catch_exceptions=False,
    )
    marks = re.findall(r"(PASS|FAIL|INCONCLUSIVE) ", out.output)
    assert len(marks) == 4, out.output
    assert out.exit_code == (0 if marks == ["PASS"] * 4 else 1)
    (run,) = RunStore(_isolated_home).list()
    rows = json.loads((run.dir / "table.json").read_text())["rows"]
    assert [r["setting"] for r in rows] == ["balanced", "imbalanced-size", "imbalanced-class"]
    for r in rows:
        for key in ("mean_final", "mean_standalone", "distributed", "centralised"):
            assert 0 <= r[key] <= 1
        assert math.isfinite(r["max_epsilon"]) and r["max_epsilon"] > 0
        finals = [r[f"p{i}_final"] for i in range(3)]
        assert r["mean_final"] == pytest.approx(sum(finals) / 3)
        assert r["min_gain"] == pytest.approx(
            min(r[f"p{i}_final"] - r[f"p{i}_standalone"] for i in range(3))
        )
    # the balanced shards are equal: the size-fairness is undefined there
    assert math.isnan(rows[0]["fairness_size"])
    assert len(list((run.dir / "work").glob("*-seed0.png"))) == 3


def _fdpddl_table(**per_seed: list[float]) -> ResultTable:
    """A hand-made table over 3 seeds: every setting at fairness 0.9, smallest gain +2 points,
    mean final accuracy 1 point below DSSGD's 80%, epsilon 5, except the ``imbalanced-class``
    setting's values given in ``per_seed`` (``fairness``, ``min_gain``, ``mean_final``)."""
    rows = []
    for s in SETTINGS:
        for seed in range(3):
            row = {"setting": s, "seed": seed, "fairness": 0.9, "min_gain": 0.02,
                   "mean_final": 0.79, "distributed": 0.8, "max_epsilon": 5.0}  # fmt: skip
            if s == "imbalanced-class":
                row.update({k: v[seed] for k, v in per_seed.items()})
            rows.append(row)
    exp = FDPDDLReproduction()
    return ResultTable(exp.keys, exp.metrics, rows)


def test_fdpddl_claims_hold_in_all_settings_judged_with_the_interval() -> None:
    exp = FDPDDLReproduction()
    claims = exp.check_claims(_fdpddl_table())
    assert [c.verdict for c in claims] == ["PASS"] * 4, [c.detail for c in claims]
    assert "balanced: fairness r 0.90 (95% interval [0.90, 0.90] over 3 seeds" in claims[0].detail
    # in one setting each mean is on the claimed side but one seed of three is not
    table = _fdpddl_table(
        fairness=[0.95, 0.95, 0.6], min_gain=[0.03, 0.03, -0.02], mean_final=[0.8, 0.8, 0.7]
    )
    fair, loss, near, eps = exp.check_claims(table)
    assert [fair.verdict, loss.verdict, near.verdict] == ["INCONCLUSIVE"] * 3
    assert eps.verdict == "PASS"
    assert "imbalanced-class: fairness r 0.83" in fair.detail and "0.95/0.95/0.60" in fair.detail
    assert "needs >= -5.0 points" in near.detail
    # one setting below every bar in every seed fails each claim however the others do
    table = _fdpddl_table(
        fairness=[0.5, 0.6, 0.7], min_gain=[-0.03, -0.02, -0.01], mean_final=[0.7, 0.7, 0.7]
    )
    assert [c.verdict for c in exp.check_claims(table)] == ["FAIL", "FAIL", "FAIL", "PASS"]
    # the epsilon claim has no interval: one infinite epsilon fails it
    rows = [{**r, "max_epsilon": math.inf if i == 0 else r["max_epsilon"]}
            for i, r in enumerate(_fdpddl_table().rows)]  # fmt: skip
    eps = exp.check_claims(ResultTable(exp.keys, exp.metrics, rows))[3]
    assert eps.verdict == "FAIL"
