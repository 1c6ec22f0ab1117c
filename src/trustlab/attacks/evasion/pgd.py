"""PGD: Madry, Makelov, Schmidt, Tsipras & Vladu, "Towards Deep Learning Models Resistant to
Adversarial Attacks", ICLR 2018.

``steps`` projected steps of size ``alpha`` (sign of the gradient for L-inf, the normalised
gradient for L2) from a uniform random start in the ``eps`` ball, maximising the loss (``ce``,
``cw`` margin or ``dlr``); ``restarts`` independent runs, keeping per sample the first successful
adversarial example, else the one of highest loss (with one run, its last iterate). Targeted
mode maximises the loss toward the target class. Defaults (the paper's CIFAR-10 setting):
``eps = 8/255``, ``alpha = eps / 4`` (the paper's 2/255 at 8/255; the step scales with the
radius, so 20 steps cross a ball of any size, e.g. 0.075 at MNIST's eps 0.3), ``steps = 10``,
L-inf, CE, random start, 1 restart; ``alpha="eps/K"`` takes ``eps / K`` and ``alpha=None`` the
iterative-FGSM step ``eps / steps``.

The same loop runs the transfer attacks (:mod:`trustlab.attacks.evasion.transfer`): ``momentum``
``mu > 0`` accumulates ``g <- mu g + grad / ||grad||_1`` and steps along ``g`` (MI-FGSM, Dong et
al. 2018); ``diversity p > 0`` computes each gradient on DI's randomly resized and padded input
(:mod:`~trustlab.attacks.evasion.diversity`); the Skip Gradient Method is a context around it
(:mod:`~trustlab.attacks.evasion.sgm`).
"""

from __future__ import annotations

import torch
from torch import nn

from trustlab.attacks.evasion.base import (
    Attack,
    Ball,
    _view,
    parse_eps,
    random_start,
    step_direction,
)
from trustlab.attacks.evasion.diversity import check_diversity, input_diversity
from trustlab.attacks.evasion.losses import objective
from trustlab.errors import InputError
from trustlab.registry import EVASION


def step_size(alpha: float | str | None, eps: float, steps: int) -> float:
    """The step of a PGD-family attack: ``alpha`` as a number (``0.01``, ``"2/255"``),
    ``"eps/K"`` -> ``eps / K``, ``None`` -> ``eps / steps`` (iterative FGSM)."""
    if alpha is None:
        return eps / steps
    if isinstance(alpha, str) and alpha.replace(" ", "").lower().startswith("eps/"):
        k = parse_eps(alpha.replace(" ", "")[4:])
        if k <= 0:
            raise InputError(f"alpha {alpha!r}: the divisor must be > 0, e.g. eps/4.")
        return eps / k
    return parse_eps(alpha)


_MADRY = (
    "Madry, Makelov, Schmidt, Tsipras, Vladu. Towards Deep Learning Models Resistant to "
    "Adversarial Attacks. ICLR 2018."
)


