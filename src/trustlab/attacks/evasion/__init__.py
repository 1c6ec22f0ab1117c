"""Evasion attacks: ``atk = PGD(model, eps=8/255); x_adv = atk(x, y)``."""

from trustlab.attacks.evasion.apgd import APGD, APGDT
from trustlab.attacks.evasion.base import Attack, frozen, parse_eps, project
from trustlab.attacks.evasion.evaluate import RobustnessReport, evaluate_robustness
from trustlab.attacks.evasion.fgsm import FGSM
from trustlab.attacks.evasion.md import MD, MDMT, imbalance_ratio
from trustlab.attacks.evasion.pgd import PGD
from trustlab.attacks.evasion.sgm import SGM, skip_gradient
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
    "FGSM",
    "MD",
    "MDMT",
    "MIFGSM",
    "PGD",
    "SGM",
    "Attack",
    "RobustnessReport",
    "TransferReport",
    "evaluate_robustness",
    "evaluate_transfer",
    "frozen",
    "imbalance_ratio",
    "parse_eps",
    "project",
    "skip_gradient",
]
