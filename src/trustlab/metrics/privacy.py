"""Membership-inference metrics, pure functions of attack scores and the true membership.

Scores follow the convention of every trustlab attack: **higher = more likely a member**. The
membership mask is ``True`` (or 1) for members of the target's training set. Everything is
computed from :func:`trustlab.metrics.detection.roc_curve` (one point per distinct score, ties
counted together; the same input validation: 1-D finite scores, a 0/1 mask of the same length
with members and non-members), so no second ROC exists in the library.

- :func:`membership_auc`: the area under the ROC curve.
- :func:`tpr_at_low_fpr`: the largest TPR over the curve's points whose FPR is at most ``fpr``,
  without interpolation, as Carlini et al. ("Membership Inference Attacks From First
  Principles", S&P 2022) report it at 1% and 0.1% FPR. With fewer than ``1 / fpr`` non-members
  no point has a positive FPR that small, so the number is the TPR at *zero* false positives.
- :func:`membership_advantage`: Yeom et al.'s advantage TPR - FPR ("Privacy Risk in Machine
  Learning", CSF 2018), maximised over thresholds (the curve's points, where the maximum is
  attained). It is 0 for scores independent of membership and 1 for perfectly separating ones;
  the trivial thresholds (everything or nothing a member) keep it >= 0.
- :func:`membership_metrics`: all of them in one dict with keys ``auc``, ``tpr_at_1fpr``,
  ``tpr_at_01fpr`` and ``advantage``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from trustlab.metrics.detection import auroc, roc_curve, tpr_at_fpr

__all__ = [
    "membership_advantage",
    "membership_auc",
    "membership_metrics",
    "tpr_at_low_fpr",
]

Scores = torch.Tensor | Sequence[float]
Mask = torch.Tensor | Sequence[int] | Sequence[bool]


def membership_auc(scores: Scores, is_member: Mask) -> float:
    """Area under the ROC curve of ``scores`` against ``is_member`` (0.5 = chance)."""
    return auroc(scores, is_member)


def tpr_at_low_fpr(scores: Scores, is_member: Mask, fpr: float = 0.01) -> float:
    """The largest TPR at a threshold whose FPR is at most ``fpr`` (default 1%); see the module
    for what it means with fewer than ``1 / fpr`` non-members."""
    return tpr_at_fpr(scores, is_member, fpr)


def membership_advantage(scores: Scores, is_member: Mask) -> float:
    """``max over thresholds of TPR - FPR`` (Yeom et al. 2018), in ``[0, 1]``."""
    fpr, tpr, _ = roc_curve(scores, is_member)
    return float((tpr - fpr).max())


def membership_metrics(scores: Scores, is_member: Mask) -> dict[str, float]:
    """``{"auc", "tpr_at_1fpr", "tpr_at_01fpr", "advantage"}`` of ``scores`` (higher = member)
    against the membership mask ``is_member``."""
    return {
        "auc": membership_auc(scores, is_member),
        "tpr_at_1fpr": tpr_at_low_fpr(scores, is_member, 0.01),
        "tpr_at_01fpr": tpr_at_low_fpr(scores, is_member, 0.001),
        "advantage": membership_advantage(scores, is_member),
    }
