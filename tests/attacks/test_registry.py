"""The evasion catalogue: every name builds the class and keyword arguments of the old
``attacks/evasion/suite.py`` table, the suites are registered, and nothing under
``trustlab.attacks`` imports the layers above it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch
from torch import nn

import trustlab
from trustlab.attacks.evasion import (
    APGD,
    APGDT,
    DIFGSM,
    FABT,
    FGSM,
    MD,
    MDMT,
    MIFGSM,
    PGD,
    SGM,
    Square,
    attack_names,
    make_attack,
    make_suite,
)
from trustlab.attacks.evasion.advcam import AdvCam
from trustlab.errors import InputError
from trustlab.models import create_model
from trustlab.registry import EVASION, SUITES

# the table the registry replaced (and the AutoAttack attacks added since): name -> (class, fixed
# keyword arguments)
BEFORE = {
    "fgsm": (FGSM, {}),
    "pgd": (PGD, {"steps": 20, "loss": "ce"}),
    "pgd-cw": (PGD, {"steps": 20, "loss": "cw"}),
    "apgd-ce": (APGD, {"loss": "ce"}),
    "apgd-t": (APGDT, {}),
    "fab-t": (FABT, {}),
    "square": (Square, {}),
    "md": (MD, {}),
    "mdmt": (MDMT, {}),
    "mifgsm": (MIFGSM, {}),
    "difgsm": (DIFGSM, {}),
    "sgm": (SGM, {}),
    "sgm-mi": (SGM, {"momentum": 1.0, "alpha": None}),
    "sgm-mi-di": (SGM, {"momentum": 1.0, "diversity": 0.5, "alpha": None}),
}

SMALL = {
    "fgsm": {},
    "md": {"steps": 2, "switch": 1},
    "mdmt": {"steps": 2, "switch": 1},
    "square": {"n_queries": 2},
}


def _model() -> nn.Module:
    torch.manual_seed(0)
    return create_model("resnet8", num_classes=4, in_channels=3, image_size=(16, 16)).eval()


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.rand(4, 3, 16, 16, generator=g), torch.tensor([0, 1, 2, 3])


def test_names_in_the_old_order() -> None:
    assert attack_names() == list(BEFORE)
    assert EVASION.names() == [*BEFORE, "advcam"]
    assert attack_names(transfer=True) == ["pgd", "mifgsm", "difgsm", "sgm", "sgm-mi", "sgm-mi-di"]
    assert EVASION.names(transfer=True) == attack_names(transfer=True)


@pytest.mark.parametrize("name", list(BEFORE))
def test_every_name_builds_the_old_class_with_the_old_kwargs(name: str) -> None:
    cls, fixed = BEFORE[name]
    card = EVASION.get(name)
    assert card.factory is cls and dict(card.defaults) == fixed and card.inputs == ("model",)
    assert card.paper and card.threat
    model = _model()
    small = SMALL.get(name, {"steps": 2})  # a short run of each, the same for both
    atk = make_attack(name, model, "4/255", **small)
    assert type(atk) is cls and atk.eps == pytest.approx(4 / 255)
    # the same numbers as the class called with the old table's keyword arguments
    ref = cls(model, eps=4 / 255, **{**fixed, **small})
    for attr in ("steps", "alpha", "momentum", "diversity", "loss_name", "gamma", "restarts"):
        assert getattr(atk, attr, None) == getattr(ref, attr, None), attr
    x, y = _data()
    assert torch.equal(atk(x, y), ref(x, y))


def test_make_attack_overrides_and_errors() -> None:
    model = _model()
    assert make_attack("pgd", model, "8/255").steps == 20
    assert make_attack("pgd", model, "8/255", steps=5, seed=3).seed == 3
    assert make_attack("sgm-mi", model, 0.03).alpha == pytest.approx(0.003)
    with pytest.raises(InputError, match="unknown attack 'zzz'"):
        make_attack("zzz", model)
    with pytest.raises(InputError, match="not a number"):
        make_attack("pgd", model, "big")
    with pytest.raises(InputError, match="has no parameter 'gamma'"):
        make_attack("pgd", model, gamma=0.2)
    with pytest.raises(InputError, match="attack 'advcam' takes style besides the model"):
        make_attack("advcam", model)  # needs a style image: not a model-only attack


def test_advcam_card_names_its_inputs() -> None:
    card = EVASION.get("advcam")
    assert card.factory is AdvCam and card.inputs == ("model", "style")
    assert card.meta["eps_ball"] is False and "eps" not in card.parameters()
    model = _model()
    atk = EVASION.build("advcam", model, torch.rand(3, 16, 16), steps=1)
    assert isinstance(atk, AdvCam) and atk.steps == 1


def test_suites_are_registered() -> None:
    assert SUITES.names() == ["quick", "standard", "extended"]
    assert SUITES.get("quick").meta["attacks"] == ("pgd", "md")
    # AutoAttack's standard version, then the margin decomposition attacks
    autoattack = ("apgd-ce", "apgd-t", "fab-t", "square")
    assert SUITES.get("standard").meta["attacks"] == autoattack
    assert SUITES.get("extended").meta["attacks"] == (*autoattack, "md", "mdmt")
    model = _model()
    for name in SUITES.names():
        suite = make_suite(name, model, "8/255")
        assert list(suite) == list(SUITES.get(name).meta["attacks"])
        for a, atk in suite.items():
            assert type(atk) is BEFORE[a][0] and atk.eps == pytest.approx(8 / 255)
    assert make_suite("quick", model)["pgd"].steps == 20
    with pytest.raises(InputError, match="suite"):
        make_suite("huge", model)


def _imports(path: Path) -> list[str]:
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.append(node.module)
    return out


def test_attacks_import_nothing_above_them() -> None:
    root = Path(trustlab.__file__).parent / "attacks"
    above = (
        "trustlab.robust",
        "trustlab.defenses",
        "trustlab.workflows",
        "trustlab.experiments",
        "trustlab.cli",
    )
    bad = [
        f"{p.relative_to(root)}: {m}"
        for p in sorted(root.rglob("*.py"))
        for m in _imports(p)
        if m.startswith(above)
    ]
    assert not bad, bad
