"""The adversarial-training filter and filter-then-retrain: Manoj & Blum, "Excess Capacity and
Backdoor Poisoning", NeurIPS 2021.

The paper's theory: a backdoor is learnable because the model has capacity to spare on
directions the clean data never exercises; "adversarial training can detect the presence of
backdoors", and "backdoor filtering and robust generalization are nearly equivalent". The
filter that follows: train a model **adversarially** on the possibly poisoned set (PGD
adversarial training, Madry et al. 2018: :class:`~trustlab.robust.adversarial.PGDTraining` through
the one :class:`~trustlab.train.Trainer`); a robust model cannot spend capacity on a small
trigger, so the poisoned points, whose labels only the trigger explains, are the ones it does
**not** fit robustly. Flag them, drop them, and retrain a standard model on the rest
(:func:`filter_then_retrain`, which takes any :class:`~trustlab.defenses.backdoor.base.
DatasetFilter`).

The paper is theoretical and gives no experimental recipe; trustlab's choices:

- adversarial training: PGD L-inf, ``eps = 8/255``, ``alpha = 2/255``, 10 steps (the Madry
  defaults of ``PGDTraining``; on ``digits``/MNIST-like data ``eps = 0.1`` to ``0.3`` is usual),
  with the caller's :class:`~trustlab.train.TrainSettings` (default 10 epochs, SGD lr 0.05,
  batch 64);
- the per-sample score is the **robust loss**: cross-entropy of the trained model on a PGD
  example of the training point (same eps and steps, seeded), higher = more suspicious;
- the flag rule (``criterion``): ``"error"`` (default) flags the points the robust model
  misclassifies; ``"robust-error"`` flags the points whose PGD example it misclassifies (the
  points not robustly fit, the theory's notion: higher recall, many more clean points);
  ``"loss"`` flags the ``fraction`` of points of highest robust loss (for a known budget).
  Measured on ``digits`` (``cnn-small``, 5 epochs of PGD-5 training at eps 0.1, lr 0.05) with
  BadNets at 2% of the data: ``"error"`` precision 0.60 / recall 0.97, ``"robust-error"``
  0.16 / 1.0, the top-29 robust losses 0.79 / 0.79 (score AUROC 0.997). At 5% and 10% of the
  data (72 and 144 points sharing one trigger of amplitude 1, far outside the eps ball) the
  robust model fits them (score AUROC 0.22 and 0.08) and nothing poisoned is flagged; at eps 0.3
  the 5-epoch robust model did not train (80% training error). The filter needs a trigger the
  threat model can reach, or a rare one;
- the filter trains a deep copy of the ``model`` it is given (its starting weights), so it can be
  reused; the robust model of the last call is ``AdversarialFilter.robust_model``.

A :class:`~trustlab.defenses.backdoor.base.FilterReport` of a
:class:`~trustlab.attacks.backdoor.PoisonedDataset` carries the precision and recall of the
flagged set against ``poison_mask`` (``report.metrics``).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from trustlab.attacks.evasion.base import parse_eps
from trustlab.attacks.evasion.pgd import PGD
from trustlab.data.datasets import ArrayDataset
from trustlab.defenses.backdoor.base import DatasetFilter, FilterReport, as_dataset, finish
from trustlab.defenses.backdoor.case import DefenseCase, after_repair, filter_metrics
from trustlab.errors import InputError
from trustlab.metrics.detection import flag_precision_recall
from trustlab.registry import DEFENSES
from trustlab.robust.adversarial import PGDTraining
from trustlab.train.trainer import Trainer, TrainResult, TrainSettings
from trustlab.utils.modules import device_of, frozen
from trustlab.utils.seed import derive_seed

CRITERIA = ("error", "robust-error", "loss")


def robust_loss(
    model: nn.Module,
    data: ArrayDataset,
    eps: float,
    alpha: float,
    steps: int,
    norm: str = "linf",
    batch_size: int = 256,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(robust loss, clean prediction, adversarial prediction)``, each ``(N,)`` on the CPU:
    cross-entropy of ``model`` on a PGD example of every sample against its label."""
    dev = device_of(model)
    losses, clean_pred, adv_pred = [], [], []
    for i, s in enumerate(range(0, len(data), batch_size)):
        x, y = data.x[s : s + batch_size].to(dev), data.y[s : s + batch_size].to(dev)
        atk = PGD(model, eps, alpha, steps, norm, seed=derive_seed(seed, "robust-loss", i))
        adv = atk(x, y)
        with frozen(model), torch.no_grad():
            logits_adv = model(adv)
            clean_pred.append(model(x).argmax(1).cpu())
        losses.append(F.cross_entropy(logits_adv, y, reduction="none").cpu())
        adv_pred.append(logits_adv.argmax(1).cpu())
    return torch.cat(losses).double(), torch.cat(clean_pred), torch.cat(adv_pred)


