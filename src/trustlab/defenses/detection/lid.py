"""LID detector: Ma et al., "Characterizing Adversarial Subspaces Using Local Intrinsic
Dimensionality", ICLR 2018.

Features: for every layer in ``layers``, the LID (maximum likelihood, ``k = 20``) of a point's
activation against the activations of its clean minibatch (``batch_size = 100``; a clean point
excludes itself), computed with the one estimator :mod:`trustlab.metrics.lid`. Default layers:
the stem and stages of trustlab's ResNets (the last ReLU of each stage for VGGs), the
penultimate features and the logits (the paper uses the output of every layer). At
:meth:`~trustlab.defenses.detection.base.FeatureDetector.score` time a new input is compared with
a clean minibatch kept from ``fit``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from trustlab.defenses.detection.base import FeatureDetector
from trustlab.errors import InputError
from trustlab.metrics.lid import EXCLUSIONS, lid, lid_in_batches
from trustlab.models.wrappers import feature_taps, stage_layers
from trustlab.registry import DETECTORS
from trustlab.utils.modules import device_of, frozen


@DETECTORS.register(
    "lid",
    "LID: local intrinsic dimensionality of each layer's activations",
    paper="Ma, Li, Wang, Erfani, Wijewickrema, Schoenebeck, Song, Houle, Bailey. "
    "Characterizing Adversarial Subspaces Using Local Intrinsic Dimensionality. ICLR 2018.",
    threat="detects adversarial inputs; fit on clean, noise-matched and adversarial examples",
)
class LIDDetector(FeatureDetector):
    """LID detector: per layer, the maximum-likelihood LID of a point's activation against its
    clean minibatch, then a standard scaler and a logistic regression (see the module).

    Ma et al., "Characterizing Adversarial Subspaces Using Local Intrinsic Dimensionality",
    ICLR 2018. The paper uses every layer's output; trustlab's default is the stages, the
    penultimate features and the logits.

    Args:
        model: the classifier under attack.
        layers: layer names (default ``None``: :func:`trustlab.models.wrappers.stage_layers`).
        k: nearest neighbours of the estimate (default 20, the paper's).
        batch_size: the clean minibatch a point is compared with (default 100, the paper's).
        classifier: ``"lr"`` (default, the paper's) or ``"rf"``.
        seed: seeds the random forest (default 0).
        exclude: how a noisy or adversarial copy keeps its own clean original out of its
            neighbours: ``"position"`` (default: that point, by its position in the aligned
            minibatch) or ``"nearest"`` (the authors' code: drop every query's nearest clean
            point, which in deep layers is often another image); see
            :func:`~trustlab.metrics.lid.lid_in_batches`.

    Shape:
        as :class:`~trustlab.defenses.detection.base.FeatureDetector`.

    Example::

        det = LIDDetector(model).fit(sets.clean, sets.adversarial, sets.noisy)
        p_adv = det.score(x)
    """

    name = "lid"

    def __init__(
        self,
        model: nn.Module,
        layers: Sequence[str] | None = None,
        k: int = 20,
        batch_size: int = 100,
        classifier: str = "lr",
        seed: int = 0,
        exclude: str = "position",
    ) -> None:
        super().__init__(classifier, seed)
        if exclude not in EXCLUSIONS:
            raise InputError(
                f"unknown exclusion rule {exclude!r}; use one of {', '.join(EXCLUSIONS)}."
            )
        self.exclude = exclude
        self.model = model
        self.layers = list(layers) if layers is not None else stage_layers(model)
        self.k, self.batch_size = k, batch_size
        self.reference: list[torch.Tensor] | None = None  # clean activations kept by fit

    def activations(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Per layer ``(N, D)`` activations, then the penultimate features (when the model has
        ``features``) and the logits."""
        penultimate = hasattr(self.model, "features")
        acts: list[list[torch.Tensor]] = [
            [] for _ in range(len(self.layers) + 1 + int(penultimate))
        ]
        dev = device_of(self.model)
        with frozen(self.model), torch.no_grad():
            for b in x.split(256):
                b = b.to(dev)
                with feature_taps(self.model, self.layers) as taps:
                    logits = self.model(b)
                for i, name in enumerate(self.layers):
                    acts[i].append(taps[name].flatten(1))
                if penultimate:
                    acts[-2].append(self.model.features(b).flatten(1))
                acts[-1].append(logits)
        return [torch.cat(a) for a in acts]

    def features(self, clean, noisy, adversarial):
        ac, an, aa = (self.activations(t) for t in (clean, noisy, adversarial))
        out = ([], [], [])
        for c, n, a in zip(ac, an, aa, strict=True):
            for i, q in enumerate((c, n, a)):
                out[i].append(lid_in_batches(q, c, self.batch_size, self.k, exclude=self.exclude))
        return tuple(torch.stack(o, 1).double().cpu().numpy() for o in out)

    def fit(self, clean, adversarial, noisy=None):
        self.reference = self.activations(clean[: self.batch_size].detach())
        return super().fit(clean, adversarial, noisy)

    def features_of(self, x: torch.Tensor) -> np.ndarray:
        if self.reference is None:
            raise InputError("the lid detector is not fitted: call fit() first.")
        acts = self.activations(x)
        k = min(self.k, self.reference[0].shape[0])
        cols = [lid(a, r, k, exclude_self=False) for a, r in zip(acts, self.reference, strict=True)]
        return torch.stack(cols, 1).double().cpu().numpy()
