"""`trustlab reproduce md --preset smoke`: four models, PGD-20 vs MD, the diagnostic, claims."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from trustlab.cli import app
from trustlab.results import RunStore


@pytest.mark.slow
def test_reproduce_md_smoke(_isolated_home: Path) -> None:
    out = CliRunner().invoke(
        app,
        ["reproduce", "md", "--preset", "smoke", "--device", "cpu", "--workers", "1", "--quiet"],
        catch_exceptions=False,
    )
    marks = re.findall(r"(PASS|FAIL) ", out.output)
    assert len(marks) == 3, out.output
    assert out.exit_code == (0 if set(marks) == {"PASS"} else 1)
    (run,) = RunStore(_isolated_home).list()
    rows = json.loads((run.dir / "table.json").read_text())["rows"]
    assert [r["model"] for r in rows] == ["standard", "pgd-at", "ls", "pgd-at+ls"]
    for r in rows:
        assert 0 <= r["md_acc"] <= r["clean_acc"] and 0 <= r["pgd_acc"] <= r["clean_acc"]
        assert r["imbalance"] >= 1.0  # max(r, 1/r)
