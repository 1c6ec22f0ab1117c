"""`trustlab reproduce dp-audit --preset smoke`, and its claims judged on tables built by hand."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from trustlab.cli import app
from trustlab.experiments.base import ResultTable
from trustlab.experiments.dp_audit import NON_PRIVATE, DPAudit
from trustlab.results import RunStore


@pytest.mark.slow
def test_reproduce_dp_audit_smoke(_isolated_home: Path) -> None:
    out = CliRunner().invoke(
        app,
        ["reproduce", "dp-audit", "--preset", "smoke", "--device", "cpu", "--workers", "1",
         "--quiet"],
        catch_exceptions=False,
    )  # fmt: skip
    marks = re.findall(r"(PASS|FAIL|INCONCLUSIVE) ", out.output)
    assert len(marks) == 2, out.output
    assert out.exit_code == (0 if marks == ["PASS"] * 2 else 1)
    assert marks[0] == "PASS"  # a lower bound above the accountant would be a bug
    (run,) = RunStore(_isolated_home).list()
    rows = json.loads((run.dir / "table.json").read_text())["rows"]
    assert [r["privacy"] for r in rows] == ["eps=1", "eps=4", "eps=8", NON_PRIVATE]
    for r in rows[:3]:
        target = float(r["privacy"].split("=")[1])
        assert 0 < r["epsilon"] <= target + 0.05 and r["noise_multiplier"] > 0
        assert 0 <= r["epsilon_lb"] <= r["epsilon"] and r["delta"] == 1e-5
    assert "epsilon" not in rows[3] and rows[3]["noise_multiplier"] == 0


def _table(lb: dict[str, list[float]], eps: dict[str, float]) -> ResultTable:
    rows = []
    for row, values in lb.items():
        for seed, v in enumerate(values):
            r = {"privacy": row, "seed": seed, "epsilon_lb": v, "canary_auc": 0.6,
                 "cp_epsilon_lb": v / 2}  # fmt: skip
            if row in eps:
                r["epsilon"] = eps[row]
            rows.append(r)
    return ResultTable(DPAudit.keys, DPAudit.metrics, rows)


def test_claims_judge_every_seed_and_the_interval() -> None:
    below, power = DPAudit.claims
    eps = {"eps=1": 1.0, "eps=8": 8.0}
    good = _table({"eps=1": [0.1, 0.2, 0.0], "eps=8": [0.5, 0.9, 0.7],
                   NON_PRIVATE: [2.5, 3.0, 2.8]}, eps)  # fmt: skip
    assert below.evaluate(good).verdict == "PASS"
    assert power.evaluate(good).verdict == "PASS"
    # one seed above its accountant fails the audit, whatever the mean says
    bad = _table({"eps=1": [0.1, 1.3, 0.0], "eps=8": [0.5, 0.9, 0.7],
                  NON_PRIVATE: [0.5, 3.0, 0.2]}, eps)  # fmt: skip
    assert below.evaluate(bad).verdict == "FAIL"
    assert power.evaluate(bad).verdict == "INCONCLUSIVE"  # the interval straddles 1
