"""Attacks by name and the standard suites, for configs and the CLI.

``make_attack("pgd", model, eps=8/255)``; names: ``fgsm``, ``pgd`` (PGD-20 with CE, the MD
paper's baseline), ``pgd-cw``, ``apgd-ce``, ``apgd-t``, ``md``, ``mdmt``; the transfer attacks
``mifgsm``, ``difgsm``, ``sgm`` (gamma 0.2), ``sgm-mi`` and ``sgm-mi-di`` (SGM with MI's momentum
and step ``eps / steps``, and DI). Suites for
:func:`~trustlab.attacks.evasion.evaluate.evaluate_robustness`:

- ``quick``: PGD-20 (CE), then MD.
- ``standard``: APGD-CE, APGD-T, then MD and MDMT (the AutoAttack-style cascade plus the margin
  decomposition attacks).
"""

from __future__ import annotations

import importlib
from typing import Any

from torch import nn

from trustlab.attacks.evasion.base import Attack, parse_eps
from trustlab.errors import InputError

# name -> (module, class, fixed keyword arguments)
_ATTACKS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "fgsm": ("fgsm", "FGSM", {}),
    "pgd": ("pgd", "PGD", {"steps": 20, "loss": "ce"}),
    "pgd-cw": ("pgd", "PGD", {"steps": 20, "loss": "cw"}),
    "apgd-ce": ("apgd", "APGD", {"loss": "ce"}),
    "apgd-t": ("apgd", "APGDT", {}),
    "md": ("md", "MD", {}),
    "mdmt": ("md", "MDMT", {}),
    "mifgsm": ("transfer", "MIFGSM", {}),
    "difgsm": ("transfer", "DIFGSM", {}),
    "sgm": ("sgm", "SGM", {}),
    "sgm-mi": ("sgm", "SGM", {"momentum": 1.0, "alpha": None}),
    "sgm-mi-di": ("sgm", "SGM", {"momentum": 1.0, "diversity": 0.5, "alpha": None}),
}

SUITES: dict[str, tuple[str, ...]] = {
    "quick": ("pgd", "md"),
    "standard": ("apgd-ce", "apgd-t", "md", "mdmt"),
}


def attack_names() -> list[str]:
    """The attacks available in this installation (in the order of :data:`_ATTACKS`)."""
    out = []
    for name, (module, cls, _) in _ATTACKS.items():
        try:
            mod = importlib.import_module(f"trustlab.attacks.evasion.{module}")
        except ImportError:
            continue
        if hasattr(mod, cls):
            out.append(name)
    return out


def make_attack(name: str, model: nn.Module, eps: float | str = 8 / 255, **kw: Any) -> Attack:
    key = name.lower()
    if key not in attack_names():
        raise InputError(f"unknown attack {name!r}; available: {', '.join(attack_names())}.")
    module, cls, fixed = _ATTACKS[key]
    mod = importlib.import_module(f"trustlab.attacks.evasion.{module}")
    return getattr(mod, cls)(model, eps=parse_eps(eps), **{**fixed, **kw})


def make_suite(name: str, model: nn.Module, eps: float | str = 8 / 255) -> dict[str, Attack]:
    if name not in SUITES:
        raise InputError(f"unknown suite {name!r}; use one of {', '.join(SUITES)}.")
    missing = [a for a in SUITES[name] if a not in attack_names()]
    if missing:
        raise InputError(f"suite {name!r} needs {', '.join(missing)}, not available yet.")
    return {a: make_attack(a, model, eps) for a in SUITES[name]}