@DEFENSES.register(
    "adv-filter",
    "adversarial-training filter: points a robust model gets wrong are removed, then retrain",
    paper="Manoj, Blum. Excess Capacity and Backdoor Poisoning. NeurIPS 2021.",
    threat="training-set filtering with a robust model trained on it; retraining",
    inputs=("model",),
    protocol="dataset-filter",
    filter=True,
    trains=True,
    budget="settings",
    headline=("recall", "recall of poisoned samples"),
)
class AdversarialFilter:
    """The adversarial-training filter (Manoj & Blum, NeurIPS 2021; see the module).

    Args:
        model: the network to train adversarially (a deep copy is trained; its weights are the
            starting point, normally a fresh initialisation).
        settings: training settings (default 10 epochs, SGD lr 0.05, batch 64, cosine).
        eps, alpha, steps, norm: the PGD threat model of training and of the robust loss.
        criterion: ``"error"``, ``"robust-error"`` or ``"loss"`` (see the module).
        fraction: the flagged share for ``criterion="loss"``.
        batch_size: batch size of the robust-loss evaluation.
        seed: seeds PGD (training and evaluation).
        progress: show the training progress bar.

    Shapes: a dataset of ``N`` inputs ``(N, C, H, W)`` in [0, 1]; :meth:`flag` returns sorted
    int64 indices, :meth:`analyze` a :class:`FilterReport` with ``(N,)`` robust losses.

    Example::

        flt = AdversarialFilter(fresh_model, eps=8 / 255, steps=10)
        result = filter_then_retrain(flt, poisoned_train, another_fresh_model, settings)
    """

    @classmethod
    def run_case(cls, c: DefenseCase) -> dict[str, float]:
        """Train a robust model from fresh weights, filter the training set the model saw,
        retrain a fresh model on the rest: the filter's and the repair's numbers."""
        # the robust model and the retrained one start from fresh weights (the theory paper's
        # filter trains its own robust learner; the backdoored model already fits the poison)
        robust = c.fresh_model("robust", "the adversarial filter")
        flt = cls(robust, seed=c.seed, progress=c.progress, **c.kwargs())
        fresh = c.fresh_model("retrain", "the adversarial filter")
        result = filter_then_retrain(flt, c.train, fresh, flt.settings, progress=c.progress)
        assert result.report is not None
        c.keep["report"] = result.report
        return {
            **filter_metrics(result.report, c.train),
            **after_repair(c.art, result.model, c.ev, c.before),
        }

    def __init__(
        self,
        model: nn.Module,
        settings: TrainSettings | None = None,
        eps: float | str = 8 / 255,
        alpha: float | str = 2 / 255,
        steps: int = 10,
        norm: str = "linf",
        criterion: str = "error",
        fraction: float | None = None,
        batch_size: int = 256,
        seed: int = 0,
        progress: bool = False,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise InputError(f"model must be a torch.nn.Module, got {type(model).__name__}.")
        if criterion not in CRITERIA:
            raise InputError(f"unknown criterion {criterion!r}; use one of {', '.join(CRITERIA)}.")
        if criterion == "loss" and (fraction is None or not 0 < fraction < 1):
            raise InputError(
                f"criterion 'loss' flags a fraction of the data: pass fraction in (0, 1), got "
                f"{fraction}."
            )
        if steps < 1 or batch_size < 1:
            raise InputError("steps and batch_size must be >= 1.")
        self.model = model
        self.settings = settings or TrainSettings(epochs=10, lr=0.05, batch_size=64)
        self.eps, self.alpha, self.steps, self.norm = parse_eps(eps), parse_eps(alpha), steps, norm
        self.criterion, self.fraction = criterion, fraction
        self.batch_size, self.seed, self.progress = batch_size, seed, progress
        self.robust_model: nn.Module | None = None

    def train_robust(self, data: ArrayDataset) -> nn.Module:
        """A deep copy of ``model`` trained with PGD adversarial training on ``data``."""
        net = copy.deepcopy(self.model)
        loss = PGDTraining(self.eps, self.alpha, self.steps, self.norm, seed=self.seed)
        Trainer(
            net, self.settings, compute_loss=loss, device=device_of(net), progress=self.progress
        ).fit(data)
        return net

    def analyze(self, dataset: Dataset | ArrayDataset) -> FilterReport:
        """Train the robust model, score every sample by its robust loss and flag (plus
        precision/recall against the dataset's ``poison_mask`` when it has one)."""
        data = as_dataset(dataset)
        net = self.train_robust(data)
        self.robust_model = net
        loss, pred, adv_pred = robust_loss(
            net, data, self.eps, self.alpha, self.steps, self.norm, self.batch_size, self.seed
        )
        y = data.y
        if self.criterion == "robust-error":
            chosen = adv_pred != y
        elif self.criterion == "error":
            chosen = pred != y
        else:
            assert self.fraction is not None
            k = round(self.fraction * len(data))
            chosen = torch.zeros(len(data), dtype=torch.bool)
            chosen[torch.argsort(loss, descending=True, stable=True)[:k]] = True
        flagged = torch.nonzero(chosen).flatten()
        per_class = {
            int(c): {"samples": int((y == c).sum()), "flagged": int((chosen & (y == c)).sum())}
            for c in torch.unique(y).tolist()
        }
        extra = {
            "criterion": self.criterion, "eps": self.eps, "steps": self.steps,
            "train_error": float((pred != y).float().mean()),
            "robust_train_error": float((adv_pred != y).float().mean()),
        }  # fmt: skip
        return finish(FilterReport(flagged, loss, per_class, extra=extra), data)

    def flag(self, dataset: Dataset | ArrayDataset) -> torch.Tensor:
        """Sorted indices of the flagged training points."""
        return self.analyze(dataset).flagged


@dataclass
class RetrainResult:
    """What :func:`filter_then_retrain` returns: the retrained model, the removed indices,
    the filter's report (when it has ``analyze``), the training result and the flag metrics
    against the poison mask.

    Example::

        result = filter_then_retrain(flt, poisoned_train, fresh_model, settings)
        result.model, result.metrics.get("recall")
    """

    model: nn.Module  # the standard model retrained on the kept samples
    flagged: torch.Tensor  # the removed indices
    report: FilterReport | None  # the filter's report when it has ``analyze``
    train: TrainResult
    metrics: dict[str, Any] = field(default_factory=dict)  # against poison_mask, if any


def filter_then_retrain(
    flt: DatasetFilter,
    dataset: Dataset | ArrayDataset,
    model: nn.Module,
    settings: TrainSettings,
    test: Dataset | ArrayDataset | None = None,
    progress: bool = False,
) -> RetrainResult:
    """Flag with ``flt`` (any dataset filter), drop the flagged samples and train ``model`` (in
    place, on its own device; normally a fresh network) with a standard cross-entropy on the
    rest; ``test`` is evaluated each epoch as in :class:`~trustlab.train.Trainer`."""
    data = as_dataset(dataset)
    if hasattr(flt, "analyze"):
        report = flt.analyze(data)
        flagged = report.flagged
    elif isinstance(flt, DatasetFilter):
        report, flagged = None, torch.as_tensor(flt.flag(data)).long()
    else:
        raise InputError(f"{type(flt).__name__} is not a dataset filter (it has no flag()).")
    if flagged.numel() and (int(flagged.min()) < 0 or int(flagged.max()) >= len(data)):
        raise InputError(
            f"{type(flt).__name__} flagged indices outside the dataset's {len(data)} samples."
        )
    keep = torch.ones(len(data), dtype=torch.bool)
    keep[flagged] = False
    if not bool(keep.any()):
        raise InputError("the filter flagged every sample; nothing is left to retrain on.")
    kept = data.subset(torch.nonzero(keep).flatten())
    result = Trainer(model, settings, device=device_of(model), progress=progress).fit(kept, test)
    metrics: dict[str, Any] = dict(report.metrics) if report is not None else {}
    mask = getattr(data, "poison_mask", None)
    if report is None and isinstance(mask, torch.Tensor) and mask.shape == (len(data),):
        metrics = dict(flag_precision_recall(flagged, mask))
    return RetrainResult(model, flagged, report, result, metrics)
