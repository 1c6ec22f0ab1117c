"""run_transfer (the library behind ``trustlab transfer``) and the target loaders: the run is
stored with the CLI's config and artefact, and bad input is refused before anything is stored."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from trustlab.attacks.evasion import SGM, evaluate_transfer
from trustlab.data import load_dataset
from trustlab.errors import InputError
from trustlab.models.spec import ModelSpec
from trustlab.results import RunStore
from trustlab.train.checkpoint import save_model
from trustlab.workflows.targets import load_target, load_target_model
from trustlab.workflows.transfer import run_transfer


@pytest.fixture
def models(tmp_path: Path) -> dict[str, str]:
    """Untrained digits models saved as files: a residual source and two targets."""
    train = load_dataset("digits", "train")
    out = {}
    for i, name in enumerate(("resnet8", "mlp", "cnn-small")):
        torch.manual_seed(i)
        model = ModelSpec.for_data(name, train).build()
        out[name] = str(save_model(model, tmp_path / f"{name}.safetensors"))
    return out


def test_load_target(models: dict[str, str]) -> None:
    model, dataset, root = load_target_model(models["mlp"], "cpu")
    assert isinstance(model, torch.nn.Module) and dataset is None and root is None
    model, data, dev = load_target(models["mlp"], "digits", None, 7, "cpu")
    assert len(data) == 7 and data.name == "digits" and dev == torch.device("cpu")
    with pytest.raises(InputError, match="--n must be >= 1"):
        load_target(models["mlp"], "digits", None, 0, "cpu")
    with pytest.raises(InputError, match="which data"):
        load_target(models["mlp"], None, None, 5, "cpu")


def test_run_transfer_stores_the_run(models: dict[str, str]) -> None:
    store = RunStore()
    targets = [models["mlp"], models["cnn-small"]]
    run, report = run_transfer(
        models["resnet8"], targets, attack="sgm", eps="8/255", steps=2, dataset="digits",
        n=20, seed=3, store=store,
    )  # fmt: skip
    assert run.kind == "transfer" and run.status == "finished" and run.name == "transfer-sgm"
    assert run.config == {
        "source": models["resnet8"], "targets": targets, "attack": "sgm", "eps": "8/255",
        "steps": 2, "gamma": 0.2, "dataset": "digits", "n": 20, "seed": 3,
    }  # fmt: skip
    stored = json.loads((run.dir / "transfer.json").read_text())
    assert stored == json.loads(
        json.dumps({"run": run.id, "attack": "sgm", "eps": "8/255", **report.to_dict()})
    )
    assert run.summary["mean_success"] == pytest.approx(report.mean_success())
    assert run.summary["source_success"] == pytest.approx(report.source_success)
    # the same numbers as the attack built and evaluated by hand
    src, data, _ = load_target(models["resnet8"], "digits", None, 20, "cpu")
    tgts = {t: load_target_model(t, "cpu")[0] for t in targets}
    ref = evaluate_transfer(src, tgts, data, SGM(src, 8 / 255, steps=2, gamma=0.2, seed=3))
    assert ref.to_dict() == report.to_dict()
    run2, _ = run_transfer(
        models["resnet8"], [models["mlp"]], attack="pgd", steps=1, dataset="digits", n=5,
        store=store, name="mine",
    )  # fmt: skip
    assert run2.name == "mine" and run2.config["gamma"] is None


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"attack": "apgd-ce"}, "unknown transfer attack 'apgd-ce'; use one of pgd, mifgsm"),
        ({"attack": "zzz"}, "unknown transfer attack"),
        ({"steps": 0}, "--steps must be >= 1"),
        ({"n": 0}, "--n must be >= 1"),
        ({"eps": "big"}, "not a number"),
        ({"dup": True}, "is given twice"),
        ({"dataset": None}, "which data"),
    ],
)
def test_run_transfer_refuses_bad_input_before_storing(
    models: dict[str, str], kw: dict, message: str
) -> None:
    store = RunStore()
    targets = [models["mlp"]] * (2 if kw.pop("dup", False) else 1)
    args = {"dataset": "digits", "n": 5, "steps": 1, **kw}
    with pytest.raises(InputError, match=message):
        run_transfer(models["resnet8"], targets, store=store, **args)
    assert store.list() == []
