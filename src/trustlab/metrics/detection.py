"""Detection metrics, pure functions of scores (or flagged indices) and the ground truth.

- :func:`roc_curve`: the ROC curve of scores where *higher means positive* (adversarial,
  triggered, poisoned): one point per distinct score, predicting positive for
  ``score >= threshold``, starting at ``(0, 0)`` (threshold ``+inf``), as scikit-learn's
  ``roc_curve(..., drop_intermediate=False)``.
- :func:`auroc`: the area under that curve (trapezoidal), which equals the Mann-Whitney
  probability that a random positive scores above a random negative, ties counted one half.
- :func:`tpr_at_fpr`: the largest true-positive rate over the curve's points whose false-positive
  rate is at most ``fpr`` (default 5%); no interpolation between points.
- :func:`flag_precision_recall`: precision, recall and F1 of a set of flagged training indices
  against a ground-truth mask (e.g. ``PoisonedDataset.poison_mask``); an empty flagged set has
  precision 0 and a mask without positives recall 0 (scikit-learn's ``zero_division=0``).

The input detectors (STRIP, LID, KD/BU, deep features) report AUROC and TPR at 5% FPR; the
dataset filters (spectral signatures, activation clustering, the adversarial-training filter)
report precision and recall of what they flag.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from trustlab.errors import InputError

__all__ = ["auroc", "flag_precision_recall", "roc_curve", "tpr_at_fpr"]


def _truth(labels: torch.Tensor | Sequence[int] | Sequence[bool], n: int | None) -> torch.Tensor:
    t = torch.as_tensor(labels)
    if t.dim() != 1:
        raise InputError(f"the ground truth must be a 1-D mask, got shape {tuple(t.shape)}.")
    if n is not None and len(t) != n:
        raise InputError(f"{n} scores but {len(t)} ground-truth labels; pass one label per score.")
    if t.dtype != torch.bool:
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise InputError("the ground truth contains NaN or inf; pass 0/1 or boolean labels.")
        if not bool(((t == 0) | (t == 1)).all()):
            raise InputError("ground-truth labels must be 0/1 or booleans (1 = positive).")
        t = t == 1
    return t


def _scores(scores: torch.Tensor | Sequence[float]) -> torch.Tensor:
    s = torch.as_tensor(scores).detach().cpu().to(torch.float64)
    if s.dim() != 1:
        raise InputError(f"scores must be a 1-D tensor (one per sample), got {tuple(s.shape)}.")
    if not bool(torch.isfinite(s).all()):
        raise InputError("scores contain NaN or inf; every sample needs a finite score.")
    return s


def roc_curve(
    scores: torch.Tensor | Sequence[float], labels: torch.Tensor | Sequence[int]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(fpr, tpr, thresholds)``, float64 tensors of equal length; see the module."""
    s = _scores(scores)
    t = _truth(labels, len(s)).cpu()
    pos = int(t.sum())
    neg = len(t) - pos
    if pos == 0 or neg == 0:
        raise InputError(
            f"ROC needs positives and negatives; got {pos} positive and {neg} negative labels."
        )
    order = torch.argsort(s, descending=True, stable=True)
    s_sorted, t_sorted = s[order], t[order]
    tps = torch.cumsum(t_sorted, 0, dtype=torch.float64)
    fps = torch.cumsum(~t_sorted, 0, dtype=torch.float64)
    last = torch.ones(len(s), dtype=torch.bool)  # the last index of every run of equal scores
    last[:-1] = s_sorted[1:] != s_sorted[:-1]
    zero = torch.zeros(1, dtype=torch.float64)
    fpr = torch.cat([zero, fps[last] / neg])
    tpr = torch.cat([zero, tps[last] / pos])
    thresholds = torch.cat([torch.full((1,), float("inf"), dtype=torch.float64), s_sorted[last]])
    return fpr, tpr, thresholds


def auroc(scores: torch.Tensor | Sequence[float], labels: torch.Tensor | Sequence[int]) -> float:
    """Area under the ROC curve of ``scores`` (higher = positive) against 0/1 ``labels``."""
    fpr, tpr, _ = roc_curve(scores, labels)
    return float(torch.trapezoid(tpr, fpr))


def tpr_at_fpr(
    scores: torch.Tensor | Sequence[float],
    labels: torch.Tensor | Sequence[int],
    fpr: float = 0.05,
) -> float:
    """The largest TPR at a threshold whose FPR is at most ``fpr`` (default 5%)."""
    if not 0 <= fpr <= 1:
        raise InputError(f"fpr must be in [0, 1], got {fpr}.")
    f, t, _ = roc_curve(scores, labels)
    return float(t[f <= fpr + 1e-12].max())


def flag_precision_recall(
    flagged: torch.Tensor | Sequence[int], truth: torch.Tensor | Sequence[bool]
) -> dict[str, float]:
    """``{"precision", "recall", "f1", "flagged", "true_positives", "positives"}`` of
    ``flagged`` (indices into the dataset, or a boolean mask of its length) against the
    ground-truth mask ``truth`` (``True`` = poisoned)."""
    mask = _truth(truth, None).cpu()
    n = len(mask)
    f = torch.as_tensor(flagged).cpu()
    if f.dtype == torch.bool:
        if f.shape != mask.shape:
            raise InputError(
                f"a flagged mask of shape {tuple(f.shape)} for a dataset of {n} samples; pass "
                "indices or a mask of the same length."
            )
        chosen = f
    else:
        if f.is_floating_point() or f.dim() > 1:
            raise InputError("flagged must be integer indices (1-D) or a boolean mask.")
        f = f.long().flatten()
        if f.numel() and (int(f.min()) < 0 or int(f.max()) >= n):
            raise InputError(
                f"flagged indices span [{int(f.min())}, {int(f.max())}] but the dataset has "
                f"{n} samples."
            )
        chosen = torch.zeros(n, dtype=torch.bool)
        chosen[f] = True  # duplicates count once
    tp = int((chosen & mask).sum())
    n_flagged, positives = int(chosen.sum()), int(mask.sum())
    precision = tp / n_flagged if n_flagged else 0.0
    recall = tp / positives if positives else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "precision": precision, "recall": recall, "f1": f1,
        "flagged": n_flagged, "true_positives": tp, "positives": positives,
    }  # fmt: skip
