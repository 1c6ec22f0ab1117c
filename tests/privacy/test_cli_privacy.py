"""`trustlab mia` and `trustlab defend-privacy`: thin commands over run_mia and
run_privacy_defense (their behaviour is tested in test_mia.py and test_jem.py)."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from trustlab.cli import app
from trustlab.results import RunStore


def _train(home: Path) -> None:
    out = CliRunner().invoke(
        app, ["train", "--dataset", "digits", "--model", "mlp", "--epochs", "2", "--quiet"]
    )
    assert out.exit_code == 0, out.output


def test_mia_cli_stores_a_run_and_prints_its_metrics(_isolated_home: Path) -> None:
    _train(_isolated_home)
    out = CliRunner().invoke(app, ["mia", "1", "--attack", "loss", "--n", "100", "--quiet"])
    assert out.exit_code == 0, out.output
    doc = json.loads(out.output.strip().splitlines()[-1])
    assert doc["attack"] == "loss" and 0 <= doc["auc"] <= 1 and doc["advantage"] >= 0
    runs = RunStore(_isolated_home).list()
    assert {r.kind for r in runs} == {"train", "mia"}


def test_privacy_cli_errors_exit_nonzero_with_one_message(_isolated_home: Path) -> None:
    _train(_isolated_home)
    bad = CliRunner().invoke(app, ["mia", "1", "--attack", "nope"])
    assert bad.exit_code != 0 and "unknown privacy attack" in bad.output
    few = CliRunner().invoke(app, ["mia", "1", "--shadows", "1"])
    assert few.exit_code != 0 and "shadows" in few.output
    missing = CliRunner().invoke(app, ["mia", "99"])
    assert missing.exit_code != 0
    opt = CliRunner().invoke(app, ["mia", "1", "--attack", "rmia", "--options", '{"k": 4}'])
    assert opt.exit_code == 2 and "'rmia' has no option 'k'; it takes: gamma" in opt.output
    not_json = CliRunner().invoke(app, ["mia", "1", "--attack", "rmia", "--options", "gamma=1"])
    assert not_json.exit_code == 2 and "--options" in not_json.output
    other = CliRunner().invoke(app, ["defend-privacy", "1", "--defense", "dp"])
    assert other.exit_code != 0 and "unknown privacy defense" in other.output
    assert len(RunStore(_isolated_home).list()) == 1  # nothing stored by the failures


def test_mia_audits_a_defended_run_with_threshold_attacks_only(_isolated_home: Path) -> None:
    from trustlab.workflows.privacy_defense import run_privacy_defense

    _train(_isolated_home)
    options = {"buffer_size": 200, "steps": 5, "sample_batch": 50, "synthetic_size": 200}
    defended, _ = run_privacy_defense(1, options=options, retrain="source", progress=False)
    out = CliRunner().invoke(
        app, ["mia", str(defended.id), "--attack", "loss", "--n", "100", "--quiet"]
    )
    assert out.exit_code == 0, out.output
    mia = [r for r in RunStore(_isolated_home).list() if r.kind == "mia"]
    assert len(mia) == 1 and mia[0].config["target"] == defended.id
    # its shadows could not replay the defense: the shadow attacks are refused
    lira = CliRunner().invoke(app, ["mia", str(defended.id), "--attack", "lira"])
    assert lira.exit_code != 0 and "defended model" in lira.output
