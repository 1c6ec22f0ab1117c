"""An example submission to ``robustness-quick``: a small CNN for digits (1x16x16 in [0, 1],
10 logits) and a short training run that saves its weights as safetensors.

Make the weights, then submit them with their class (from the repository root)::

    python examples/submissions/digits_net.py digits_net.safetensors
    trustlab submit --model digits_net.safetensors \
        --arch examples/submissions/digits_net.py:DigitsNet --benchmark robustness-quick

The benchmark loads the class with no arguments and the weights strictly (only safetensors:
a pickle or ``torch.save`` file is refused).
"""

from __future__ import annotations

import sys

import torch
import torch.nn.functional as F
from torch import nn


class DigitsNet(nn.Module):
    """Two convolutions and a linear layer; inputs in [0, 1].

    Example::

        logits = DigitsNet()(torch.rand(8, 1, 16, 16))  # (8, 10)
    """

    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.fc = nn.Linear(32 * 4 * 4, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return self.fc(x.flatten(1))


def train(epochs: int = 10, seed: int = 0) -> DigitsNet:
    """DigitsNet trained on trustlab's digits training split."""
    from torch.utils.data import DataLoader

    from trustlab.data import load_dataset

    torch.manual_seed(seed)
    data = load_dataset("digits", "train")
    model = DigitsNet()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for _ in range(epochs):
        for x, y in DataLoader(data, batch_size=64, shuffle=True):
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()
    return model.eval()


if __name__ == "__main__":
    from safetensors.torch import save_file

    out = sys.argv[1] if len(sys.argv) > 1 else "digits_net.safetensors"
    save_file(train().state_dict(), out)
    print(out)
