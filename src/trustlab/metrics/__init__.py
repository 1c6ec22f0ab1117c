"""Pure metric functions (no models, no I/O)."""

from trustlab.metrics.classification import accuracy, confusion_matrix, num_correct
from trustlab.metrics.detection import auroc, flag_precision_recall, roc_curve, tpr_at_fpr
from trustlab.metrics.fairness import collaborative_fairness, pearson
from trustlab.metrics.image import l1_in_hole, psnr, ssim
from trustlab.metrics.privacy import (
    membership_advantage,
    membership_auc,
    membership_metrics,
    tpr_at_low_fpr,
)

__all__ = [
    "accuracy",
    "auroc",
    "collaborative_fairness",
    "confusion_matrix",
    "flag_precision_recall",
    "l1_in_hole",
    "membership_advantage",
    "membership_auc",
    "membership_metrics",
    "num_correct",
    "pearson",
    "psnr",
    "roc_curve",
    "ssim",
    "tpr_at_fpr",
    "tpr_at_low_fpr",
]
