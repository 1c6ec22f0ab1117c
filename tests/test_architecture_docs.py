"""The worked examples of docs/architecture.md run as written: a new method is one file with a
decorator, and everything that reads the catalogue picks it up."""

from __future__ import annotations

import re
import types
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from trustlab.registry import Registry

DOC = Path(__file__).resolve().parents[1] / "docs" / "architecture.md"


def example(name: str) -> str:
    """The python code block of the doc that starts with ``# example: NAME``."""
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.DOTALL)
    found = [b for b in blocks if b.startswith(f"# example: {name}\n")]
    assert len(found) == 1, f"docs/architecture.md needs one '# example: {name}' block"
    return found[0]


def run_example(name: str, registry: Registry, registered: str) -> types.ModuleType:
    """Execute the example as a module of its own (as if it were a new file)."""
    registry.load()
    module = types.ModuleType(f"trustlab_doc_example_{name.replace('-', '_')}")
    exec(compile(example(name), f"docs/architecture.md ({name})", "exec"), module.__dict__)
    assert registered in registry
    return module


@pytest.fixture
def random_sign() -> Iterator[types.ModuleType]:
    from trustlab.registry import EVASION

    module = run_example("evasion", EVASION, "random-sign")
    try:
        yield module
    finally:
        EVASION.unregister("random-sign")


def test_new_evasion_attack_is_one_file(random_sign: types.ModuleType) -> None:
    from trustlab.attacks.evasion.suite import make_attack
    from trustlab.models import create_model

    torch.manual_seed(0)
    model = create_model("cnn-small", num_classes=10, in_channels=1, image_size=16)
    x, y = torch.rand(5, 1, 16, 16), torch.randint(0, 10, (5,))
    atk = make_attack("random-sign", model, "8/255")
    assert isinstance(atk, random_sign.RandomSign)
    adv = atk(x, y)
    assert adv.shape == x.shape and float((adv - x).abs().max()) <= 8 / 255 + 1e-6
    assert torch.equal(adv, make_attack("random-sign", model, "8/255")(x, y))  # seeded


def test_new_evasion_attack_reaches_the_cli(random_sign: types.ModuleType) -> None:
    from typer.testing import CliRunner

    from trustlab.cli import app

    out = CliRunner().invoke(app, ["attack", "--help"], terminal_width=200)
    assert out.exit_code == 0 and "random-sign" in out.output
    out = CliRunner().invoke(app, ["list", "evasion"], terminal_width=200)
    assert out.exit_code == 0 and "random-sign" in out.output


@pytest.fixture
def smoothing() -> Iterator[types.ModuleType]:
    from trustlab.registry import DEFENSES

    module = run_example("defense", DEFENSES, "smoothing")
    try:
        yield module
    finally:
        DEFENSES.unregister("smoothing")


@pytest.fixture(scope="module")
def badnets_artifact():
    """A BadNets model on digits (one epoch of cnn-small: seconds)."""
    from trustlab.attacks.backdoor.artifact import train_backdoor
    from trustlab.data import load_dataset
    from trustlab.models.spec import ModelSpec
    from trustlab.train import TrainSettings

    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    torch.manual_seed(0)
    net = ModelSpec.for_data("cnn-small", train).build()
    settings = TrainSettings(epochs=1, lr=0.05, batch_size=64)
    return train_backdoor("badnets", train, test, net, settings, 0.1, 0, 0), train, test


def test_new_backdoor_defense_is_one_file(smoothing: types.ModuleType, badnets_artifact) -> None:
    from trustlab.defenses.backdoor.evaluate import run_defense

    art, train, test = badnets_artifact
    out = run_defense("smoothing", art, train, test)
    assert set(out) == {"clean_acc", "asr", "clean_acc_after", "asr_after", "der"}
    assert all(isinstance(v, float) and 0 <= v <= 1 for v in out.values())


def test_new_backdoor_defense_reaches_the_bench_and_the_cli(smoothing: types.ModuleType) -> None:
    from typer.testing import CliRunner

    from trustlab.cli import app
    from trustlab.experiments.bench_backdoor import bench_options

    assert "smoothing" in bench_options(None, "nc,smoothing")["defenses"]
    out = CliRunner().invoke(app, ["list", "defenses"], terminal_width=200)
    assert out.exit_code == 0 and "smoothing" in out.output


def test_new_backdoor_attack_is_one_file() -> None:
    from trustlab.attacks.backdoor.artifact import train_backdoor
    from trustlab.data import load_dataset
    from trustlab.models.spec import ModelSpec
    from trustlab.registry import BACKDOORS
    from trustlab.train import TrainSettings

    module = run_example("backdoor", BACKDOORS, "white-corner")
    try:
        train = load_dataset("digits", "train").subset(range(300))
        test = load_dataset("digits", "test").subset(range(100))
        torch.manual_seed(0)
        net = ModelSpec.for_data("cnn-small", train).build()
        art = train_backdoor(
            "white-corner", train, test, net, TrainSettings(epochs=1, batch_size=64), 0.1, 0, 0
        )
        assert isinstance(BACKDOORS.build("white-corner"), module.WhiteCorner)
        assert len(art.poison_indices) == 30
        assert bool((art.trigger(test.x[:2])[..., :4, :4] == 1).all())
    finally:
        BACKDOORS.unregister("white-corner")
