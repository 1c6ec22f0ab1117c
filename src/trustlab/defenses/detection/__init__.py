"""Adversarial-example detectors behind one protocol (``fit``, ``score``) and the evaluation
protocol of the medical-imaging study (see :mod:`trustlab.defenses.detection.base`)."""

from trustlab.defenses.detection.base import (
    DetectionReport,
    DetectionSet,
    FeatureDetector,
    InputDetector,
    build_detection_set,
    evaluate_detector,
    noise_like,
)
from trustlab.defenses.detection.deep_features import DeepFeatureDetector
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
    "noise_like",
]
