"""Evasion attacks: ``atk = PGD(model, eps=8/255); x_adv = atk(x, y)``.

Every attack registers itself in :data:`trustlab.registry.EVASION` where its class is defined;
importing this package fills the catalogue (``EVASION.build("pgd", model, eps=8/255)``, or
:func:`~trustlab.attacks.evasion.suite.make_attack`).
"""

# isort: off
# the catalogue lists the attacks in the order their modules are first imported here
from trustlab.attacks.evasion import fgsm, pgd, apgd, fab, square, md, transfer, sgm  # noqa: F401
from trustlab.attacks.evasion import advcam, suite  # noqa: F401

# isort: on
from trustlab.attacks.evasion.apgd import APGD, APGDT
from trustlab.attacks.evasion.base import Attack, frozen, parse_eps, project
from trustlab.attacks.evasion.evaluate import RobustnessReport, evaluate_robustness
from trustlab.attacks.evasion.fab import FABT
from trustlab.attacks.evasion.fgsm import FGSM
from trustlab.attacks.evasion.md import MD, MDMT, imbalance_ratio
from trustlab.attacks.evasion.pgd import PGD
from trustlab.attacks.evasion.sanity import SanityFinding, sanity_checks
from trustlab.attacks.evasion.sgm import SGM, skip_gradient
from trustlab.attacks.evasion.square import Square
from trustlab.attacks.evasion.suite import attack_names, make_attack, make_suite
from trustlab.attacks.evasion.transfer import (
    DIFGSM,
    MIFGSM,
    TransferReport,
    evaluate_transfer,
)

__all__ = [
    "APGD",
    "APGDT",
    "DIFGSM",
    "FABT",
    "FGSM",
    "MD",
    "MDMT",
    "MIFGSM",
    "PGD",
    "SGM",
    "Attack",
    "RobustnessReport",
    "SanityFinding",
    "Square",
    "TransferReport",
    "attack_names",
    "evaluate_robustness",
    "evaluate_transfer",
    "frozen",
    "imbalance_ratio",
    "make_attack",
    "make_suite",
    "parse_eps",
    "project",
    "sanity_checks",
    "skip_gradient",
]
