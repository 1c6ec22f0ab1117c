"""Run a backdoor defense against an attack artefact and measure it the same way every time.

``run_defense(name, artifact, train, test)`` is what ``trustlab defend`` and ``trustlab bench
backdoor`` call. The defender gets what the papers give it: the (possibly backdoored) model, the
training set the model saw (rebuilt exactly from the artefact:
:meth:`~trustlab.attacks.backdoor.artifact.BackdoorArtifact.training_set`) for the dataset
filters, and a small clean set for the others: half of the test split (seeded), the other half
measuring the outcome. Every defense returns a flat dict of numbers:

- all: ``clean_acc`` and ``asr`` of the attacked model on the evaluation half;
- ``nc`` (Neural Cleanse, :class:`~trustlab.defenses.backdoor.NeuralCleanse`): ``anomaly``
  (the target class's anomaly index), ``max_anomaly`` (the largest among classes below the
  median norm), ``detected`` (1 if the target is flagged), ``flagged`` (how many classes), then
  unlearning with the flagged classes' triggers: ``clean_acc_after``, ``asr_after``, ``der``;
- ``strip`` (:class:`~trustlab.defenses.backdoor.STRIP`): fitted on the clean half; scores of
  the evaluation half's clean inputs against its triggered non-target inputs: ``auroc``,
  ``tpr_at_5fpr``, and ``tpr`` / ``fpr`` at STRIP's own boundary (1% FRR);
- ``spectral``, ``ac`` (activation clustering) and ``adv-filter`` (the adversarial-training
  filter): on the training set: ``precision``, ``recall`` (of the flagged samples against the
  poison mask), ``auroc`` of their scores (all NaN when nothing in the data was poisoned, as
  for the blind backdoor); ``adv-filter`` trains its robust model from fresh weights and then
  retrains a fresh model on the kept samples (``filter_then_retrain``): ``clean_acc_after``,
  ``asr_after``, ``der``;
- ``fine-pruning`` (:class:`~trustlab.defenses.backdoor.FinePruning`) on the clean half:
  ``pruned`` (fraction of channels), ``clean_acc_after``, ``asr_after``, ``der``;
- ``fine-tuning``, ``nad``, ``i-bau`` (repairers on the clean half): ``clean_acc_after``,
  ``asr_after``, ``der``; ``anp`` also ``pruned`` (fraction of BatchNorm neurons; NaN cells for
  a model without BatchNorm);
- ``scale-up`` (an input detector, measured as STRIP): ``auroc``, ``tpr_at_5fpr``, ``tpr``,
  ``fpr``;
- ``abl`` (reads the training set, trains a fresh model on it): the isolation's
  ``precision``, ``recall``, ``auroc`` against the poison mask, then ``clean_acc_after``,
  ``asr_after``, ``der`` of the model it trained.

DER is ``[max(0, dASR) - max(0, dACC) + 1] / 2`` (:mod:`trustlab.metrics.backdoor`). The
defenses work on a copy: the artefact's model is never changed. ``options`` passes keyword
arguments to a defense's constructor (e.g. ``{"epochs": 5, "reset_cost_to_zero": False}``
for a budgeted Neural Cleanse scan), and
``settings`` is the training budget of the models a defense trains (fine-pruning's fine-tuning,
the adversarial filter's robust model and retrained model).

The defenses are the classes registered in :data:`~trustlab.registry.DEFENSES`; each measures
itself (its classmethod ``run_case``, :mod:`~trustlab.defenses.backdoor.case`), and its card
says whether it reads the training set (meta ``filter``), whether it trains (``trains``) and
its headline number in the bench matrix (``headline``).
"""

from __future__ import annotations

from typing import Any

import torch

from trustlab.attacks.backdoor.artifact import BackdoorArtifact, evaluate_backdoor
from trustlab.data.datasets import ArrayDataset
from trustlab.defenses.backdoor.case import DefenseCase
from trustlab.errors import InputError
from trustlab.registry import DEFENSES
from trustlab.utils.modules import device_of
from trustlab.utils.seed import derive_seed, generator


def split_clean(test: ArrayDataset, seed: int = 0) -> tuple[ArrayDataset, ArrayDataset]:
    """``(defender's clean half, evaluation half)`` of ``test`` (a seeded permutation)."""
    if len(test) < 4:
        raise InputError(f"the test split has {len(test)} samples; a defense needs at least 4.")
    perm = torch.randperm(len(test), generator=generator(derive_seed(seed, "defender")))
    half = len(test) // 2
    return test.subset(perm[:half]), test.subset(perm[half:])


def run_defense(
    name: str,
    art: BackdoorArtifact,
    train: ArrayDataset,
    test: ArrayDataset,
    settings: Any = None,
    options: dict[str, Any] | None = None,
    seed: int = 0,
    progress: bool = False,
    keep: dict[str, Any] | None = None,
) -> dict[str, float]:
    """Run the registered defense ``name`` (:data:`~trustlab.registry.DEFENSES`) against
    ``art``; see the module. ``train`` and ``test`` are the clean splits the artefact was made
    from; ``keep`` (a dict) receives the defense's own report under ``"report"`` (e.g. the
    :class:`NCReport`). The defense's class runs the case (its ``run_case``)."""
    card = DEFENSES.get(name)
    card.validate(options or {})  # unknown or mistyped options: an InputError naming the allowed
    # only the dataset filters read the training set (rebuilding it copies the whole split)
    poisoned = art.training_set(train) if card.meta.get("filter") else None
    clean, ev = split_clean(test, seed)
    before = evaluate_backdoor(art.model, ev, art.trigger, art.policy, device=device_of(art.model))
    case = DefenseCase(
        art, poisoned, clean, ev, before, settings, seed, dict(options or {}), progress,
        {} if keep is None else keep,
    )  # fmt: skip
    out = card.factory.run_case(case)
    return {"clean_acc": before["clean_acc"], "asr": before["asr"], **out}
