"""`trustlab reproduce sgm --preset smoke`: three trained models, four transfer attacks, claims."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from trustlab.cli import app
from trustlab.results import RunStore


@pytest.mark.slow
def test_reproduce_sgm_smoke_in_two_workers(_isolated_home: Path) -> None:
    out = CliRunner().invoke(
        app,
        ["reproduce", "sgm", "--preset", "smoke", "--device", "cpu", "--workers", "2", "--quiet"],
        catch_exceptions=False,
    )
    marks = re.findall(r"(PASS|FAIL) ", out.output)
    assert len(marks) == 2, out.output
    assert out.exit_code == (0 if set(marks) == {"PASS"} else 1)
    (run,) = RunStore(_isolated_home).list()
    rows = json.loads((run.dir / "table.json").read_text())["rows"]
    assert [(r["attack"], r["target"]) for r in rows] == [
        (a, t) for a in ("pgd", "sgm", "mi", "sgm+mi") for t in ("mlp", "cnn-small")
    ]
    assert all(0 <= r["success"] <= 1 for r in rows)
    work = sorted(p.name for p in (run.dir / "work").glob("*.safetensors"))
    assert work == [f"{m}-seed0.safetensors" for m in ("cnn-small", "mlp", "source")]
