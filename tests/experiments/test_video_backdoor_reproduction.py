"""`trustlab reproduce video-backdoor --preset smoke`: clean, plain patch, adversarial patch."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from trustlab.cli import app
from trustlab.results import RunStore


@pytest.mark.slow
def test_reproduce_video_backdoor_smoke(_isolated_home: Path) -> None:
    out = CliRunner().invoke(
        app,
        ["reproduce", "video-backdoor", "--preset", "smoke", "--device", "cpu", "--quiet"],
        catch_exceptions=False,
    )
    marks = re.findall(r"(PASS|FAIL) ", out.output)
    assert len(marks) == 1, out.output
    assert out.exit_code == (0 if marks == ["PASS"] else 1)
    (run,) = RunStore(_isolated_home).list()
    rows = json.loads((run.dir / "table.json").read_text())["rows"]
    assert [r["model"] for r in rows] == ["clean", "plain", "adversarial"]
    for r in rows:
        assert 0 <= r["asr"] <= 1 and 0 <= r["clean_acc"] <= 1 and r["asr"] + r["ra"] <= 1 + 1e-6
    assert (run.dir / "work" / "poisoned-seed0.png").is_file()
