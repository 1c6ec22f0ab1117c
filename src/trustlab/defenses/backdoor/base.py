"""The protocols of backdoor defenses and what the dataset filters share.

Three protocols (architecture section 3), one verb each:

- input detectors: ``fit(clean, ...)`` then ``score(x) -> Tensor`` (higher = more suspicious):
  :class:`~trustlab.defenses.detection.base.InputDetector` (STRIP, LID, KD/BU, deep features);
- :class:`DatasetFilter`: ``flag(dataset) -> indices`` of suspected poisoned training samples
  (spectral signatures, activation clustering, the adversarial-training filter); each also has
  ``analyze(dataset) -> FilterReport`` with per-sample scores and per-class details;
- :class:`Repairer`: ``repair(model, clean_data) -> model`` (fine-pruning).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn
from torch.utils.data import Dataset

from trustlab.data.datasets import ArrayDataset, as_array_dataset
from trustlab.errors import InputError
from trustlab.metrics.detection import auroc, flag_precision_recall


@runtime_checkable
class DatasetFilter(Protocol):
    """A dataset filter: ``flag(dataset) -> indices`` (sorted int64) of suspected poisoned
    training samples (spectral signatures, activation clustering, the adversarial filter).

    Example::

        isinstance(SpectralSignatures(model), DatasetFilter)  # True
    """

    def flag(self, dataset: Dataset) -> torch.Tensor: ...


@runtime_checkable
class Repairer(Protocol):
    """A repairer: ``repair(model, clean_data) -> model`` (fine-pruning).

    Example::

        isinstance(FinePruning(), Repairer)  # True
    """

    def repair(self, model: nn.Module, clean_data: Dataset) -> nn.Module: ...


@dataclass
class FilterReport:
    """What a dataset filter found: the flagged indices (sorted, int64), a suspicion score per
    sample (higher = more suspicious; ``(N,)``), per-class details, and, when the dataset
    carried a ``poison_mask`` (a :class:`~trustlab.attacks.backdoor.PoisonedDataset`), the
    precision/recall of the flagged set and the AUROC of the scores against it (``metrics``;
    used for evaluation only, never for flagging).

    Example::

        report = ActivationClustering(model).analyze(poisoned_train)
        report.flagged, report.metrics.get("precision")
    """

    flagged: torch.Tensor
    scores: torch.Tensor
    per_class: dict[int, dict[str, Any]] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def evaluate(self, poison_mask: torch.Tensor) -> dict[str, float]:
        """Precision, recall, F1 of the flagged set and the scores' AUROC against a mask."""
        out: dict[str, float] = dict(flag_precision_recall(self.flagged, poison_mask))
        mask = torch.as_tensor(poison_mask).bool()
        if 0 < int(mask.sum()) < len(mask):
            out["auroc"] = auroc(self.scores, mask)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "flagged": [int(i) for i in self.flagged],
            "n_flagged": int(self.flagged.numel()),
            "per_class": {str(k): v for k, v in self.per_class.items()},
            **({"metrics": self.metrics} if self.metrics else {}),
            **self.extra,
        }


def as_dataset(data: Dataset | ArrayDataset, what: str = "the dataset") -> ArrayDataset:
    """An :class:`ArrayDataset` (validated) from any map-style dataset of ``(x, y)`` pairs."""
    if isinstance(data, torch.Tensor):
        raise InputError(
            f"{what} must be a dataset with labels (an ArrayDataset or a torch Dataset of "
            "(x, y) pairs), got a bare tensor."
        )
    return as_array_dataset(data)


def finish(report: FilterReport, data: ArrayDataset) -> FilterReport:
    """Attach the evaluation against ``data.poison_mask`` when the dataset has one."""
    mask = getattr(data, "poison_mask", None)
    if isinstance(mask, torch.Tensor) and mask.shape == (len(data),):
        report.metrics = report.evaluate(mask)
    return report


def check_features(
    features: torch.Tensor, labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Validated ``(N, D)`` float64 features and ``(N,)`` int64 labels on the CPU."""
    f = torch.as_tensor(features).detach().cpu()
    y = torch.as_tensor(labels).detach().cpu()
    if f.dim() != 2 or y.dim() != 1 or len(f) != len(y):
        raise InputError(
            f"need features (N, D) and labels (N,), got {tuple(f.shape)} and {tuple(y.shape)}."
        )
    if len(f) == 0:
        raise InputError("no samples: the features are empty.")
    if not bool(torch.isfinite(f).all()):
        raise InputError("the features contain NaN or inf (is the model diverged?).")
    if y.is_floating_point() or y.dtype == torch.bool:
        raise InputError("labels must be integer class indices.")
    return f.double(), y.long()


def input_batch(data: torch.Tensor | Dataset, what: str) -> torch.Tensor:
    """The inputs of ``data`` (a batch or a dataset) as one non-empty, finite ``(N, ...)``
    tensor; an input detector's ``fit`` and ``score`` read their inputs through it."""
    x = data if isinstance(data, torch.Tensor) else as_array_dataset(data).x
    if x.dim() < 3 or len(x) == 0:
        raise InputError(
            f"{what} must be a non-empty batch of inputs (N, C, H, W) or a dataset, got shape "
            f"{tuple(x.shape)}."
        )
    if not bool(torch.isfinite(x).all()):
        raise InputError(f"{what} contain NaN or inf values.")
    return x