# decorators apply bottom-up: "pgd" registers first
@EVASION.register(
    "pgd-cw",
    "PGD-20 with the Carlini-Wagner margin loss",
    paper=_MADRY + " Loss: Carlini, Wagner. Towards Evaluating the Robustness of Neural "
    "Networks. IEEE S&P 2017.",
    threat="white-box, untargeted or targeted, L-inf or L2 ball",
    defaults={"steps": 20, "loss": "cw"},
)
@EVASION.register(
    "pgd",
    "PGD-20 with cross-entropy (projected gradient descent, random start)",
    paper=_MADRY,
    threat="white-box, untargeted or targeted, L-inf or L2 ball",
    defaults={"steps": 20, "loss": "ce"},
    transfer=True,
)
class PGD(Attack):
    """Projected gradient descent from a random start, with restarts (see the module).

    Madry, Makelov, Schmidt, Tsipras & Vladu, "Towards Deep Learning Models Resistant to
    Adversarial Attacks", ICLR 2018. The class defaults are the paper's CIFAR-10 setting; the
    registered names ``pgd`` and ``pgd-cw`` run 20 steps (the MD paper's PGD-20 baseline) with
    CE or the C&W margin.

    Args:
        model: maps ``[0, 1]`` inputs to logits (normalisation inside the model).
        eps: radius (default ``8/255``; a float or ``"8/255"``).
        alpha: step size: a number, ``"eps/K"`` for ``eps / K`` (default ``"eps/4"``: the
            paper's 2/255 at eps 8/255, scaled with the radius), or ``None`` for
            ``eps / steps``.
        steps: iterations per restart (default 10).
        norm: ``"linf"`` (default) or ``"l2"``.
        loss: ``"ce"`` (default), ``"cw"`` or ``"dlr"``.
        restarts: independent runs; per sample the first success is kept (default 1).
        random_start: start at a uniform point of the ball (default True).
        targeted: if True, ``atk(x, y, target)`` pushes toward ``target`` (default False).
        seed: seeds the random starts (and DI's draws) (default 0).
        momentum: MI-FGSM's decay ``mu`` (default 0: none).
        diversity: DI's transform probability (default 0: none).
        resize_rate: DI's smallest relative side (default 0.9).

    Shape:
        ``x``: ``(N, C, H, W)`` (or video) in ``[0, 1]``; ``y``: ``(N,)`` int64; returns a tensor
        of ``x``'s shape, dtype and device, inside the ``eps`` ball of ``x`` and ``[0, 1]``.

    Example::

        atk = PGD(model, eps=8 / 255, alpha=2 / 255, steps=10)
        x_adv = atk(x, y)
    """

    def __init__(
        self,
        model: nn.Module,
        eps: float | str = 8 / 255,
        alpha: float | str | None = "eps/4",
        steps: int = 10,
        norm: str = "linf",
        loss: str = "ce",
        restarts: int = 1,
        random_start: bool = True,
        targeted: bool = False,
        seed: int = 0,
        momentum: float = 0.0,
        diversity: float = 0.0,
        resize_rate: float = 0.9,
    ) -> None:
        super().__init__(model, eps, norm, targeted, seed)
        if steps < 1 or restarts < 1:
            raise InputError(f"steps and restarts must be >= 1 (got {steps}, {restarts}).")
        if not momentum >= 0:
            raise InputError(f"momentum must be >= 0, got {momentum}; MI-FGSM uses 1.0.")
        check_diversity(diversity, resize_rate)
        self.momentum = float(momentum)
        self.diversity = float(diversity)
        self.resize_rate = float(resize_rate)
        self.alpha = step_size(alpha, self.eps, steps)
        self.steps = steps
        self.restarts = restarts
        self.random_start = random_start
        self.loss_name = loss
        self.loss = objective(loss)

    def perturb(
        self, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None
    ) -> torch.Tensor:
        gen = self.generator()
        ball = Ball(x, self.eps, self.norm)
        best = x.clone()
        best_obj = torch.full((x.shape[0],), float("-inf"), device=x.device)
        done = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
        transform = None
        if self.diversity > 0:

            def transform(t: torch.Tensor) -> torch.Tensor:
                return input_diversity(t, gen, self.diversity, self.resize_rate)

        for _ in range(self.restarts):
            adv = (
                ball(x + random_start(x, self.eps, self.norm, gen))
                if self.random_start
                else x.clone()
            )
            velocity = torch.zeros_like(x)
            for _ in range(self.steps):
                _, g, _ = self.grad(adv, y, self.loss, target, transform)
                if self.momentum > 0:
                    l1 = g.abs().flatten(1).sum(1).clamp_min(1e-12)
                    velocity = self.momentum * velocity + g / _view(l1, g)
                    g = velocity
                adv = ball(adv + self.alpha * step_direction(g, self.norm))
            if self.restarts == 1:
                return adv  # one run: its last iterate, as in the paper (no scoring pass)
            with torch.no_grad():
                logits = self.logits(adv)
                obj = self.loss(logits, y, target)
                won = self.succeeded(logits, y, target)
            # keep the first success; among failures the highest objective
            take = (~done) & (won | (obj > best_obj))
            best[take] = adv[take]
            best_obj = torch.where(take, obj, best_obj)
            done |= won
            if bool(done.all()):
                break
        return best
