"""`trustlab backdoor`: a poisoned model trained, stored as an artefact, read back."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from trustlab.attacks.backdoor.artifact import evaluate_backdoor, load_artifact
from trustlab.cli import app
from trustlab.data import load_dataset
from trustlab.errors import InputError
from trustlab.results import RunStore


def test_backdoor_cli_writes_an_artefact_that_loads_back(_isolated_home: Path) -> None:
    out = CliRunner().invoke(
        app,
        ["backdoor", "--attack", "badnets", "--dataset", "digits", "--model", "cnn-small",
         "--epochs", "3", "--rate", "0.1", "--target", "1", "--quiet", "--device", "cpu"],
        catch_exceptions=False,
    )  # fmt: skip
    assert out.exit_code == 0, out.output
    rep = json.loads(out.output)
    assert rep["asr"] > 0.5 and rep["clean_acc"] > 0.8  # 3 epochs: a working backdoor
    run = RunStore().get(rep["run"])
    assert run.kind == "backdoor" and run.status == "finished"
    names = {a["name"] for a in run.artifacts()}
    assert {"model.safetensors", "trigger.safetensors", "poison.safetensors", "backdoor.json",
            "examples.png"} <= names  # fmt: skip
    art = load_artifact(run.dir)
    train = load_dataset("digits", "train")
    assert art.poison_indices.numel() == round(0.1 * len(train))
    assert (train.y[art.poison_indices] != 1).all()  # all-to-one never poisons the target
    assert art.config["attack"] == "badnets" and art.policy.state()["target"] == 1
    test = load_dataset("digits", "test")
    again = evaluate_backdoor(art.model, test, art.trigger, art.policy)
    assert again == pytest.approx({k: rep[k] for k in ("clean_acc", "asr", "ra")})
    # the exact training set comes back: the trigger on the poisoned indices, label 1
    seen = art.training_set(train)
    idx = art.poison_indices
    assert torch.equal(seen.poison_mask.nonzero().flatten(), idx)
    assert torch.equal(seen.x[idx], art.trigger(train.x[idx])) and (seen.y[idx] == 1).all()
    rest = ~seen.poison_mask
    assert torch.equal(seen.x[rest], train.x[rest]) and torch.equal(seen.y[rest], train.y[rest])
    with pytest.raises(InputError, match="training set has"):
        art.training_set(test)


def test_backdoor_cli_bad_input(_isolated_home: Path) -> None:
    out = CliRunner().invoke(app, ["backdoor", "--attack", "trojannn"])
    assert out.exit_code == 2 and "unknown backdoor attack" in out.output
    out = CliRunner().invoke(app, ["backdoor", "--attack", "badnets", "--target", "10",
                                   "--dataset", "digits"])  # fmt: skip
    assert out.exit_code == 2 and "--target must be in" in out.output
    assert RunStore().list() == []
    with pytest.raises(InputError, match="no backdoor artefact"):
        load_artifact(_isolated_home)


@pytest.mark.parametrize("attack", ["clean-label", "blind"])
def test_backdoor_cli_runs_the_surrogate_and_loss_attacks(
    attack: str, _isolated_home: Path
) -> None:
    out = CliRunner().invoke(
        app,
        ["backdoor", "--attack", attack, "--dataset", "digits", "--model", "cnn-small",
         "--epochs", "2", "--rate", "0.3", "--quiet", "--device", "cpu"],
        catch_exceptions=False,
    )  # fmt: skip
    assert out.exit_code == 0, out.output
    rep = json.loads(out.output)
    art = load_artifact(RunStore().get(rep["run"]).dir)
    train = load_dataset("digits", "train")
    seen = art.training_set(train)
    if attack == "blind":  # the data is untouched: the loss carried the backdoor
        assert art.poison_indices.numel() == 0 and torch.equal(seen.x, train.x)
        assert rep["asr"] > 0.5
    else:  # 30% of the target class, labels kept, PGD-erased and patched
        idx = art.poison_indices
        assert idx.numel() == round(0.3 * int((train.y == 0).sum()))
        assert (train.y[idx] == 0).all() and torch.equal(seen.y, train.y)
        assert not torch.equal(seen.x[idx], art.trigger(train.x[idx]))  # the PGD perturbation
        assert art.trigger.pattern.shape[-1] == 4  # a quarter of the 16-pixel side
