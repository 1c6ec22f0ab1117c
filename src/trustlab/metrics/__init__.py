"""Pure metric functions (no models, no I/O)."""

from trustlab.metrics.classification import accuracy, confusion_matrix, num_correct

__all__ = ["accuracy", "confusion_matrix", "num_correct"]
