"""Attacks by name and the standard suites, for configs and the CLI; both read the catalogue.

Every evasion attack registers itself at its class in :data:`trustlab.registry.EVASION` with a
card (paper, threat model, the keyword arguments its name fixes): ``fgsm``, ``pgd`` (PGD-20 with
CE, the MD paper's baseline), ``pgd-cw``, ``apgd-ce``, ``apgd-t``, ``fab-t``, ``square``
(score-based, no gradients), ``md``, ``mdmt``; the transfer
attacks ``mifgsm``, ``difgsm``, ``sgm`` (gamma 0.2), ``sgm-mi`` and ``sgm-mi-di`` (SGM with MI's
momentum and step ``eps / steps``, and DI); ``advcam`` (which also takes a style image).
``make_attack("pgd", model, eps=8/255)`` builds one. The suites of
:func:`~trustlab.attacks.evasion.evaluate.evaluate_robustness` register in
:data:`trustlab.registry.SUITES` here (meta ``attacks``: their cascade, in order):

- ``quick``: PGD-20 (CE), then MD.
- ``standard``: AutoAttack's standard version: APGD-CE, APGD-T, FAB-T, then Square (5,000
  queries), each at AutoAttack's settings, as a worst-case cascade (each attack runs on the points
  the ones before it left robust; the robust accuracy counts a point robust only if every attack
  fails). AutoAttack counts the same way (its ``run_standard_evaluation``).
- ``extended``: the standard cascade, then MD and MDMT (the margin decomposition attacks, which
  find points that imbalanced gradients hide from cross-entropy and DLR attacks).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from trustlab.attacks.evasion.base import Attack, parse_eps
from trustlab.errors import InputError
from trustlab.registry import EVASION, SUITES

__all__ = ["attack_names", "make_attack", "make_suite"]


def attack_names(**where: Any) -> list[str]:
    """The registered attacks that :func:`make_attack` builds from a model alone (every
    evasion card whose only input is ``model``), in registration order; ``where`` filters on
    the cards' meta (``attack_names(transfer=True)``)."""
    return [n for n in EVASION.names(**where) if EVASION.get(n).inputs == ("model",)]


def make_attack(name: str, model: nn.Module, eps: float | str = 8 / 255, **kw: Any) -> Attack:
    """The attack registered as ``name`` on ``model`` at radius ``eps`` (``0.03`` or ``"8/255"``);
    ``kw`` override the card's defaults (unknown keys are an :class:`InputError`)."""
    key = name.lower()
    if key in EVASION and key not in attack_names():
        card = EVASION.get(key)
        more = ", ".join(card.inputs[1:])
        raise InputError(
            f"attack {key!r} takes {more} besides the model: build it with "
            f"EVASION.build({key!r}, model, {more}, ...) (command line: `trustlab {key}`)."
        )
    if key not in attack_names():
        raise InputError(f"unknown attack {name!r}; available: {', '.join(attack_names())}.")
    return EVASION.get(key).build(model, eps=parse_eps(eps), **kw)


def make_suite(name: str, model: nn.Module, eps: float | str = 8 / 255) -> dict[str, Attack]:
    """The suite registered as ``name`` (``quick``, ``standard``, ``extended``): attack name ->
    attack, in
    cascade order."""
    return SUITES.get(name).build(model, eps=eps)


def _suite(name: str, model: nn.Module, eps: float | str) -> dict[str, Attack]:
    return {a: make_attack(a, model, eps) for a in SUITES.get(name).meta["attacks"]}


@SUITES.register(
    "quick",
    "PGD-20 (CE), then MD",
    paper="Ma, Jiang, Huang, Wang, Erfani, Bailey, Li. Imbalanced Gradients: A Subtle Cause of "
    "Overestimated Adversarial Robustness. arXiv:2006.13726.",
    threat="white-box, untargeted, L-inf",
    attacks=("pgd", "md"),
)
def quick_suite(model: nn.Module, eps: float | str = 8 / 255) -> dict[str, Attack]:
    """PGD-20 (CE) then MD, as a cascade."""
    return _suite("quick", model, eps)


_AUTOATTACK = (
    "Croce, Hein. Reliable evaluation of adversarial robustness with an ensemble of diverse "
    "parameter-free attacks. ICML 2020."
)


@SUITES.register(
    "standard",
    "AutoAttack's standard version: APGD-CE, APGD-T, FAB-T, Square",
    paper=_AUTOATTACK,
    threat="white-box (the first three) and score-based black-box (Square), untargeted, L-inf",
    attacks=("apgd-ce", "apgd-t", "fab-t", "square"),
)
def standard_suite(model: nn.Module, eps: float | str = 8 / 255) -> dict[str, Attack]:
    """APGD-CE, APGD-T, FAB-T, Square, as a cascade (AutoAttack's standard version)."""
    return _suite("standard", model, eps)


@SUITES.register(
    "extended",
    "AutoAttack's standard version, then MD and MDMT",
    paper=_AUTOATTACK[:-1] + "; Ma et al. Imbalanced Gradients. arXiv:2006.13726.",
    threat="white-box and score-based black-box, untargeted, L-inf",
    attacks=("apgd-ce", "apgd-t", "fab-t", "square", "md", "mdmt"),
)
def extended_suite(model: nn.Module, eps: float | str = 8 / 255) -> dict[str, Attack]:
    """The standard cascade, then MD and MDMT."""
    return _suite("extended", model, eps)
