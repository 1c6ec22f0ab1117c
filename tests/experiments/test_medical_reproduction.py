"""`trustlab reproduce medical --preset smoke`: two datasets, robustness, three detectors."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from trustlab.cli import app
from trustlab.results import RunStore


@pytest.mark.slow
def test_reproduce_medical_smoke(_isolated_home: Path) -> None:
    out = CliRunner().invoke(
        app,
        ["reproduce", "medical", "--preset", "smoke", "--device", "cpu", "--quiet"],
        catch_exceptions=False,
    )
    marks = re.findall(r"(PASS|FAIL) ", out.output)
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
