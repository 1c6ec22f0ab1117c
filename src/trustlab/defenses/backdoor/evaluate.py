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
  ``pruned`` (fraction of channels), ``clean_acc_after``, ``asr_after``, ``der``.

DER is ``[max(0, dASR) - max(0, dACC) + 1] / 2`` (:mod:`trustlab.metrics.backdoor`). The
defenses work on a copy: the artefact's model is never changed. ``options`` passes keyword
arguments to a defense's constructor (e.g. ``{"epochs": 5}`` for Neural Cleanse), and
``settings`` is the training budget of the models a defense trains (fine-pruning's fine-tuning,
the adversarial filter's robust model and retrained model).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from trustlab.attacks.backdoor.artifact import BackdoorArtifact, evaluate_backdoor
from trustlab.attacks.backdoor.poison import PoisonedDataset
from trustlab.data.datasets import ArrayDataset
from trustlab.errors import InputError
from trustlab.metrics.backdoor import defense_effectiveness_rating
from trustlab.metrics.detection import auroc, tpr_at_fpr
from trustlab.utils.seed import derive_seed, generator

DEFENSES = ("nc", "strip", "spectral", "ac", "fine-pruning", "adv-filter")
FILTERS = ("spectral", "ac", "adv-filter")  # the defenses that inspect the training set


def split_clean(test: ArrayDataset, seed: int = 0) -> tuple[ArrayDataset, ArrayDataset]:
    """``(defender's clean half, evaluation half)`` of ``test`` (a seeded permutation)."""
    if len(test) < 4:
        raise InputError(f"the test split has {len(test)} samples; a defense needs at least 4.")
    perm = torch.randperm(len(test), generator=generator(derive_seed(seed, "defender")))
    half = len(test) // 2
    return test.subset(perm[:half]), test.subset(perm[half:])


@dataclass
class _Case:
    """What a defense runner gets: the artefact, the poisoned training set, the defender's
    clean half and the evaluation half of the test split, the attacked model's metrics on it,
    the training budget, the seed, the defense's options, and where its report goes."""

    art: BackdoorArtifact
    train: PoisonedDataset | None  # the training set the model saw (dataset filters only)
    clean: ArrayDataset
    ev: ArrayDataset
    before: dict[str, float]
    settings: Any
    seed: int
    options: dict[str, Any]
    progress: bool
    keep: dict[str, Any]


def _after(art: BackdoorArtifact, model: torch.nn.Module, ev: ArrayDataset, before: dict) -> dict:
    dev = next(model.parameters()).device
    m = evaluate_backdoor(model, ev, art.trigger, art.policy, device=dev)
    der = defense_effectiveness_rating(before["asr"], m["asr"], before["clean_acc"], m["clean_acc"])
    return {"clean_acc_after": m["clean_acc"], "asr_after": m["asr"], "der": der}


def _nc(c: _Case) -> dict[str, float]:
    from trustlab.defenses.backdoor.neural_cleanse import NeuralCleanse

    nc = NeuralCleanse(seed=c.seed, progress=c.progress, **c.options)
    report = nc.inspect(c.art.model, c.clean)
    target = getattr(c.art.policy, "target", None)
    classes = report.extra.get("classes", list(range(len(report.norms))))
    row = classes.index(target) if target in classes else None
    out = {
        "max_anomaly": report.max_anomaly_of_small,
        "flagged": float(len(report.flagged)),
        "anomaly": float(report.anomaly[row]) if row is not None else math.nan,
        "detected": float(target in report.flagged) if target is not None else math.nan,
    }
    model = nc.repair(copy.deepcopy(c.art.model), c.clean, report)
    c.keep["report"] = report
    return {**out, **_after(c.art, model, c.ev, c.before)}


def _strip(c: _Case) -> dict[str, float]:
    from trustlab.defenses.backdoor.strip import STRIP

    det = STRIP(c.art.model, seed=c.seed, progress=c.progress, **c.options).fit(c.clean.x)
    target = c.art.policy.target_for(c.ev.y)
    x_trig = c.art.trigger(c.ev.x[c.ev.y != target])
    s_clean, s_trig = det.score(c.ev.x), det.score(x_trig)
    scores = torch.cat([s_clean, s_trig])
    labels = torch.cat([torch.zeros(len(s_clean)), torch.ones(len(s_trig))]).bool()
    # STRIP's own boundary on the entropies just computed (detect() would compute them again)
    assert det.threshold is not None
    flagged_clean, flagged_trig = -s_clean < det.threshold, -s_trig < det.threshold
    return {
        "auroc": auroc(scores, labels),
        "tpr_at_5fpr": tpr_at_fpr(scores, labels, 0.05),
        "tpr": float(flagged_trig.float().mean()),
        "fpr": float(flagged_clean.float().mean()),
    }


def _filter_metrics(report: Any, train: Any) -> dict[str, float]:
    """Precision, recall and AUROC of a filter against the poison mask; NaN when nothing was
    poisoned (the blind backdoor: there is nothing in the data to find, not a miss)."""
    if not bool(train.poison_mask.any()):
        return {"precision": math.nan, "recall": math.nan, "auroc": math.nan}
    m = report.evaluate(train.poison_mask)
    return {k: float(m[k]) for k in ("precision", "recall", "auroc") if k in m}


def _spectral(c: _Case) -> dict[str, float]:
    from trustlab.defenses.backdoor.spectral import SpectralSignatures

    report = SpectralSignatures(c.art.model, **c.options).analyze(c.train)
    c.keep["report"] = report
    return _filter_metrics(report, c.train)


def _ac(c: _Case) -> dict[str, float]:
    from trustlab.defenses.backdoor.activation_clustering import ActivationClustering

    report = ActivationClustering(c.art.model, seed=c.seed, **c.options).analyze(c.train)
    c.keep["report"] = report
    return _filter_metrics(report, c.train)


def _fine_pruning(c: _Case) -> dict[str, float]:
    from trustlab.defenses.backdoor.fine_pruning import FinePruning

    kw = {"settings": c.settings, **c.options} if c.settings is not None else dict(c.options)
    fp = FinePruning(progress=c.progress, **kw)
    model = fp.repair(copy.deepcopy(c.art.model), c.clean)
    assert fp.report is not None
    c.keep["report"] = fp.report
    return {"pruned": fp.report.fraction, **_after(c.art, model, c.ev, c.before)}


def _adv_filter(c: _Case) -> dict[str, float]:
    from trustlab.defenses.backdoor.adversarial_filter import (
        AdversarialFilter,
        filter_then_retrain,
    )
    from trustlab.models.spec import ModelSpec

    kw = {"settings": c.settings, **c.options} if c.settings is not None else dict(c.options)
    spec = ModelSpec.from_model(c.art.model)
    if spec is None:
        raise InputError("the adversarial filter trains trustlab models; this one is not.")
    dev = next(c.art.model.parameters()).device
    # the robust model and the retrained one start from fresh weights (the theory paper's
    # filter trains its own robust learner; the backdoored model already fits the poison)
    torch.manual_seed(derive_seed(c.seed, "robust"))
    flt = AdversarialFilter(spec.build().to(dev), seed=c.seed, progress=c.progress, **kw)
    torch.manual_seed(derive_seed(c.seed, "retrain"))
    fresh = spec.build().to(dev)
    result = filter_then_retrain(flt, c.train, fresh, flt.settings, progress=c.progress)
    assert result.report is not None
    c.keep["report"] = result.report
    return {
        **_filter_metrics(result.report, c.train),
        **_after(c.art, result.model, c.ev, c.before),
    }


RUNNERS: dict[str, Callable[..., dict[str, float]]] = {
    "nc": _nc,
    "strip": _strip,
    "spectral": _spectral,
    "ac": _ac,
    "fine-pruning": _fine_pruning,
    "adv-filter": _adv_filter,
}


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
    """Run defense ``name`` (one of :data:`DEFENSES`) against ``art``; see the module.
    ``train`` and ``test`` are the clean splits the artefact was made from; ``keep`` (a dict)
    receives the defense's own report under ``"report"`` (e.g. the :class:`NCReport`)."""
    if name not in RUNNERS:
        raise InputError(f"unknown defense {name!r}; use one of {', '.join(DEFENSES)}.")
    # only the dataset filters read the training set (rebuilding it copies the whole split)
    poisoned = art.training_set(train) if name in FILTERS else None
    clean, ev = split_clean(test, seed)
    dev = next(art.model.parameters()).device
    before = evaluate_backdoor(art.model, ev, art.trigger, art.policy, device=dev)
    case = _Case(
        art, poisoned, clean, ev, before, settings, seed, dict(options or {}), progress,
        {} if keep is None else keep,
    )  # fmt: skip
    out = RUNNERS[name](case)
    return {"clean_acc": before["clean_acc"], "asr": before["asr"], **out}
