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

from trustlab.attacks.evasion.base import frozen
from trustlab.defenses.detection.base import FeatureDetector
from trustlab.errors import InputError
from trustlab.models.wrappers import feature_taps


def extract(
    model: nn.Module, x: torch.Tensor, layer: str | None = None, batch_size: int = 256
) -> torch.Tensor:
    """``(N, D)`` features of ``x``: ``model.features`` or the output of ``layer``, flattened."""
    if layer is None and not hasattr(model, "features"):
        raise InputError(
            f"{type(model).__name__} has no features(x); pass layer='...' (a layer name)."
        )
    out = []
    p = next(iter(model.parameters()), None)
    dev = p.device if p is not None else torch.device("cpu")
    with frozen(model), torch.no_grad():
        for b in x.split(batch_size):
            b = b.to(dev)
            if layer is None:
                out.append(model.features(b).flatten(1))
            else:
                with feature_taps(model, layer) as taps:
                    model(b)
                out.append(taps[layer].flatten(1))
    return torch.cat(out)


class DeepFeatureDetector(FeatureDetector):
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
