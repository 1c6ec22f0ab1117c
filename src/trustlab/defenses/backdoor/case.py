"""What a backdoor defense gets when it is measured against an attack artefact
(:func:`~trustlab.defenses.backdoor.evaluate.run_defense`), and the measurements the defenses
share.

Each defense class registered in :data:`~trustlab.registry.DEFENSES` has a classmethod
``run_case(case) -> dict[str, float]``: its own code path from a :class:`DefenseCase` to the
numbers of the bench matrix. :func:`after_repair` measures a repaired model (C-Acc, ASR, DER)
and :func:`filter_metrics` a dataset filter's report against the poison mask.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from trustlab.attacks.backdoor.artifact import BackdoorArtifact, evaluate_backdoor
from trustlab.attacks.backdoor.poison import PoisonedDataset
from trustlab.data.datasets import ArrayDataset
from trustlab.metrics.backdoor import defense_effectiveness_rating
from trustlab.utils.modules import device_of

__all__ = ["DefenseCase", "after_repair", "filter_metrics"]


@dataclass
class DefenseCase:
    """What a defense's ``run_case`` gets: the artefact, the poisoned training set, the
    defender's clean half and the evaluation half of the test split, the attacked model's
    metrics on it, the training budget, the seed, the defense's options, and where its report
    goes.

    Args:
        art: the attack artefact (its model is never changed: repair a copy).
        train: the training set the model saw (``None`` unless the card's meta ``filter``).
        clean: the defender's clean half of the test split.
        ev: the evaluation half.
        before: ``clean_acc``, ``asr``, ``ra`` of the attacked model on ``ev``.
        settings: the training budget of the models a defense trains (``None``: its default).
        seed: the defense's seed.
        options: keyword arguments for the defense's constructor.
        progress: show progress bars.
        keep: receives the defense's own report under ``"report"``.

    Example::

        case = DefenseCase(art, None, clean, ev, before, None, 0, {}, False, {})
        NeuralCleanse.run_case(case)["anomaly"]
    """

    art: BackdoorArtifact
    train: PoisonedDataset | None
    clean: ArrayDataset
    ev: ArrayDataset
    before: dict[str, float]
    settings: Any
    seed: int
    options: dict[str, Any]
    progress: bool
    keep: dict[str, Any]

    def kwargs(self) -> dict[str, Any]:
        """The defense constructor's keyword arguments: the options, and the training budget
        as ``settings`` when there is one (an explicit option wins)."""
        if self.settings is None:
            return dict(self.options)
        return {"settings": self.settings, **self.options}

    def fresh_model(self, label: str, who: str) -> torch.nn.Module:
        """A freshly initialised model of the attacked model's architecture (initial weights
        from ``(seed, label)``), on its device: what a defense that trains its own model from
        scratch (ABL, the adversarial filter) starts from."""
        from trustlab.errors import InputError
        from trustlab.models.spec import ModelSpec
        from trustlab.utils.seed import derive_seed

        spec = ModelSpec.from_model(self.art.model)
        if spec is None:
            raise InputError(f"{who} trains a fresh trustlab model; the attacked one is not one.")
        torch.manual_seed(derive_seed(self.seed, label))
        return spec.build().to(device_of(self.art.model))


def after_repair(
    art: BackdoorArtifact, model: torch.nn.Module, ev: ArrayDataset, before: dict
) -> dict[str, float]:
    """``clean_acc_after``, ``asr_after`` and ``der`` of a repaired ``model`` on ``ev``."""
    m = evaluate_backdoor(model, ev, art.trigger, art.policy, device=device_of(model))
    der = defense_effectiveness_rating(before["asr"], m["asr"], before["clean_acc"], m["clean_acc"])
    return {"clean_acc_after": m["clean_acc"], "asr_after": m["asr"], "der": der}


def filter_metrics(report: Any, train: Any) -> dict[str, float]:
    """Precision, recall and AUROC of a filter against the poison mask; NaN when nothing was
    poisoned (the blind backdoor: there is nothing in the data to find, not a miss)."""
    if not bool(train.poison_mask.any()):
        return {"precision": math.nan, "recall": math.nan, "auroc": math.nan}
    m = report.evaluate(train.poison_mask)
    return {k: float(m[k]) for k in ("precision", "recall", "auroc") if k in m}
