"""Adversarial-example detectors behind one protocol (``fit``, ``score``) and the evaluation
protocol of the medical-imaging study (see :mod:`trustlab.defenses.detection.base`).

Every detector registers itself in :data:`trustlab.registry.DETECTORS` where its class is
defined; :func:`make_detector` builds one by name.
"""

# isort: off
# the catalogue lists the detectors in the order their modules are first imported here
from trustlab.defenses.detection import lid, kd_bu, deep_features  # noqa: F401

# isort: on
from trustlab.defenses.detection.base import (
    DetectionReport,
    DetectionSet,
    FeatureDetector,
    InputDetector,
    build_detection_set,
    evaluate_detector,
    extract,
    noise_like,
)
from trustlab.defenses.detection.deep_features import DeepFeatureDetector
from trustlab.defenses.detection.factory import make_detector
from trustlab.defenses.detection.kd_bu import KDBUDetector
from trustlab.defenses.detection.lid import LIDDetector

__all__ = [
    "DeepFeatureDetector",
    "DetectionReport",
    "DetectionSet",
    "FeatureDetector",
    "InputDetector",
    "KDBUDetector",
    "LIDDetector",
    "build_detection_set",
    "evaluate_detector",
    "extract",
    "make_detector",
    "noise_like",
]
