"""The CLI in-process: listings, a training run, the store commands, and every input error
exiting with code 2 while leaving the results store empty."""

from __future__ import annotations

import json
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from trustlab.cli import app
from trustlab.results import RunStore

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


def store_is_empty(home: Path) -> bool:
    return not home.exists() or RunStore(home).list() == []


def test_listings() -> None:
    out = invoke("datasets")
    assert out.exit_code == 0
    for name in ("digits", "shapes10", "fundus2", "moving-shapes", "mnist", "cifar10", "tensors"):
        assert name in out.output
    out = invoke("models")
    assert out.exit_code == 0
    for name in ("resnet20", "cnn8", "c3d-small", "wrn-16-4"):
        assert name in out.output


def test_train_runs_show(_isolated_home: Path) -> None:
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
    assert "test accuracy" in out.output
    (run,) = RunStore(_isolated_home).list()
    assert run.status == "finished" and len(run.metrics()) == 2
    assert (run.dir / "model.safetensors").exists()
    assert (run.dir / "checkpoints" / "last.safetensors").exists()
    out = invoke("runs")
    assert out.exit_code == 0 and "finished" in out.output
    out = invoke("show", str(run.id), "--json")
    shown = json.loads(out.output)
    assert shown["status"] == "finished" and shown["config"]["model"] == "mlp"
    out = invoke(
        "eval", str(run.dir / "model.safetensors"), "--dataset", "digits", "--device", "cpu"
    )
    assert out.exit_code == 0
    assert json.loads(out.output)["accuracy"] == pytest.approx(run.summary["test_accuracy"])
    out = invoke("resume", str(run.id))
    assert out.exit_code == 2 and "finished" in out.output


def _bad_array_file(tmp: Path, kind: str) -> Path:
    x = torch.rand(6, 1, 4, 4)
    y = torch.tensor([0, 1, 0, 1, 0, 1])
    x_test, y_test = x.clone(), y.clone()
    if kind == "nan":
        x[2, 0, 1, 1] = float("nan")
    else:  # the class count comes from the training labels: a 9 in the test labels is out of range
        y_test[3] = 9
    path = tmp / f"{kind}.safetensors"
    save_file({"x_train": x, "y_train": y, "x_test": x_test, "y_test": y_test}, str(path))
    return path


@pytest.mark.parametrize(
    ("case", "pattern"),
    [
        ("dataset", "unknown dataset 'digitz'"),
        ("model", "unknown model 'resnet21'"),
        ("typo", "unknown key"),
        ("epochs", "epochs"),
        ("missing", "download"),
        ("checkpoint", "safetensors"),
        ("nan", "NaN"),
        ("labels", "labels span"),
        ("device", "auto, cpu, cuda"),
        ("too-small", "at least 32x32"),
        ("video-model", "video model"),
        ("image-model", "choose a video model"),
        ("kwargs", "does not take 'bogus'"),
        ("float64", None),
    ],
)
def test_bad_input_exits_2_and_writes_nothing(
    case: str, pattern: str, tmp_path: Path, _isolated_home: Path
) -> None:
    base = ["--quiet", "--device", "cpu"]
    if case == "dataset":
        args = ["train", "--dataset", "digitz", *base]
    elif case == "model":
        args = ["train", "--model", "resnet21", *base]
    elif case == "typo":
        cfg = tmp_path / "c.yaml"
        cfg.write_text("dataset: digits\nlearning_rate: 0.1\n")
        args = ["train", "--config", str(cfg), *base]
    elif case == "epochs":
        args = ["train", "--epochs", "-3", *base]
    elif case == "missing":
        args = ["train", "--dataset", "mnist", "--data-root", str(tmp_path / "none"), *base]
    elif case == "checkpoint":
        ck = tmp_path / "model.pt"
        ck.write_bytes(pickle.dumps({"weights": [1, 2, 3]}))
        args = ["eval", str(ck), "--dataset", "digits", "--device", "cpu"]
    elif case in ("nan", "labels"):
        args = [
            "train",
            "--dataset",
            "tensors",
            "--data-root",
            str(_bad_array_file(tmp_path, case)),
            "--model",
            "mlp",
            *base,
        ]
    elif case == "too-small":
        args = ["train", "--dataset", "digits", "--model", "vgg11", *base]
    elif case == "video-model":
        args = ["train", "--dataset", "digits", "--model", "c3d-small", *base]
    elif case == "image-model":
        args = ["train", "--dataset", "moving-shapes", "--model", "mlp", *base]
    elif case == "kwargs":
        cfg = tmp_path / "k.yaml"
        cfg.write_text("dataset: digits\nmodel: mlp\nmodel_kwargs: {bogus: 1}\n")
        args = ["train", "--config", str(cfg), *base]
    elif case == "float64":  # numpy's default dtype is fine, not an error: train one epoch
        path = tmp_path / "f64.npz"
        rng = np.random.default_rng(0)
        np.savez(
            path,
            x_train=rng.random((12, 1, 8, 8)),
            y_train=np.arange(12) % 3,
            x_test=rng.random((6, 1, 8, 8)),
            y_test=np.arange(6) % 3,
        )
        out = invoke(
            "train",
            "--dataset",
            "tensors",
            "--data-root",
            str(path),
            "--model",
            "mlp",
            "--epochs",
            "1",
            *base,
        )
        assert out.exit_code == 0, out.output
        return
    else:
        args = ["train", "--device", "tpu", "--quiet"]
    out = invoke(*args)
    assert out.exit_code == 2, out.output
    assert "error" in out.output.lower()
    assert re.search(pattern, out.output), out.output
    assert "Traceback" not in out.output
    assert store_is_empty(_isolated_home)


