"""`trustlab reproduce refool --preset smoke`: clean, ranked Refool, unranked Refool."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from trustlab.cli import app
from trustlab.results import RunStore


@pytest.mark.slow
def test_reproduce_refool_smoke(_isolated_home: Path) -> None:
    out = CliRunner().invoke(
        app,
        ["reproduce", "refool", "--preset", "smoke", "--device", "cpu", "--quiet"],
        catch_exceptions=False,
    )
    marks = re.findall(r"(PASS|FAIL) ", out.output)
    assert len(marks) == 1, out.output
    assert out.exit_code == (0 if marks == ["PASS"] else 1)
    (run,) = RunStore(_isolated_home).list()
    rows = json.loads((run.dir / "table.json").read_text())["rows"]
    assert [r["model"] for r in rows] == ["clean", "refool", "unranked"]
    for r in rows:
        assert 0 <= r["asr"] <= 1 and 0 <= r["clean_acc"] <= 1
    assert rows[0]["rate"] == 0 and abs(rows[1]["rate"] - 0.05) < 0.01
    record = json.loads((run.dir / "work" / "refool-seed0.json").read_text())
    assert record["chosen"] == record["ranking"][0]["candidate"]
    assert len(record["ranking"]) == 6 and len(record["rounds"]) == 1
