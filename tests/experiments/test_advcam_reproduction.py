"""`trustlab reproduce advcam --preset smoke`: one victim, PGD vs AdvCam vs AdvCam-EOT."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from trustlab.cli import app
from trustlab.experiments.camouflage import central_mask
from trustlab.results import RunStore


def test_central_mask() -> None:
    m = central_mask((10, 10), 0.6)
    assert int(m.sum()) == 36 and m[2:8, 2:8].eq(1).all()


@pytest.mark.slow
def test_reproduce_advcam_smoke(_isolated_home: Path) -> None:
    out = CliRunner().invoke(
        app,
        ["reproduce", "advcam", "--preset", "smoke", "--device", "cpu", "--quiet"],
        catch_exceptions=False,
    )
    marks = re.findall(r"(PASS|FAIL) ", out.output)
    assert len(marks) == 3, out.output
    assert out.exit_code == (0 if set(marks) == {"PASS"} else 1)
    (run,) = RunStore(_isolated_home).list()
    rows = json.loads((run.dir / "table.json").read_text())["rows"]
    assert [r["method"] for r in rows] == ["pgd", "advcam", "advcam-eot"]
    for r in rows:
        assert 0 <= r["success"] <= 1 and 0 <= r["transformed_success"] <= 1
        assert r["style_loss"] >= 0
    assert (run.dir / "advcam.png").stat().st_size > 0
