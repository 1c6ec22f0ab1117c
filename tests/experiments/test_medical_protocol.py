"""The medical reproduction's quick preset trains its models to convergence (20 epochs, not 5)
and its detectors are scored on a split by source input."""

from __future__ import annotations

import numpy as np

from trustlab.experiments.medical import MedicalReproduction
from trustlab.train import TrainSettings


def test_quick_preset_trains_long_enough() -> None:
    quick = MedicalReproduction.presets["quick"]
    settings = TrainSettings(**quick.train)
    # 5 epochs left the fundus2 ResNet-8 at train loss 0.052 (LID AUC 0.77); its test loss is
    # flat from epoch 14 and 20 epochs end at train loss 0.010 (LID AUC 0.90), see the docs
    assert settings.epochs >= 20
    assert "20 epochs" in quick.description and "per epoch" in quick.description


def test_medical_scores_detectors_on_a_source_split() -> None:
    """``summarize`` leaves ``evaluate_detector`` at its default split, which is by source."""
    import inspect

    from trustlab.defenses.detection import evaluate_detector
    from trustlab.defenses.detection.base import split_rows

    assert inspect.signature(evaluate_detector).parameters["split"].default == "source"
    src = inspect.getsource(MedicalReproduction.summarize)
    assert "split=" not in src
    train, test = split_rows(np.arange(50), 0.2, np.random.default_rng(0))
    assert not set(train % 50) & set(test % 50)
