"""`trustlab attack` and `trustlab evaluate` on a stored run or a model file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from trustlab.attacks.evasion.suite import attack_names, make_attack, make_suite
from trustlab.cli import app
from trustlab.errors import InputError

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


@pytest.fixture
def digits_run(_isolated_home: Path) -> str:
    out = invoke(
        "train",
        "--dataset",
        "digits",
        "--model",
        "mlp",
        "--epochs",
        "2",
        "--lr",
        "0.05",
        "--quiet",
        "--device",
        "cpu",
    )
    assert out.exit_code == 0, out.output
    return "1"


def test_attack_a_run_and_write_a_grid(digits_run: str, tmp_path: Path) -> None:
    png = tmp_path / "grid.png"
    out = invoke(
        "attack",
        digits_run,
        "--attack",
        "pgd",
        "--eps",
        "8/255",
        "--n",
        "60",
        "--png",
        str(png),
        "--device",
        "cpu",
    )
    assert out.exit_code == 0, out.output
    rep = json.loads(out.output)
    assert rep["n"] == 60 and rep["robust_accuracy"] <= rep["clean_accuracy"]
    assert png.exists() and png.read_bytes()[:4] == b"\x89PNG"
    model_file = Path(_home()) / "run-000001" / "model.safetensors"
    out = invoke(
        "attack",
        str(model_file),
        "--attack",
        "fgsm",
        "--dataset",
        "digits",
        "--n",
        "30",
        "--device",
        "cpu",
    )
    assert out.exit_code == 0 and json.loads(out.output)["n"] == 30


def _home() -> str:
    import os

    return os.environ["TRUSTLAB_HOME"]


@pytest.mark.parametrize(
    ("args", "pattern"),
    [
        (["--attack", "zzz"], "unknown evasion attack"),
        (["--eps", "big"], "not a number"),
        (["--n", "0"], "--n"),
        (["--dataset", "fundus2"], ""),
    ],
)
def test_attack_errors(digits_run: str, args: list[str], pattern: str) -> None:
    out = invoke("attack", digits_run, *args, "--device", "cpu")
    assert out.exit_code == 2 and pattern in out.output, out.output


def test_names_and_suites() -> None:
    import torch

    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
    assert {"fgsm", "pgd", "pgd-cw"} <= set(attack_names())
    assert make_attack("pgd", model, "8/255").steps == 20
    with pytest.raises(InputError, match="suite"):
        make_suite("huge", model)


def test_evaluate_suite_cascade(digits_run: str) -> None:
    out = invoke("evaluate", digits_run, "--suite", "quick", "--n", "40", "--device", "cpu")
    assert out.exit_code == 0, out.output
    rep = json.loads(out.output)
    assert list(rep["after_attack"]) == ["pgd", "md"]
    assert rep["robust_accuracy"] == rep["after_attack"]["md"] <= rep["after_attack"]["pgd"]
    out = invoke("evaluate", digits_run, "--suite", "nope", "--device", "cpu")
    assert out.exit_code == 2


def _train(dataset: str, model: str, seed: str) -> None:
    out = invoke(
        "train", "--dataset", dataset, "--model", model, "--epochs", "1", "--lr", "0.05",
        "--seed", seed, "--quiet", "--device", "cpu",
    )  # fmt: skip
    assert out.exit_code == 0, out.output


def test_transfer_from_a_residual_source_to_two_targets(_isolated_home: Path) -> None:
    from trustlab.results import RunStore

    for model, seed in [("resnet8", "0"), ("mlp", "1"), ("cnn-small", "2")]:
        _train("digits", model, seed)
    out = invoke(
        "transfer", "--source", "1", "--targets", "2", "3", "--attack", "sgm-mi",
        "--n", "40", "--steps", "3", "--device", "cpu",
    )  # fmt: skip
    assert out.exit_code == 0, out.output
    rep = json.loads(out.output)
    assert set(rep["targets"]) == {"2", "3"}
    for t in rep["targets"].values():
        assert 0 <= t["success_rate"] <= 1 and t["n"] <= 40
    run = RunStore().get(rep["run"])
    assert run.kind == "transfer" and run.status == "finished"
    assert run.config["targets"] == ["2", "3"] and run.config["dataset"] == "digits"
    assert json.loads((run.dir / "transfer.json").read_text())["mean_success"] == pytest.approx(
        rep["mean_success"]
    )
    comma = invoke("transfer", "--source", "1", "--targets", "2,3", "--n", "10", "--steps", "1")
    assert comma.exit_code == 0 and set(json.loads(comma.output)["targets"]) == {"2", "3"}


@pytest.mark.parametrize(
    "args, message",
    [
        (["--attack", "apgd-ce"], "unknown transfer attack"),
        (["--bogus", "1"], "unknown option '--bogus'"),
        (["--steps", "0"], "--steps must be >= 1"),
    ],
)
def test_transfer_bad_input(digits_run: str, args: list[str], message: str) -> None:
    out = runner.invoke(app, ["transfer", "--source", "1", "--targets", "1", *args])
    assert out.exit_code == 2 and message in out.output


def test_advcam_writes_the_grid_where_it_says(_isolated_home: Path, tmp_path: Path) -> None:
    _train("digits", "resnet8", "0")
    png = tmp_path / "cam" / "grid.png"
    png.parent.mkdir()
    out = invoke(
        "advcam", "1", "--png", str(png), "--steps", "5", "--n", "4",
        "--style", "coffee", "--device", "cpu",
    )  # fmt: skip
    assert out.exit_code == 0, out.output
    rep = json.loads(out.output)
    assert rep["png"] == str(png) and png.stat().st_size > 0 and rep["n"] == 4
    assert 0 <= rep["success"] <= 1
    targeted = invoke("advcam", "1", "--png", str(png), "--steps", "2", "--n", "2",
                      "--target-class", "3", "--eot", "--style-layers", "layer1,layer2",
                      "--content-layer", "layer2")  # fmt: skip
    assert targeted.exit_code == 0, targeted.output


@pytest.mark.parametrize(
    "args, message",
    [
        (["--style", "nosuch"], "neither a bundled photograph"),
        (["--region", "0"], "--region must be in"),
        (["--target-class", "10"], "--target-class must be in"),
        ([], "no default AdvCam layers for MLP"),
    ],
)
def test_advcam_bad_input(digits_run: str, tmp_path: Path, args: list[str], message: str) -> None:
    out = runner.invoke(app, ["advcam", "1", "--png", str(tmp_path / "g.png"), *args])
    assert out.exit_code == 2 and message in out.output


def test_detect_prints_auc_per_split(_isolated_home: Path) -> None:
    _train("digits", "resnet8", "0")
    out = invoke(
        "detect", "1", "--detector", "deep-features", "--eps", "0.3", "--n", "150",
        "--splits", "2", "--device", "cpu",
    )  # fmt: skip
    assert out.exit_code == 0, out.output
    rep = json.loads(out.output)
    assert len(rep["auc"]) == 2 and 0 <= rep["mean_auc"] <= 1 and rep["n_adversarial"] > 0
    cross = invoke("detect", "1", "--detector", "kd-bu", "--eps", "0.3", "--n", "150",
                   "--splits", "1", "--transfer-attack", "fgsm")  # fmt: skip
    assert cross.exit_code == 0, cross.output
    assert json.loads(cross.output)["tested_on"] == "fgsm"
    bad = runner.invoke(app, ["detect", "1", "--detector", "magic"])
    assert bad.exit_code == 2 and "unknown detector" in bad.output
