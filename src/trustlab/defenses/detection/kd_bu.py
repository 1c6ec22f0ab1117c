"""Kernel density (KD) and Bayesian uncertainty (BU) detector: Feinman, Curtin, Shintre &
Gardner, "Detecting Adversarial Samples from Artifacts", 2017.

- KD: the Gaussian kernel density of an input's last-hidden-layer features among the training
  points of its *predicted* class: ``log mean_j exp(-||f(x) - f(t_j)||^2 / (2 h^2))``.
- BU: the model's uncertainty under MC dropout, ``T = 50`` stochastic passes: the mean over
  classes of the variance of the softmax outputs.

Features ``[KD, BU]`` go to the logistic regression of the protocol. Where trustlab departs from
the paper: the bandwidth ``h`` defaults to the median distance between training features (the
paper tunes one per dataset: 1.20 MNIST, 0.26 CIFAR-10, 1.00 SVHN, on its feature scale); and
MC dropout is applied to the penultimate features (``p = 0.5``) before the model's classifier,
so that BU works for every trustlab classifier, which mostly have no dropout layers.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from trustlab.defenses.detection.base import FeatureDetector, extract
from trustlab.errors import InputError
from trustlab.metrics.lid import pairwise_distances
from trustlab.registry import DETECTORS
from trustlab.utils.modules import device_of, frozen
from trustlab.utils.seed import generator


@DETECTORS.register(
    "kd-bu",
    "KD+BU: kernel density of the features and Bayesian (MC-dropout) uncertainty",
    paper="Feinman, Curtin, Shintre, Gardner. Detecting Adversarial Samples from Artifacts. "
    "arXiv:1703.00410, 2017.",
    threat="detects adversarial inputs; densities fit on the training split",
    inputs=("model", "train_x", "train_y"),
    needs_train=True,
)
class KDBUDetector(FeatureDetector):
    """Kernel density + Bayesian uncertainty detector: features ``[KD, BU]`` per input, then a
    standard scaler and a logistic regression (see the module).

    Feinman, Curtin, Shintre & Gardner, "Detecting Adversarial Samples from Artifacts", 2017.
    Where trustlab differs: the bandwidth defaults to the median training-feature distance (the
    paper tunes one per dataset) and MC dropout acts on the penultimate features.

    Args:
        model: a trustlab classifier (``features(x)`` and ``.classifier``).
        train_x: ``(N, C, H, W)`` training inputs (the densities' points).
        train_y: ``(N,)`` their labels.
        bandwidth: the Gaussian kernel's ``h`` (default ``None``: the median distance).
        mc_samples: MC-dropout passes ``T`` (default 50, the paper's).
        dropout: dropout probability on the features (default 0.5).
        max_train: at most this many training points, drawn at random (default 5000).
        classifier: ``"lr"`` (default, the paper's) or ``"rf"``.
        seed: seeds the subsample, the dropout masks and the random forest (default 0).

    Shape:
        as :class:`~trustlab.defenses.detection.base.FeatureDetector`.

    Example::

        det = KDBUDetector(model, train.x, train.y).fit(sets.clean, sets.adversarial, sets.noisy)
        p_adv = det.score(x)
    """

    name = "kd-bu"

    def __init__(
        self,
        model: nn.Module,
        train_x: torch.Tensor,
        train_y: torch.Tensor,
        bandwidth: float | None = None,
        mc_samples: int = 50,
        dropout: float = 0.5,
        max_train: int = 5000,
        classifier: str = "lr",
        seed: int = 0,
    ) -> None:
        super().__init__(classifier, seed)
        if not hasattr(model, "features") or not hasattr(model, "classifier"):
            raise InputError("KD/BU needs a trustlab classifier (features(x) and .classifier).")
        if mc_samples < 2 or not 0 < dropout < 1:
            raise InputError(
                f"need mc_samples >= 2 and 0 < dropout < 1 (got {mc_samples}, {dropout})."
            )
        self.model, self.mc_samples, self.dropout = model, mc_samples, dropout
        g = generator(seed)
        keep = torch.randperm(len(train_x), generator=g)[:max_train]
        self.train_feats = extract(model, train_x[keep].to(device_of(model)))
        self.train_y = train_y[keep].to(self.train_feats.device)
        if bandwidth is None:
            sub = self.train_feats[:1000]
            d = pairwise_distances(sub, sub)
            bandwidth = float(d[~torch.eye(len(sub), dtype=torch.bool, device=d.device)].median())
        self.bandwidth = float(bandwidth)

    def kernel_density(self, feats: torch.Tensor, pred: torch.Tensor) -> torch.Tensor:
        """``(N,)`` log kernel density of each feature row among its predicted class."""
        d2 = pairwise_distances(feats, self.train_feats).square()
        logk = -d2 / (2 * self.bandwidth**2)
        same = self.train_y[None, :] == pred[:, None]
        same[~same.any(1)] = True  # a class with no training points: all points instead
        logk = logk.masked_fill(~same, float("-inf"))
        count = same.sum(1).clamp_min(1)
        return torch.logsumexp(logk, 1) - torch.log(count.to(logk.dtype))

    def bayesian_uncertainty(self, feats: torch.Tensor) -> torch.Tensor:
        """``(N,)`` mean over classes of the softmax variance over MC-dropout passes."""
        g = generator(self.seed + 1)
        probs = []
        with torch.no_grad():
            for _ in range(self.mc_samples):
                keep = (torch.rand(feats.shape, generator=g) >= self.dropout).to(feats.device)
                dropped = feats * keep / (1 - self.dropout)
                probs.append(F.softmax(self.model.classifier(dropped), 1))
        return torch.stack(probs).var(0).mean(1)

    def features_of(self, x: torch.Tensor) -> np.ndarray:
        feats = extract(self.model, x.to(device_of(self.model)))
        with frozen(self.model), torch.no_grad():
            pred = self.model.classifier(feats).argmax(1)
        kd = self.kernel_density(feats, pred)
        bu = self.bayesian_uncertainty(feats)
        return torch.stack([kd, bu], 1).double().cpu().numpy()

    def features(self, clean, noisy, adversarial):
        return tuple(self.features_of(t) for t in (clean, noisy, adversarial))


__all__ = ["KDBUDetector"]
