"""`trustlab reproduce meminf-jem --preset smoke`: the undefended target under the threshold
attacks and LiRA, the JEM-defended and the DP-SGD models under the threshold attacks."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from trustlab.cli import app
from trustlab.results import RunStore


@pytest.mark.slow
def test_reproduce_meminf_jem_smoke(_isolated_home: Path) -> None:
    out = CliRunner().invoke(
        app,
        ["reproduce", "meminf-jem", "--preset", "smoke", "--device", "cpu", "--quiet"],
        catch_exceptions=False,
    )
    marks = re.findall(r"(PASS|FAIL) ", out.output)
    assert len(marks) == 3, out.output
    assert out.exit_code == (0 if marks == ["PASS"] * 3 else 1)
    (run,) = RunStore(_isolated_home).list()
    rows = json.loads((run.dir / "table.json").read_text())["rows"]
    assert [r["model"] for r in rows] == ["undefended", "jem", "dp-sgd"]
    for r in rows:
        assert 0 <= r["test_acc"] <= 1 and 0 <= r["train_acc"] <= 1
        assert r["advantage"] == max(r["loss_advantage"], r["confidence_advantage"])
        assert 0 <= r["loss_auc"] <= 1 and 0 <= r["loss_tpr_at_01fpr"] <= r["loss_tpr_at_1fpr"]
    assert "lira_auc" in rows[0] and "lira_auc" not in rows[1]
    assert 0 < rows[2]["epsilon"] <= 8 + 1e-6 and rows[2]["delta"] == 1e-5
    # the shadows are cached in the run's work folder
    assert len(list((run.dir / "work" / "shadows").rglob("*.safetensors"))) == 4