def test_download_flag_fetches_both_splits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, _isolated_home: Path
) -> None:
    """--download through the CLI, against a file:// mirror of tiny MNIST files (no network)."""
    import gzip
    import hashlib

    from trustlab.data import files

    mirror = tmp_path / "mirror"
    mirror.mkdir()
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 40), ("t10k", 20)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        for kind, arr, magic in (("images-idx3", images, 0x0803), ("labels-idx1", labels, 0x0801)):
            header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in arr.shape)
            (mirror / f"{prefix}-{kind}-ubyte.gz").write_bytes(
                gzip.compress(header + arr.tobytes())
            )
    table = tuple(
        files.Resource(
            r.filename, hashlib.md5((mirror / r.filename).read_bytes()).hexdigest(), r.splits
        )
        for r in files.RESOURCES["mnist"]
    )
    monkeypatch.setitem(files.RESOURCES, "mnist", table)
    monkeypatch.setitem(files.BASE_URLS, "mnist", mirror.as_uri() + "/")
    root = tmp_path / "data"
    out = invoke(
        "train",
        "--dataset",
        "mnist",
        "--data-root",
        str(root),
        "--download",
        "--model",
        "mlp",
        "--epochs",
        "1",
        "--quiet",
        "--device",
        "cpu",
    )
    assert out.exit_code == 0, out.output
    assert len(list(root.iterdir())) == 4
    (run,) = RunStore(_isolated_home).list()
    assert run.config["data_root"] == str(root.resolve())


def test_eval_model_on_wrong_data_and_folders(tmp_path: Path, _isolated_home: Path) -> None:
    from trustlab.models import Normalized, create_model
    from trustlab.train import save_model

    path = tmp_path / "digits-mlp.safetensors"
    save_model(Normalized(create_model("mlp", 10, 1, 16), [0.5], [0.5]), path)
    out = invoke("eval", str(path), "--dataset", "fundus2", "--device", "cpu")
    assert out.exit_code == 2 and "Traceback" not in out.output, out.output
    out = invoke("eval", str(tmp_path), "--dataset", "digits", "--device", "cpu")
    assert out.exit_code == 2 and "is a folder" in out.output


def test_diverging_training_is_one_error_line(tmp_path: Path, _isolated_home: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("dataset: digits\nmodel: mlp\nepochs: 1\nlr: 1.0e+6\n")
    out = invoke("train", "--config", str(cfg), "--quiet", "--device", "cpu")
    assert out.exit_code == 1 and "lower the learning rate" in out.output
    assert "Traceback" not in out.output
    (run,) = RunStore(_isolated_home).list()
    assert run.status == "failed"


def test_version() -> None:
    out = invoke("--version")
    assert out.exit_code == 0 and out.output.startswith("trustlab ")
