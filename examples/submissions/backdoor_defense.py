"""An example submission to ``backdoor-quick``: a repairer that fine-tunes the model on the
defender's clean data (a few epochs of plain SGD forget part of a backdoor).

Submit it from the repository root with::

    trustlab submit --defense examples/submissions/backdoor_defense.py:CleanFineTune \
        --benchmark backdoor-quick

A repairer has ``repair(model, clean_data) -> model``: ``model`` is a copy of the backdoored
classifier (inputs ``(N, C, H, W)`` in [0, 1], logits out) and ``clean_data`` a labelled clean
dataset (``clean_data.x``, ``clean_data.y``; any map-style dataset of ``(x, y)`` works with a
DataLoader). The constructor takes nothing, or the model.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader


class CleanFineTune:
    """Fine-tune the suspect model on clean data.

    Args:
        epochs: passes over the clean data (default 5).
        lr: SGD learning rate (default 0.02).

    Example::

        repaired = CleanFineTune().repair(model, clean)
    """

    def __init__(self, epochs: int = 5, lr: float = 0.02) -> None:
        self.epochs, self.lr = epochs, lr

    def repair(self, model: nn.Module, clean_data) -> nn.Module:
        torch.manual_seed(0)
        loader = DataLoader(clean_data, batch_size=32, shuffle=True)
        opt = torch.optim.SGD(model.parameters(), lr=self.lr, momentum=0.9)
        model.train()
        for _ in range(self.epochs):
            for x, y in loader:
                opt.zero_grad()
                F.cross_entropy(model(x), y).backward()
                opt.step()
        return model.eval()
