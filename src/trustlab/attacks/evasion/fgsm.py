"""FGSM: Goodfellow, Shlens & Szegedy, "Explaining and Harnessing Adversarial Examples", ICLR 2015.

One step of size ``eps`` along the sign of the loss gradient (L-inf), or along the normalised
gradient (L2). Defaults: ``eps = 8/255``, L-inf, cross-entropy.
"""

from __future__ import annotations

import torch
from torch import nn

from trustlab.attacks.evasion.base import Attack, step_direction
from trustlab.attacks.evasion.losses import objective


class FGSM(Attack):
    def __init__(
        self,
        model: nn.Module,
        eps: float | str = 8 / 255,
        norm: str = "linf",
        loss: str = "ce",
        targeted: bool = False,
    ) -> None:
        super().__init__(model, eps, norm, targeted)
        self.loss = objective(loss)

    def perturb(
        self, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None
    ) -> torch.Tensor:
        _, g, _ = self.grad(x, y, self.loss, target)
        return (x + self.eps * step_direction(g, self.norm)).clamp(0, 1)
