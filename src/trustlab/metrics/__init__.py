"""Pure metric functions (no models, no I/O)."""

from trustlab.metrics.classification import accuracy, confusion_matrix, num_correct
from trustlab.metrics.detection import auroc, flag_precision_recall, roc_curve, tpr_at_fpr
from trustlab.metrics.privacy import (
    membership_advantage,
    membership_auc,
    membership_metrics,
    tpr_at_low_fpr,
)

__all__ = [
    "accuracy",
    "auroc",
    "confusion_matrix",
    "flag_precision_recall",
    "membership_advantage",
    "membership_auc",
    "membership_metrics",
    "num_correct",
    "roc_curve",
    "tpr_at_fpr",
    "tpr_at_low_fpr",
]
