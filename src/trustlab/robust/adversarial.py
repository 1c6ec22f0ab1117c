"""Adversarial training losses, plugged into the trainer as ``compute_loss(model, x, y)``.

- :class:`PGDTraining`: Madry et al., "Towards Deep Learning Models Resistant to Adversarial
  Attacks", ICLR 2018: minimise the (optionally label-smoothed) cross-entropy on PGD examples.
  Defaults (their CIFAR-10 setting): L-inf, ``eps = 8/255``, ``alpha = 2/255``, 10 steps, random
  start.
- :class:`TRADES`: Zhang et al., "Theoretically Principled Trade-off between Robustness and
  Accuracy", ICML 2019: ``CE(f(x), y) + beta * KL(f(x) || f(x'))`` where ``x'`` maximises the KL
  inside the ball, found by 10 sign-gradient steps of size 0.007 from ``x + 0.001 N(0, I)``.
  Defaults (their CIFAR-10 code): ``beta = 6``, ``eps = 0.031``, step 0.007, 10 steps.

Label smoothing alone is the trainer's ``label_smoothing`` setting; with PGD training it smooths
the adversarial cross-entropy (the "PGD-AT + label smoothing" model of the MD paper).

The inner maximisation runs on the frozen model (eval mode: BatchNorm uses its running
statistics, no parameter gradients), as every trustlab attack does; the outer loss is computed in
the model's training mode. Some public implementations craft the examples in training mode; the
difference is documented here and in docs/evasion.md.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from trustlab.attacks.evasion.base import Ball, parse_eps, step_direction
from trustlab.attacks.evasion.pgd import PGD
from trustlab.errors import InputError
from trustlab.registry import ROBUST
from trustlab.utils.modules import frozen
from trustlab.utils.seed import generator


@ROBUST.register(
    "pgd",
    "PGD adversarial training: CE on PGD examples (optionally label-smoothed)",
    paper="Madry, Makelov, Schmidt, Tsipras, Vladu. Towards Deep Learning Models Resistant to "
    "Adversarial Attacks. ICLR 2018.",
    threat="training against white-box L-inf (or L2) evasion",
)
class PGDTraining:
    """``compute_loss`` for Madry PGD adversarial training; returns ``(loss, adv_logits)``.

    Madry, Makelov, Schmidt, Tsipras & Vladu, "Towards Deep Learning Models Resistant to
    Adversarial Attacks", ICLR 2018: minimise the cross-entropy on the PGD examples of each
    batch (crafted on the frozen model, see the module). Defaults are the paper's CIFAR-10
    setting.

    Args:
        eps: radius (default ``8/255``; a float or ``"8/255"``).
        alpha: PGD step (default ``2/255``).
        steps: PGD steps (default 10).
        norm: ``"linf"`` (default) or ``"l2"``.
        label_smoothing: smoothing of the adversarial cross-entropy, in ``[0, 1)`` (default 0;
            not in the paper: the MD paper's "PGD-AT + label smoothing" model).
        seed: with the call count, seeds each batch's random start (default 0).

    Shape:
        ``x``: ``(B, C, H, W)`` in ``[0, 1]``, ``y``: ``(B,)`` int64; returns a scalar loss and
        ``(B, K)`` logits of the adversarial examples.

    Example::

        loss_fn = PGDTraining(eps=8 / 255, alpha=2 / 255, steps=10)
        Trainer(model, settings, compute_loss=loss_fn).fit(train)
    """

    def __init__(
        self,
        eps: float | str = 8 / 255,
        alpha: float | str = 2 / 255,
        steps: int = 10,
        norm: str = "linf",
        label_smoothing: float = 0.0,
        seed: int = 0,
    ) -> None:
        if not 0 <= label_smoothing < 1:
            raise InputError(f"label_smoothing must be in [0, 1), got {label_smoothing}.")
        self.eps, self.alpha = parse_eps(eps, norm), parse_eps(alpha)
        self.steps, self.norm = steps, norm
        self.label_smoothing = label_smoothing
        self.seed = seed
        self.calls = 0

    def attack(self, model: nn.Module) -> PGD:
        """The PGD of the current batch: a fresh random start per batch, reproducible from
        ``(seed, call count)``."""
        return PGD(
            model, self.eps, self.alpha, self.steps, self.norm,
            seed=self.seed * 1_000_003 + self.calls,
        )  # fmt: skip

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor):
        self.calls += 1
        adv = self.attack(model)(x, y)
        logits = model(adv)
        return F.cross_entropy(logits, y, label_smoothing=self.label_smoothing), logits


@ROBUST.register(
    "trades",
    "TRADES: CE plus beta times the KL between clean and adversarial predictions",
    paper="Zhang, Yu, Jiao, Xing, El Ghaoui, Jordan. Theoretically Principled Trade-off between "
    "Robustness and Accuracy. ICML 2019.",
    threat="training against white-box L-inf evasion",
)
class TRADES:
    """``compute_loss`` for TRADES; returns ``(loss, clean_logits)``.

    Zhang, Yu, Jiao, Xing, El Ghaoui & Jordan, "Theoretically Principled Trade-off between
    Robustness and Accuracy", ICML 2019: ``CE(f(x), y) + beta * KL(f(x) || f(x'))`` with ``x'``
    maximising the KL inside the L-inf ball (see the module). Defaults are the authors' CIFAR-10
    code.

    Args:
        beta: weight of the robust term (default 6.0).
        eps: L-inf radius (default 0.031).
        alpha: step of the inner maximisation (default 0.007).
        steps: inner steps (default 10).
        seed: with the call count, seeds each batch's starting noise (default 0).

    Shape:
        ``x``: ``(B, C, H, W)`` in ``[0, 1]``, ``y``: ``(B,)`` int64; returns a scalar loss and
        ``(B, K)`` clean logits.

    Example::

        loss_fn = TRADES(beta=6.0)
        Trainer(model, settings, compute_loss=loss_fn).fit(train)
    """

    def __init__(
        self,
        beta: float = 6.0,
        eps: float | str = 0.031,
        alpha: float | str = 0.007,
        steps: int = 10,
        seed: int = 0,
    ) -> None:
        if beta < 0:
            raise InputError(f"TRADES beta must be >= 0, got {beta}.")
        self.beta, self.eps, self.alpha = beta, parse_eps(eps, "linf"), parse_eps(alpha)
        self.steps = steps
        self.seed = seed
        self.calls = 0

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor):
        self.calls += 1
        g = generator(self.seed * 1_000_003 + self.calls)
        with frozen(model), torch.enable_grad():
            p_clean = F.softmax(model(x), 1).detach()
            noise = 0.001 * torch.randn(x.shape, generator=g, dtype=x.dtype).to(x.device)
            ball = Ball(x, self.eps, "linf")
            adv = (x + noise).clamp(0, 1)
            for _ in range(self.steps):
                adv = adv.detach().requires_grad_(True)
                kl = F.kl_div(F.log_softmax(model(adv), 1), p_clean, reduction="sum")
                (grad,) = torch.autograd.grad(kl, adv)
                adv = ball(adv.detach() + self.alpha * step_direction(grad, "linf"))
        logits = model(x)
        robust = F.kl_div(
            F.log_softmax(model(adv.detach()), 1), F.softmax(logits, 1), reduction="batchmean"
        )
        return F.cross_entropy(logits, y) + self.beta * robust, logits
