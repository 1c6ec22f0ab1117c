"""`trustlab reproduce medical --preset smoke`: two datasets, robustness, three detectors."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from trustlab.cli import app
from trustlab.experiments.base import ResultTable
from trustlab.experiments.medical import MedicalReproduction
from trustlab.results import RunStore


@pytest.mark.slow
def test_reproduce_medical_smoke(_isolated_home: Path) -> None:
    out = CliRunner().invoke(
        app,
        ["reproduce", "medical", "--preset", "smoke", "--device", "cpu", "--quiet"],
        catch_exceptions=False,
    )
    marks = re.findall(r"(PASS|FAIL|INCONCLUSIVE) ", out.output)
    assert len(marks) == 2, out.output
    assert out.exit_code == (0 if set(marks) == {"PASS"} else 1)
    (run,) = RunStore(_isolated_home).list()
    rows = json.loads((run.dir / "table.json").read_text())["rows"]
    assert [r["dataset"] for r in rows] == ["fundus2", "shapes10"]
    for r in rows:
        assert 0 <= r["robust_acc"] <= r["clean_acc"]
        for k in ("deep_auc", "lid_auc", "kdbu_auc"):
            assert 0 <= r[k] <= 1
    for name in ("fundus2", "shapes10"):
        assert (run.dir / f"roc-{name}.png").stat().st_size > 0


def test_reproduce_medical_refuses_another_dataset(_isolated_home: Path) -> None:
    out = CliRunner().invoke(app, ["reproduce", "medical", "--dataset", "digits"])
    assert out.exit_code == 2 and "takes no other dataset" in out.output
    assert RunStore(_isolated_home).list() == []


def _table(per_seed: list[tuple[float, float, float, float]]) -> ResultTable:
    """A table by hand: per seed ``(robust fundus2, robust shapes10, deep AUC, LID AUC)``."""
    exp = MedicalReproduction()
    rows = []
    for seed, (med, nat, deep, lid) in enumerate(per_seed):
        rows.append({"dataset": "fundus2", "seed": seed, "robust_acc": med, "deep_auc": deep,
                     "lid_auc": lid})  # fmt: skip
        rows.append({"dataset": "shapes10", "seed": seed, "robust_acc": nat, "deep_auc": 0.7,
                     "lid_auc": 0.7})  # fmt: skip
    return ResultTable(exp.keys, exp.metrics, rows)


def test_claims_judge_the_per_seed_numbers_with_their_interval() -> None:
    exp = MedicalReproduction()
    # gaps +20 and -5 points: the mean is above 0, the interval straddles it; deep AUC 0.99 and
    # 0.93 (mean 0.96 >= 0.95, interval straddles); LID clearly above
    robust, detect = exp.check_claims(_table([(0.10, 0.30, 0.99, 0.98), (0.35, 0.30, 0.93, 0.97)]))
    assert robust.verdict == "INCONCLUSIVE" and "+20.0 pts/-5.0 pts" in robust.detail
    assert detect.verdict == "INCONCLUSIVE" and "0.990/0.930" in detect.detail
    robust, detect = exp.check_claims(
        _table([(0.10, 0.30, 0.99, 0.98), (0.12, 0.35, 0.97, 0.97), (0.05, 0.28, 0.98, 0.99)])
    )
    assert robust.verdict == "PASS" and detect.verdict == "PASS"
    # LID below 0.95 on every seed: the compound claim fails whatever the deep features do
    _, detect = exp.check_claims(_table([(0.10, 0.30, 0.99, 0.90), (0.12, 0.35, 0.97, 0.91)]))
    assert detect.verdict == "FAIL"
