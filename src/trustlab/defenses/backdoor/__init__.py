"""Backdoor defenses: model inspectors and repairers, input detectors, dataset filters."""

from trustlab.defenses.backdoor.neural_cleanse import (
    NCReport,
    NeuralCleanse,
    anomaly_index,
    flagged_classes,
)

__all__ = ["NCReport", "NeuralCleanse", "anomaly_index", "flagged_classes"]
