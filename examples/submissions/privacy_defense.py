"""An example submission to ``privacy-quick``: train the released model with label smoothing,
weight decay and few epochs (less overfitting, less membership leakage).

Submit it from the repository root with::

    trustlab submit --defense examples/submissions/privacy_defense.py:SmoothedTraining \
        --benchmark privacy-quick

A training defense has ``train(dataset, seed) -> nn.Module``: ``dataset`` is the private
training set (``dataset.x`` ``(N, 1, 16, 16)`` in [0, 1], ``dataset.y``, 10 classes), and the
returned model maps such inputs to 10 logits. (A post-hoc defense instead has
``defend(model, private_train, test)`` returning the released model.)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader


def small_cnn(classes: int = 10) -> nn.Module:
    """A two-layer CNN for 1x16x16 inputs."""
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32 * 4 * 4, classes),
    )  # fmt: skip


class SmoothedTraining:
    """Train with label smoothing and weight decay.

    Args:
        epochs: default 10.
        smoothing: the label-smoothing factor (default 0.2).

    Example::

        model = SmoothedTraining().train(private, seed=0)
    """

    def __init__(self, epochs: int = 10, smoothing: float = 0.2) -> None:
        self.epochs, self.smoothing = epochs, smoothing

    def train(self, dataset, seed: int) -> nn.Module:
        torch.manual_seed(seed)
        model = small_cnn()
        loader = DataLoader(dataset, batch_size=32, shuffle=True)
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-3)
        for _ in range(self.epochs):
            for x, y in loader:
                opt.zero_grad()
                F.cross_entropy(model(x), y, label_smoothing=self.smoothing).backward()
                opt.step()
        return model.eval()
