"""`run_evaluate` and `trustlab evaluate` run the sanity checks first, store their findings
under "sanity" (evaluate.json and the run's summary) and print a warning for each problem."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

import trustlab.workflows.evasion as wf
from trustlab.attacks.evasion.sanity import CHECKS
from trustlab.cli import app
from trustlab.models import create_model
from trustlab.results import RunStore
from trustlab.train.checkpoint import save_model


@pytest.fixture
def model_file(tmp_path: Path) -> str:
    torch.manual_seed(0)
    net = create_model("mlp", num_classes=10, in_channels=1, image_size=16)
    return str(save_model(net, tmp_path / "mlp.safetensors"))


@pytest.fixture
def softmax_outputs(monkeypatch: pytest.MonkeyPatch) -> None:
    """The loaded model returns probabilities (a final softmax)."""
    load = wf.load_target

    def with_softmax(*args, **kwargs):
        model, data, dev = load(*args, **kwargs)
        return nn.Sequential(model, nn.Softmax(dim=1)).eval(), data, dev

    monkeypatch.setattr(wf, "load_target", with_softmax)


def test_findings_are_stored(model_file, tmp_path):
    store = RunStore(tmp_path / "store")
    run, out = wf.run_evaluate(
        model_file, "quick", dataset="digits", n=12, device="cpu", store=store
    )
    stored = json.loads((run.dir / "evaluate.json").read_text())
    assert [f["check"] for f in out["sanity"]] == list(CHECKS)
    assert all(f["ok"] for f in out["sanity"])
    assert stored["sanity"] == out["sanity"] == store.get(run.id).summary["sanity"]


def test_a_warning_is_stored_and_printed(model_file, tmp_path, softmax_outputs, _isolated_home):
    store = RunStore(tmp_path / "store")
    run, out = wf.run_evaluate(
        model_file, "quick", dataset="digits", n=12, device="cpu", store=store
    )
    bad = [f for f in store.get(run.id).summary["sanity"] if not f["ok"]]
    assert [f["check"] for f in bad] == ["probabilities"]
    assert "softmax is already applied" in bad[0]["message"]

    res = CliRunner().invoke(
        app,
        ["evaluate", model_file, "--dataset", "digits", "--n", "12", "--device", "cpu"],
        catch_exceptions=False,
    )
    assert res.exit_code == 0, res.output
    assert "warning: sanity check probabilities:" in res.stderr
    assert "Return the logits" in " ".join(res.stderr.split())
    printed = json.loads(res.stdout)
    assert [f["check"] for f in printed["sanity"] if not f["ok"]] == ["probabilities"]
