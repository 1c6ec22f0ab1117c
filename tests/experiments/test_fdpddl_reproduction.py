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
from trustlab.results import RunStore


@pytest.mark.slow
def test_reproduce_fdpddl_smoke(_isolated_home: Path) -> None:
    out = CliRunner().invoke(
        app,
        ["reproduce", "fdpddl", "--preset", "smoke", "--device", "cpu", "--quiet"],
        catch_exceptions=False,
    )
    marks = re.findall(r"(PASS|FAIL) ", out.output)
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
