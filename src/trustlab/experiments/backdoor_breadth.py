"""``trustlab reproduce backdoor-breadth``: the anchors' qualitative findings about the
input-specific attacks and the modern defenses, judged over seeds.

A sub-matrix of the backdoor bench (:mod:`~trustlab.experiments.bench_backdoor`, the same jobs:
one per applicable (attack, defense) cell, each attack's model trained once) with claims:

1. **NC evasion** (Nguyen & Tran, ICLR 2021, WaNet, Sec. 4.4, and NeurIPS 2020, IAD,
   Sec. 4.3: Neural Cleanse's anomaly index stays below its threshold of 2 for the warping and
   the input-aware triggers): Neural Cleanse flags BadNets' target (anomaly index > 2) but not
   WaNet's or IAD's (< 2).
2. **Pruning and unlearning repair BadNets** (Wu & Wang, NeurIPS 2021, ANP, Table 1; Zeng et
   al., ICLR 2022, I-BAU, Table 1: BadNets' ASR to a few percent at a small cost in accuracy):
   ANP and I-BAU each lower BadNets' ASR below 10% and lose at most 5 points of clean accuracy.
3. **ABL isolates poison** (Li et al., NeurIPS 2021, ABL, Sec. 5.2: the lowest-loss 1% of the
   training set under LGA is nearly all poisoned): more than half of the samples ABL's first
   stage isolates are BadNets' poisoned ones.

Each number is a mean over seeds with its 95% bootstrap interval (``INCONCLUSIVE`` where the
interval straddles the bar). The defenses' budgets are the presets' (the module of each
defense states its paper's defaults and what a smaller budget changes).
"""

from __future__ import annotations

from collections.abc import Callable

from trustlab.experiments.base import (
    Claim,
    Preset,
    ResultTable,
    all_of,
    interval_check,
    noted,
    paired,
    register_experiment,
)
from trustlab.experiments.bench_backdoor import BackdoorBench

#: the claims' bars: NC's anomaly index, ANP/I-BAU's ASR after repair and accuracy lost, the
#: share of ABL's isolated samples that are poisoned
ANOMALY_BAR, ASR_AFTER_BAR, ACC_LOSS_BAR, PRECISION_BAR = 2.0, 0.10, 0.05, 0.5


def _anomaly(attack: str) -> Callable[[ResultTable], dict[int, float]]:
    return lambda t: t.per_seed("anomaly", attack=attack, defense="nc")


def _asr_note(t: ResultTable) -> str:
    """The attacks' ASR (a backdoor that did not implant evades nothing: read it first)."""
    parts = []
    for attack in ("badnets", "wanet", "iad"):
        asr = t.per_seed("asr", attack=attack, defense="nc")
        if asr:
            parts.append(f"{attack} {100 * sum(asr.values()) / len(asr):.1f}%")
    return "mean ASR of the attacked models: " + ", ".join(parts)


def _nc_evasion(t: ResultTable) -> tuple[str, str]:
    return noted(
        all_of(
            interval_check(_anomaly("badnets"), ">", ANOMALY_BAR, what="BadNets target's anomaly"),
            interval_check(_anomaly("wanet"), "<", ANOMALY_BAR, what="WaNet target's anomaly"),
            interval_check(_anomaly("iad"), "<", ANOMALY_BAR, what="IAD target's anomaly"),
        ),
        _asr_note,
    )(t)


def _repair(defense: str) -> Callable[[ResultTable], tuple[str, str]]:
    def asr_after(t: ResultTable) -> dict[int, float]:
        return t.per_seed("asr_after", attack="badnets", defense=defense)

    def acc_lost(t: ResultTable) -> dict[int, float]:
        where = {"attack": "badnets", "defense": defense}
        return paired(t.per_seed("clean_acc", **where), t.per_seed("clean_acc_after", **where))

    return all_of(
        interval_check(asr_after, "<", ASR_AFTER_BAR, what=f"{defense}: BadNets' ASR after",
                       scale=100, unit="%", digits=1),
        interval_check(acc_lost, "<=", ACC_LOSS_BAR, what=f"{defense}: clean accuracy lost",
                       scale=100, unit=" points", digits=1),
    )  # fmt: skip


def _repairs(t: ResultTable) -> tuple[str, str]:
    return all_of(_repair("anp"), _repair("i-bau"))(t)


def _abl_isolation(t: ResultTable) -> tuple[str, str]:
    return interval_check(
        lambda t: t.per_seed("precision", attack="badnets", defense="abl"),
        ">",
        PRECISION_BAR,
        what="share of ABL's isolated samples that are poisoned",
    )(t)


