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
