"""`run_defense` against an artefact, and `trustlab defend`."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from trustlab.attacks.backdoor.artifact import save_artifact, train_backdoor
from trustlab.cli import app
from trustlab.data import load_dataset
from trustlab.defenses.backdoor.evaluate import run_defense, split_clean
from trustlab.errors import InputError
from trustlab.models.spec import ModelSpec
from trustlab.registry import DEFENSES
from trustlab.results import RunStore
from trustlab.train import TrainSettings


@pytest.fixture(scope="module")
def badnets():
    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    torch.manual_seed(0)
    model = ModelSpec.for_data("cnn-small", train).build()
    settings = TrainSettings(epochs=3, lr=0.05, batch_size=64, seed=0)
    art = train_backdoor("badnets", train, test, model, settings, rate=0.1, seed=0)
    art.config["dataset"] = "digits"
    return art, train, test


OPTIONS = {
    "nc": {"epochs": 3},
    "strip": {"overlays": 20},
    "spectral": {"eps": 0.5},
    "ac": {},
    "fine-pruning": {},
    "adv-filter": {"eps": 0.1, "alpha": 0.05, "steps": 2},
    "anp": {"iterations": 5},  # cnn-small has no BatchNorm: NaN cells (tested in test_anp)
    "i-bau": {"rounds": 1},
}


@pytest.mark.parametrize("name", DEFENSES.names())
def test_every_defense_runs_on_an_artefact_without_touching_it(badnets, name: str) -> None:
    art, train, test = badnets
    before = {k: v.clone() for k, v in art.model.state_dict().items()}
    settings = TrainSettings(epochs=1, lr=0.05, batch_size=64, seed=0)
    keep: dict = {}
    opts = OPTIONS.get(name, {})
    out = run_defense(name, art, train, test, settings, opts, seed=0, keep=keep)
    assert out["asr"] > 0.5 and 0 <= out["clean_acc"] <= 1
    assert all(isinstance(v, float) for v in out.values())
    for k in ("precision", "recall", "auroc", "tpr", "fpr", "der", "asr_after"):
        if k in out and not math.isnan(out[k]):
            assert 0 <= out[k] <= 1, (k, out[k])
    assert DEFENSES.get(name).meta["protocol"] == "input-detector" or "report" in keep
    after = art.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # defenses work on copies
    if name == "strip":  # triggered inputs are lower-entropy: better than chance
        assert out["auroc"] > 0.6
    if DEFENSES.get(name).meta["protocol"] in ("repairer", "inspector") or name in (
        "adv-filter", "abl"
    ):  # fmt: skip
        assert {"clean_acc_after", "asr_after", "der"} <= set(out)


def test_split_and_errors(badnets) -> None:
    art, train, test = badnets
    a, b = split_clean(test, 0)
    assert len(a) + len(b) == len(test) and len(a) == len(test) // 2
    with pytest.raises(InputError, match="unknown backdoor defense"):
        run_defense("magic", art, train, test)


def test_defend_cli_stores_the_result(badnets, _isolated_home: Path) -> None:
    art = badnets[0]
    run = RunStore().create_run("backdoor", "badnets-digits", {"dataset": "digits"})
    save_artifact(run.dir, art)
    run.finish(art.metrics)
    out = CliRunner().invoke(
        app, ["defend", str(run.id), "--defense", "nc", "--epochs", "2", "--quiet"],
        catch_exceptions=False,
    )  # fmt: skip
    assert out.exit_code == 0, out.output
    rep = json.loads(out.output)
    stored = RunStore().get(rep["run"])
    doc = json.loads((stored.dir / "defense.json").read_text())
    assert doc["defense"] == "nc" and len(doc["report"]["norms"]) == 10
    assert (stored.dir / "triggers.png").is_file()
    bad = CliRunner().invoke(app, ["defend", str(run.id), "--defense", "magic"])
    assert bad.exit_code == 2 and "unknown backdoor defense" in bad.output
    missing = CliRunner().invoke(app, ["defend", str(_isolated_home / "nowhere")])
    assert missing.exit_code == 2 and "backdoor artefact" in missing.output
    runs = len(RunStore().list())
    no_epochs = CliRunner().invoke(
        app, ["defend", str(run.id), "--defense", "strip", "--epochs", "3"]
    )
    assert no_epochs.exit_code == 2 and "takes no --epochs" in no_epochs.output
    assert len(RunStore().list()) == runs  # refused before anything was stored
    fp = CliRunner().invoke(
        app, ["defend", str(run.id), "--defense", "fine-pruning", "--epochs", "1", "--quiet"]
    )
    assert fp.exit_code == 0, fp.output
    assert {"pruned", "asr_after", "der"} <= set(json.loads(fp.output))
