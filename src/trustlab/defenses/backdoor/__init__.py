"""Backdoor defenses: model inspectors and repairers, input detectors, dataset filters, each
registered in :data:`~trustlab.registry.DEFENSES` at its class (imported here in the
catalogue's order: ``nc``, ``strip``, ``scale-up``, ``spectral``, ``ac``, ``adv-filter``, ``abl``,
``fine-tuning``, ``fine-pruning``, ``nad``, ``anp``, ``i-bau``)."""

# the defenses register in DEFENSES when imported: this import fixes the catalogue's order
from trustlab.defenses.backdoor import (  # noqa: F401, I001
    neural_cleanse,
    strip,
    scale_up,
    spectral,
    activation_clustering,
    adversarial_filter,
    abl,
    fine_tuning,
    fine_pruning,
    nad,
    anp,
    i_bau,
)

from trustlab.defenses.backdoor.abl import ABL, ABLReport, lga_loss
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
from trustlab.defenses.backdoor.anp import ANP, ANPReport
from trustlab.defenses.backdoor.fine_pruning import FinePruning, FinePruningReport, last_conv
from trustlab.defenses.backdoor.fine_tuning import FineTuning, fine_tune
from trustlab.defenses.backdoor.i_bau import IBAU, fixed_point_hypergradient
from trustlab.defenses.backdoor.nad import NAD, at_loss, attention_map
from trustlab.defenses.backdoor.scale_up import ScaleUp, scaled_predictions
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
    "ABL",
    "ABLReport",
    "ANP",
    "ANPReport",
    "ActivationClustering",
    "AdversarialFilter",
    "DatasetFilter",
    "DefenseCase",
    "FilterReport",
    "FinePruning",
    "FinePruningReport",
    "FineTuning",
    "IBAU",
    "NAD",
    "NCReport",
    "NeuralCleanse",
    "Repairer",
    "RetrainResult",
    "STRIP",
    "ScaleUp",
    "SpectralSignatures",
    "anomaly_index",
    "at_loss",
    "attention_map",
    "cluster_activations",
    "filter_then_retrain",
    "fine_tune",
    "fixed_point_hypergradient",
    "flagged_classes",
    "last_conv",
    "lga_loss",
    "robust_loss",
    "scaled_predictions",
    "spectral_filter",
    "spectral_scores",
    "superimpose",
]