#: the sub-matrix the claims read (every preset runs it)
_MATRIX = {"attacks": ["badnets", "wanet", "iad"], "defenses": ["nc", "anp", "i-bau", "abl"]}


@register_experiment
class BackdoorBreadth(BackdoorBench):
    """The input-specific attacks (WaNet, IAD) against Neural Cleanse, and the modern repairs
    (ANP, I-BAU) and ABL against BadNets, as claims over seeds (see the module).

    Table keys ``attack``, ``defense`` (the bench's metrics; ``n/a`` cells: ABL against the
    attacks that control training). Presets: ``smoke`` (digits, cnn-small; seconds, a pipeline
    check), ``quick`` (shapes10, ResNet-8, 3 seeds), ``full`` (CIFAR-10, ResNet-18, the papers'
    budgets; for a GPU).

    Example::

        rep = reproduce("backdoor-breadth", "quick")
        [c.verdict for c in rep.claims]
    """

    name = "backdoor-breadth"
    title = "Input-specific backdoors against Neural Cleanse; ANP, I-BAU and ABL against BadNets"
    paper = (
        "Nguyen, Tran. WaNet - Imperceptible Warping-based Backdoor Attack. ICLR 2021; "
        "Nguyen, Tran. Input-Aware Dynamic Backdoor Attack. NeurIPS 2020; Wu, Wang. "
        "Adversarial Neuron Pruning Purifies Backdoored Deep Models. NeurIPS 2021; Zeng, Chen, "
        "Park, Mao, Jin, Jia. Adversarial Unlearning of Backdoors via Implicit Hypergradient. "
        "ICLR 2022; Li, Lyu, Koren, Lyu, Li, Ma. Anti-Backdoor Learning: Training Clean Models "
        "on Poisoned Data. NeurIPS 2021."
    )
    claims = (
        Claim(
            "nc-evasion",
            "Neural Cleanse flags BadNets' target (anomaly index > 2) but not WaNet's or IAD's "
            "(< 2) (WaNet Sec. 4.4; IAD Sec. 4.3)",
            _nc_evasion,
        ),
        Claim(
            "anp-ibau-repair",
            "ANP and I-BAU each lower BadNets' ASR below 10% losing at most 5 points of clean "
            "accuracy (ANP Table 1; I-BAU Table 1)",
            _repairs,
        ),
        Claim(
            "abl-isolation",
            "more than half of the samples ABL's first stage isolates are BadNets' poisoned "
            "ones (ABL Sec. 5.2)",
            _abl_isolation,
        ),
    )
    presets = {
        "smoke": Preset(
            "smoke",
            "digits",
            "resnet8",
            seeds=1,
            train=dict(epochs=2, lr=0.05, batch_size=64),
            options={
                **_MATRIX,
                "rate": 0.1,
                "defense_epochs": 1,
                "attack_options": {"iad": {"mask_epochs": 1}},
                "defense_options": {
                    "nc": {"epochs": 2, "reset_cost_to_zero": False},
                    "anp": {"iterations": 5},
                    "i-bau": {"rounds": 1},
                },
            },
            description="seconds: digits, ResNet-8 2 epochs, tiny budgets (a pipeline check, "
            "not a verdict)",
        ),
        "quick": Preset(
            "quick",
            "digits",
            "resnet8",
            seeds=3,
            train=dict(epochs=40, lr=0.05, batch_size=64),
            options={
                **_MATRIX,
                "rate": 0.1,
                "defense_epochs": None,  # every defense with its paper's defaults
                "attack_options": {},
                "defense_options": {},
            },
            description="about 25 minutes on 2 CPU cores: digits, ResNet-8 (BatchNorm, for "
            "ANP) 40 epochs (WaNet's noise mode needs them: 17% ASR after 15), the attacks' "
            "and the defenses' own defaults (Neural Cleanse's full schedule, ANP's 2,000 "
            "iterations, ABL's 20 + 60 epochs), 3 seeds; the defender's clean set is half "
            "of the 360 test images",
        ),
        "full": Preset(
            "full",
            "cifar10",
            "resnet18",
            seeds=3,
            train=dict(epochs=100, lr=0.1, batch_size=128, augment="crop-flip", schedule="step"),
            options={
                **_MATRIX,
                "rate": 0.1,
                "defense_epochs": None,
                "attack_options": {},
                "defense_options": {},
            },
            description="the papers' setting (CIFAR-10, ResNet-18, 100 epochs, every "
            "defense with its own defaults); for a GPU",
        ),
    }


__all__ = ["BackdoorBreadth"]
