"""FGSM: Goodfellow, Shlens & Szegedy, "Explaining and Harnessing Adversarial Examples", ICLR 2015.

One step of size ``eps`` along the sign of the loss gradient (L-inf), or along the normalised
gradient (L2). Defaults: ``eps = 8/255``, L-inf, cross-entropy.
"""

from __future__ import annotations

import torch
from torch import nn

from trustlab.attacks.evasion.base import Attack, step_direction
from trustlab.attacks.evasion.losses import objective
from trustlab.registry import EVASION


@EVASION.register(
    "fgsm",
    "FGSM: one signed-gradient step of size eps",
    paper="Goodfellow, Shlens, Szegedy. Explaining and Harnessing Adversarial Examples. ICLR 2015.",
    threat="white-box, untargeted or targeted, L-inf (or L2) ball",
)
class FGSM(Attack):
    """Fast Gradient Sign Method: ``x' = clip(x + eps * sign(grad_x loss(f(x), y)), 0, 1)``.

    Goodfellow, Shlens & Szegedy, "Explaining and Harnessing Adversarial Examples", ICLR 2015.
    With ``norm="l2"`` the step is ``eps`` along the L2-normalised gradient (not in the paper).

    Args:
        model: maps ``[0, 1]`` inputs to logits (normalisation inside the model).
        eps: radius of the step (default ``8/255``; a float or ``"8/255"``).
        norm: ``"linf"`` (default, the paper's) or ``"l2"``.
        loss: ``"ce"`` (default, the paper's), ``"cw"`` or ``"dlr"``
            (:mod:`~trustlab.attacks.evasion.losses`).
        targeted: if True, ``atk(x, y, target)`` steps toward ``target`` (default False).

    Shape:
        ``x``: ``(N, C, H, W)`` (or video ``(N, C, T, H, W)``) in ``[0, 1]``; ``y``: ``(N,)``
        int64; returns a tensor of ``x``'s shape, dtype and device, within ``eps`` of ``x``.

    Example::

        atk = FGSM(model, eps=8 / 255)
        x_adv = atk(x, y)
    """

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
