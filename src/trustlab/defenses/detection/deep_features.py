"""Deep-feature detector: the penultimate representation fed to a logistic regression (or a
random forest). Ma et al., Pattern Recognition 2020: adversarial examples on medical images have
deep features far from the clean ones, so this simple detector already reaches AUC > 0.98.

``model.features(x)`` is the penultimate layer of every trustlab classifier (also through
:class:`~trustlab.models.Normalized`); for another network pass ``layer=`` a layer name.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from trustlab.defenses.detection.base import FeatureDetector, extract
from trustlab.registry import DETECTORS

__all__ = ["DeepFeatureDetector", "extract"]


@DETECTORS.register(
    "deep-features",
    "deep features: the penultimate representation fed to a logistic regression",
    paper="Ma, Niu, Gu, Wang, Zhao, Bailey, Lu. Understanding adversarial attacks on deep "
    "learning based medical image analysis systems. Pattern Recognition 2020.",
    threat="detects adversarial inputs; fit on clean, noise-matched and adversarial examples",
)
class DeepFeatureDetector(FeatureDetector):
    """Deep-feature detector: ``model.features(x)`` (or a layer's output), flattened, then a
    standard scaler and a logistic regression (see the module).

    Ma, Niu, Gu, Wang, Zhao, Bailey & Lu, "Understanding adversarial attacks on deep learning
    based medical image analysis systems", Pattern Recognition 2020.

    Args:
        model: the classifier under attack (a trustlab classifier has ``features``).
        layer: a layer name to read instead of ``model.features`` (default ``None``).
        classifier: ``"lr"`` (default, the paper's) or ``"rf"``.
        seed: seeds the random forest (default 0).

    Shape:
        as :class:`~trustlab.defenses.detection.base.FeatureDetector`.

    Example::

        det = DeepFeatureDetector(model).fit(sets.clean, sets.adversarial, sets.noisy)
        p_adv = det.score(x)
    """

    name = "deep-features"

    def __init__(
        self, model: nn.Module, layer: str | None = None, classifier: str = "lr", seed: int = 0
    ) -> None:
        super().__init__(classifier, seed)
        self.model, self.layer = model, layer

    def features_of(self, x: torch.Tensor) -> np.ndarray:
        return extract(self.model, x, self.layer).cpu().double().numpy()

    def features(self, clean, noisy, adversarial):
        return tuple(self.features_of(t) for t in (clean, noisy, adversarial))
