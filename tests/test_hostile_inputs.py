"""Bad input a hostile tester hands in: each gets one ``error:`` line naming the problem and the
fix, exit code 2, and leaves nothing in the results store; nothing absurd is allocated."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from trustlab.attacks.evasion import PGD, parse_eps
from trustlab.cli import app
from trustlab.errors import CheckpointError, InputError
from trustlab.models import MAX_PARAMETERS, create_model
from trustlab.models.spec import ModelSpec
from trustlab.registry import MODELS
from trustlab.results import RunStore
from trustlab.train.checkpoint import load_model, save_checkpoint, save_model
from trustlab.utils.validate import check_float
from trustlab.workflows.backdoor import run_backdoor

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


def refused(out, *words: str) -> str:
    """The CLI refused with exit 2 and one ``error:`` line holding ``words``; returns it."""
    assert out.exit_code == 2, out.output
    lines = [line for line in out.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), out.output
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def nothing_stored(home: Path) -> bool:
    return (not home.exists() or RunStore(home).list() == []) and not list(home.glob("run-*"))


BACKDOOR = ("backdoor", "--attack", "badnets", "--dataset", "digits", "--model", "cnn-small")


@pytest.mark.parametrize(
    ("flag", "value", "key"),
    [("--epochs", "0", "epochs"), ("--batch-size", "0", "batch_size"), ("--lr", "-1", "lr")],
)
def test_backdoor_training_settings_are_checked_first(
    _isolated_home: Path, flag: str, value: str, key: str
) -> None:
    out = invoke(*BACKDOOR, flag, value, "--device", "cpu")
    refused(out, repr(key))
    assert nothing_stored(_isolated_home)


@pytest.mark.parametrize(
    ("rate", "words"),
    [("2", ("--rate", "<= 1")), ("nan", ("--rate",)), ("1", ("eligible", "at most 0.901"))],
)
def test_backdoor_rate_is_checked_before_the_run_exists(
    _isolated_home: Path, rate: str, words: tuple[str, ...]
) -> None:
    out = invoke(*BACKDOOR, "--rate", rate, "--epochs", "1", "--device", "cpu")
    refused(out, *words)
    assert nothing_stored(_isolated_home)


def test_run_backdoor_refuses_bad_settings_as_input_errors(_isolated_home: Path) -> None:
    with pytest.raises(InputError, match="'epochs'"):
        run_backdoor("badnets", dataset="digits", model="cnn-small", epochs=0, device="cpu")
    with pytest.raises(InputError, match="--rate"):
        run_backdoor("badnets", dataset="digits", model="cnn-small", rate=-0.1, device="cpu")
    assert nothing_stored(_isolated_home)


def test_check_float() -> None:
    assert check_float("x", 0.5, 0, 1) == 0.5 and check_float("x", 1, 0, 1) == 1.0
    for bad in (1.5, -0.1, float("nan"), float("inf"), True, "0.5", None):
        with pytest.raises(InputError, match="x must be a finite number"):
            check_float("x", bad, 0, 1)


# -- model specs: sizes are checked before anything is allocated ------------------------------


@pytest.mark.parametrize(
    ("spec", "key"),
    [
        ({"image_size": 200000}, "image_size"),
        ({"image_size": [28, 10**9]}, "image_size"),
        ({"in_channels": 10**6}, "in_channels"),
        ({"num_classes": 10**9}, "num_classes"),
        ({"image_size": 8000}, "parameters"),  # within the side limit, far over the count limit
        ({"kwargs": {"hidden": [10**12, 10**12]}}, "hidden"),
    ],
)
def test_absurd_model_specs_are_refused_before_building(spec: dict, key: str) -> None:
    full = {"name": "mlp", "num_classes": 10, "in_channels": 3, "image_size": 32, **spec}
    with pytest.raises(InputError, match=key):
        ModelSpec(**full).build()


def test_parameter_count_is_checked_without_drawing_random_numbers() -> None:
    for name in ("mlp", "cnn-small", "resnet8"):
        torch.manual_seed(0)
        built = create_model(name, 10, 1, 16)
        after = torch.rand(4)
        torch.manual_seed(0)
        direct = MODELS.get(name).factory(num_classes=10, in_channels=1, image_size=(16, 16))
        assert torch.equal(after, torch.rand(4))
        for a, b in zip(built.state_dict().values(), direct.state_dict().values(), strict=True):
            assert torch.equal(a, b)
    assert MAX_PARAMETERS >= 10**8  # every model of the zoo at any sensible size fits


def test_a_checkpoint_asking_for_a_huge_model_is_refused(tmp_path: Path) -> None:
    model = create_model("mlp", 10, 1, 16)
    spec = {"name": "mlp", "num_classes": 10, "in_channels": 3, "image_size": 200000}
    path = save_checkpoint(
        tmp_path / "huge.safetensors",
        dict(model.state_dict()),
        {"kind": "model", "model_spec": spec},
    )
    with pytest.raises(CheckpointError, match="image_size"):
        load_model(path)
    refused(invoke("eval", str(path), "--dataset", "digits", "--device", "cpu"), "image_size")


# -- eps ---------------------------------------------------------------------------------------


def test_parse_eps_refuses_non_finite_values() -> None:
    for bad in ("1e309", float("inf"), "nan", 10**400):
        with pytest.raises(InputError, match="finite"):
            parse_eps(bad)
    # what it accepted stays accepted (an L2 radius may exceed 1)
    assert parse_eps("8/255") == 8 / 255 and parse_eps("0.5") == 0.5 and parse_eps(2) == 2.0
    assert parse_eps(1, "linf") == 1.0
    with pytest.raises(InputError, match="larger than 1"):
        parse_eps("2", "linf")


def test_attack_radius_is_checked_with_its_norm() -> None:
    model = create_model("mlp", 10, 1, 8)
    with pytest.raises(InputError, match="larger than 1"):
        PGD(model, eps=2)
    assert PGD(model, eps=2, norm="l2").eps == 2.0


@pytest.mark.parametrize(("eps", "words"), [("1e309", ("finite",)), ("2", ("larger than 1",))])
def test_attack_cli_refuses_absurd_eps(
    _isolated_home: Path, tmp_path: Path, eps: str, words: tuple[str, ...]
) -> None:
    torch.manual_seed(0)
    path = save_model(create_model("mlp", 10, 1, 16), tmp_path / "m.safetensors")
    out = invoke("attack", str(path), "--dataset", "digits", "--eps", eps, "--n", "4",
                 "--device", "cpu")  # fmt: skip
    refused(out, *words)
    assert nothing_stored(_isolated_home)


# -- user arrays -------------------------------------------------------------------------------


def _npz(path: Path, **arrays: np.ndarray) -> Path:
    np.savez(path, **arrays)  # type: ignore[arg-type]
    return path


@pytest.mark.parametrize("kind", ["no arrays", "zero bytes", "not a zip", "one array", "0 rows"])
def test_bad_npz_names_the_file_and_the_arrays(
    _isolated_home: Path, tmp_path: Path, kind: str
) -> None:
    path = tmp_path / "mine.npz"
    if kind == "no arrays":
        _npz(path)
    elif kind == "zero bytes":
        path.write_bytes(b"")
    elif kind == "not a zip":
        path.write_bytes(b"PK\x05\x06")
    elif kind == "one array":
        with open(path, "wb") as fh:
            np.save(fh, np.zeros(3))
    else:
        x, y = np.zeros((0, 1, 8, 8), np.float32), np.zeros(0, np.int64)
        _npz(path, x_train=x, y_train=y, x_test=x, y_test=y)
    out = invoke("train", "--dataset", "tensors", "--data-root", str(path), "--model", "mlp",
                 "--epochs", "1", "--quiet", "--device", "cpu")  # fmt: skip
    line = refused(out, "mine.npz", "x_train")
    assert "pickle" not in line
    assert nothing_stored(_isolated_home)


# -- eval takes run ids ------------------------------------------------------------------------


def test_eval_takes_a_run_id_and_still_a_file(_isolated_home: Path) -> None:
    out = invoke("train", "--dataset", "digits", "--model", "mlp", "--epochs", "1", "--quiet",
                 "--device", "cpu")  # fmt: skip
    assert out.exit_code == 0, out.output
    (run,) = RunStore(_isolated_home).list()
    by_id = invoke("eval", str(run.id), "--device", "cpu")
    assert by_id.exit_code == 0, by_id.output
    assert '"dataset": "digits"' in by_id.output
    by_file = invoke("eval", str(run.dir / "model.safetensors"), "--dataset", "digits",
                     "--device", "cpu")  # fmt: skip
    assert by_file.exit_code == 0, by_file.output
    assert by_id.output.split('"split"')[1] == by_file.output.split('"split"')[1]
    refused(invoke("eval", str(run.dir / "model.safetensors")), "--dataset")
    refused(invoke("eval", "99", "--device", "cpu"), "99")


@pytest.mark.parametrize("adv", ["pgd", "trades"])
def test_adversarial_training_refuses_an_linf_radius_above_one(adv: str) -> None:
    from trustlab.registry import ROBUST

    with pytest.raises(InputError, match="larger than 1"):
        ROBUST.build(adv, eps="300/255")


def test_a_model_with_nan_weights_is_refused_when_loaded(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = create_model("mlp", num_classes=3, in_channels=1, image_size=4)
    with torch.no_grad():
        next(model.parameters())[0, 0] = float("nan")
    path = save_model(model, tmp_path / "nan.safetensors")
    with pytest.raises(InputError, match="NaN or infinite"):
        load_model(path)
    out = CliRunner().invoke(app, ["eval", str(path), "--dataset", "digits"])
    assert out.exit_code == 2 and "NaN or infinite" in out.output and "NaN," not in out.output


def test_tensors_data_root_that_is_a_folder_says_so(tmp_path: Path) -> None:
    from trustlab.data import load_dataset

    with pytest.raises(InputError, match="is a folder; dataset 'tensors' takes one file"):
        load_dataset("tensors", "train", root=tmp_path)


def test_root_help_shows_no_value_placeholder_for_flags() -> None:
    out = CliRunner().invoke(app, ["--help"], terminal_width=120)
    assert out.exit_code == 0 and "--version" in out.output and "<bool>" not in out.output
