"""Spectral signatures: Tran, Li & Madry, "Spectral Signatures in Backdoor Attacks", NeurIPS
2018.

A backdoor leaves a trace in the learned representation that is strong enough to show in its
covariance spectrum. For every label ``y``, take the penultimate representations ``R_i`` of the
training samples labelled ``y``, centre them (``R_i - mean``), compute the top right singular
vector ``v`` of the centred ``(n_y, D)`` matrix and score each sample by its squared projection
``((R_i - mean) . v)^2``; remove the ``1.5 * eps`` highest-scoring fraction of every class, then
retrain on what is left (:func:`~trustlab.defenses.backdoor.adversarial_filter.filter_then_retrain`
takes any filter).

Defaults and deviations:

- the representation is the classifier's penultimate layer (``model.features``; the paper takes
  the input of the last residual stage's output, i.e. the same place in its ResNet); ``layer=``
  taps any other layer, flattened;
- ``eps`` is the expected *fraction* of poisoned samples within a poisoned class, and every
  class loses ``round(1.5 * eps * n_y)`` samples (at most all of them). The paper's algorithm
  takes an upper bound on the poisoned *count* and its experiments poison 5% or 10% of the
  target class, so the two agree there. Default ``eps = 0.1``. Note that BadNets-style
  all-to-one poisoning of a rate ``r`` of a dataset of ``K`` balanced classes puts
  ``rK / (1 + rK)`` poison in the target class (0.5 for ``r = 0.1``, ``K = 10``): pass that, not
  ``r``. With half a class poisoned, squared projections no longer single out one side, a known
  limit of the method (the paper studies minority poison).
- the SVD runs in float64 on the CPU, one class at a time (``K`` SVDs, no loop over samples).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import Dataset

from trustlab.data.datasets import ArrayDataset
from trustlab.defenses.backdoor.base import FilterReport, as_dataset, check_features, finish
from trustlab.defenses.backdoor.case import DefenseCase, filter_metrics
from trustlab.defenses.detection.deep_features import extract
from trustlab.errors import InputError
from trustlab.registry import DEFENSES

MULTIPLIER = 1.5


def spectral_scores(features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``(N,)`` squared projection of each sample's class-centred representation on its class's
    top right singular vector (float64)."""
    f, y = check_features(features, labels)
    scores = torch.zeros(len(f), dtype=torch.float64)
    for c in torch.unique(y).tolist():
        idx = torch.nonzero(y == c).flatten()
        if len(idx) < 2:
            continue  # a single sample has no spread: score 0
        r = f[idx] - f[idx].mean(0, keepdim=True)
        _, _, vh = torch.linalg.svd(r, full_matrices=False)
        scores[idx] = (r @ vh[0]) ** 2
    return scores


def spectral_filter(
    features: torch.Tensor,
    labels: torch.Tensor,
    eps: float = 0.1,
    multiplier: float = MULTIPLIER,
) -> FilterReport:
    """Score every sample (:func:`spectral_scores`) and flag the ``round(multiplier * eps *
    n_y)`` highest scores of each class ``y``."""
    if not 0 < eps <= 1:
        raise InputError(
            f"eps (the expected poisoned fraction of a class) must be in (0, 1], got {eps}."
        )
    if multiplier <= 0:
        raise InputError(f"multiplier must be > 0, got {multiplier}.")
    scores = spectral_scores(features, labels)
    y = torch.as_tensor(labels).cpu().long()
    flagged, per_class = [], {}
    for c in torch.unique(y).tolist():
        idx = torch.nonzero(y == c).flatten()
        k = min(len(idx), round(multiplier * eps * len(idx)))
        top = idx[torch.argsort(scores[idx], descending=True, stable=True)[:k]]
        flagged.append(top)
        per_class[int(c)] = {"samples": len(idx), "removed": k}
    out = torch.cat(flagged).sort().values if flagged else torch.zeros(0, dtype=torch.long)
    return FilterReport(out, scores, per_class, extra={"eps": eps, "multiplier": multiplier})


@DEFENSES.register(
    "spectral",
    "spectral signatures: outliers of each class's top singular direction are removed",
    paper="Tran, Li, Madry. Spectral Signatures in Backdoor Attacks. NeurIPS 2018.",
    threat="training-set filtering with the model trained on it",
    inputs=("model",),
    protocol="dataset-filter",
    filter=True,
    trains=False,
    headline=("recall", "recall of poisoned samples"),
)
class SpectralSignatures:
    """Spectral signatures (Tran et al., NeurIPS 2018; see the module) of a model trained on
    the (possibly poisoned) set.

    Args:
        model: the classifier trained on the dataset to filter.
        eps: expected fraction of poisoned samples within a poisoned class (default 0.1).
        multiplier: the paper's 1.5.
        layer: a layer name to take the representation from (default ``model.features``).
        batch_size: inference batch size.

    Shapes: a dataset of ``N`` inputs ``(N, C, H, W)``; :meth:`flag` returns sorted int64
    indices, :meth:`analyze` a :class:`FilterReport` with ``(N,)`` scores.

    Example::

        report = SpectralSignatures(model, eps=0.5).analyze(poisoned_train)
        report.flagged, report.metrics
    """

    @classmethod
    def run_case(cls, c: DefenseCase) -> dict[str, float]:
        """Filter the training set the model saw: precision, recall, AUROC against the poison
        mask (NaN when nothing was poisoned)."""
        report = cls(c.art.model, **c.options).analyze(c.train)
        c.keep["report"] = report
        return filter_metrics(report, c.train)

    def __init__(
        self,
        model: nn.Module,
        eps: float = 0.1,
        multiplier: float = MULTIPLIER,
        layer: str | None = None,
        batch_size: int = 256,
    ) -> None:
        if not 0 < eps <= 1:
            raise InputError(
                f"eps (the expected poisoned fraction of a class) must be in (0, 1], got {eps}."
            )
        if batch_size < 1:
            raise InputError(f"batch_size must be >= 1, got {batch_size}.")
        self.model, self.eps, self.multiplier = model, eps, multiplier
        self.layer, self.batch_size = layer, batch_size

    def analyze(self, dataset: Dataset | ArrayDataset) -> FilterReport:
        """Scores, flagged indices and per-class counts (plus precision/recall against the
        dataset's ``poison_mask`` when it has one)."""
        data = as_dataset(dataset)
        feats = extract(self.model, data.x, self.layer, self.batch_size)
        report = spectral_filter(feats, data.y, self.eps, self.multiplier)
        return finish(report, data)

    def flag(self, dataset: Dataset | ArrayDataset) -> torch.Tensor:
        """Sorted indices of the samples to remove."""
        return self.analyze(dataset).flagged
