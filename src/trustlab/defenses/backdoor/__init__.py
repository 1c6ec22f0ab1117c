"""Backdoor defenses: model inspectors and repairers, input detectors, dataset filters, each
registered in :data:`~trustlab.registry.DEFENSES` at its class (imported here in the
catalogue's order: ``nc``, ``strip``, ``spectral``, ``ac``, ``fine-pruning``, ``adv-filter``)."""

# the defenses register in DEFENSES when imported: this import fixes the catalogue's order
from trustlab.defenses.backdoor import (  # noqa: F401, I001
    neural_cleanse,
    strip,
    spectral,
    activation_clustering,
    fine_pruning,
    adversarial_filter,
)

from trustlab.defenses.backdoor.activation_clustering import (
    ActivationClustering,
    cluster_activations,
)
from trustlab.defenses.backdoor.adversarial_filter import (
    AdversarialFilter,
    RetrainResult,
    filter_then_retrain,
    robust_loss,
)
from trustlab.defenses.backdoor.base import DatasetFilter, FilterReport, Repairer
from trustlab.defenses.backdoor.case import DefenseCase
from trustlab.defenses.backdoor.fine_pruning import FinePruning, FinePruningReport, last_conv
from trustlab.defenses.backdoor.neural_cleanse import (
    NCReport,
    NeuralCleanse,
    anomaly_index,
    flagged_classes,
)
from trustlab.defenses.backdoor.spectral import (
    SpectralSignatures,
    spectral_filter,
    spectral_scores,
)
from trustlab.defenses.backdoor.strip import STRIP, superimpose

__all__ = [
    "STRIP",
    "ActivationClustering",
    "AdversarialFilter",
    "DatasetFilter",
    "DefenseCase",
    "FilterReport",
    "FinePruning",
    "FinePruningReport",
    "NCReport",
    "NeuralCleanse",
    "Repairer",
    "RetrainResult",
    "SpectralSignatures",
    "anomaly_index",
    "cluster_activations",
    "filter_then_retrain",
    "flagged_classes",
    "last_conv",
    "robust_loss",
    "spectral_filter",
    "spectral_scores",
    "superimpose",
]
