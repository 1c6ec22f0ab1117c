"""MD and MDMT: Ma, Jiang, Huang, Wang, Erfani, Bailey & Li, "Imbalanced Gradients: A Subtle
Cause of Overestimated Adversarial Robustness" (arXiv:2006.13726).

The margin loss ``z_max - z_y`` (``z_max`` the largest other logit) is decomposed into its two
terms. Each run of ``steps`` sign-gradient steps has two stages: step 0 maximises ``z_y`` (a step
*away* from the boundary that diversifies the start); stage 1 (steps ``1 .. switch-1``) attacks one
term alone -- run ``r`` even maximises ``-z_y``, run ``r`` odd maximises ``z_max``; stage 2 (steps
``switch .. steps-1``) maximises the full margin ``z_max - z_y``. The step size follows a cosine
schedule from ``2 * eps`` toward 0 over each stage (restarted at stage 2), see
:func:`cosine_step`. Every iterate is checked and, per sample, the first misclassifying one is
kept (any run, any step); samples never fooled get the last iterate of the last run.

MDMT runs, for every target ``t`` among the ``n_target_classes`` largest other clean logits, the
two runs of MD with ``z_max`` replaced by ``z_t``: stage 1 maximises ``-z_y`` in the first run and
``z_t`` in the second, stage 2 maximises ``z_t - z_y`` in both; so every target gets both stage-1
terms, as the reference ``MDMTAttack`` does (HanxunH/MDAttack ``attacks/MD.py``: ``for r in
range(2)`` inside the loop over targets), ``2 * n_target_classes`` runs in all. The first success
is kept. Where trustlab departs from that code: the reference ranks all ``K`` classes by their
clean logit, the true class included (a run on ``t = y`` has a zero objective), and goes from the
second-lowest up to the highest, then the lowest; trustlab takes the ``K - 1`` other classes (the
same targets for ``K = 10``, without the empty one) from the highest down, which changes only
which success is kept, not whether. :func:`imbalance_ratio` is the paper's imbalanced-gradient
diagnostic.

Defaults (the paper's CIFAR-10 setting): ``eps = 8/255``, L-inf, ``steps = 50``, ``switch = 20``,
``restarts = 2`` (MD), ``n_target_classes = 9`` (MDMT), uniform random start per run. L2 (not in
the paper) takes normalised-gradient steps with the same schedule.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from trustlab.attacks.evasion.base import (
    Attack,
    Ball,
    check_inputs,
    random_start,
    step_direction,
)
from trustlab.attacks.evasion.losses import wrong_classes
from trustlab.errors import InputError
from trustlab.registry import EVASION
from trustlab.utils.modules import frozen

_MA = (
    "Ma, Jiang, Huang, Wang, Erfani, Bailey, Li. Imbalanced Gradients: A Subtle Cause of "
    "Overestimated Adversarial Robustness. Machine Learning, 2023 (arXiv:2006.13726)."
)

STAGE_OBJECTIVES = ("z_y", "-z_y", "z_other", "margin")


def margin_terms(
    logits: torch.Tensor, y: torch.Tensor, other: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(z_y, z_max)`` per sample: the true-class logit and the largest other logit.

    With ``other`` (class indices, ``(N,)``) the second term is ``z_other`` instead (MDMT).
    """
    z_y = logits.gather(1, y[:, None]).squeeze(1)
    if other is not None:
        return z_y, logits.gather(1, other[:, None]).squeeze(1)
    z_max = logits.scatter(1, y[:, None], float("-inf")).amax(1)
    return z_y, z_max


def cosine_step(k: int, n: int, eps: float) -> float:
    """Step size at step ``k`` of a stage of ``n`` steps: ``eps * (1 + cos(pi * k / n))``.

    Starts at ``2 * eps`` (``k = 0``) and decreases toward 0 (reached at ``k = n``).
    """
    return eps * (1.0 + math.cos(math.pi * k / max(n, 1)))


def stage_objective(step: int, switch: int, run: int) -> str:
    """Which objective step ``step`` maximises: ``"z_y"`` (step 0), ``"-z_y"`` or ``"z_other"``
    (stage 1, run even / odd), ``"margin"`` (stage 2, steps >= ``switch``)."""
    if step >= switch:
        return "margin"
    if step == 0:
        return "z_y"
    return "-z_y" if run % 2 == 0 else "z_other"


def stage_step(step: int, steps: int, switch: int, eps: float) -> float:
    """The cosine step size of ``step``: restarted at ``switch`` (stage 2)."""
    if step < switch:
        return cosine_step(step, switch, eps)
    return cosine_step(step - switch, steps - switch, eps)


def _objective(name: str, z_y: torch.Tensor, z_o: torch.Tensor) -> torch.Tensor:
    if name == "z_y":
        return z_y
    if name == "-z_y":
        return -z_y
    if name == "z_other":
        return z_o
    return z_o - z_y


@EVASION.register(
    "md",
    "MD: margin decomposition attack (two-stage, imbalanced gradients)",
    paper=_MA,
    threat="white-box, untargeted, L-inf (or L2) ball",
)
class MD(Attack):
    """Margin Decomposition attack (untargeted); see the module docstring.

    Ma, Jiang, Huang, Wang, Erfani, Bailey & Li, "Imbalanced Gradients: A Subtle Cause of
    Overestimated Adversarial Robustness", arXiv:2006.13726. Defaults are the paper's CIFAR-10
    setting.

    Args:
        model: maps ``[0, 1]`` inputs to logits.
        eps: radius (default ``8/255``).
        steps: steps per run (default 50).
        switch: first step of stage 2 (default 20); ``1 <= switch <= steps``.
        restarts: runs, cycling the stage-1 term (default 2).
        norm: ``"linf"`` (the paper's) or ``"l2"``.
        seed: seeds the random starts.

    Shape:
        ``x``: ``(N, C, H, W)`` in ``[0, 1]``; ``y``: ``(N,)`` int64; returns a tensor of ``x``'s
        shape, dtype and device, inside the ``eps`` ball of ``x`` and ``[0, 1]``.

    Example::

        atk = MD(model, eps=8 / 255)
        x_adv = atk(x, y)
    """

    def __init__(
        self,
        model: nn.Module,
        eps: float | str = 8 / 255,
        steps: int = 50,
        switch: int = 20,
        restarts: int = 2,
        norm: str = "linf",
        seed: int = 0,
    ) -> None:
        super().__init__(model, eps, norm, targeted=False, seed=seed)
        if steps < 1 or restarts < 1:
            raise InputError(f"steps and restarts must be >= 1 (got {steps}, {restarts}).")
        if not 1 <= switch <= steps:
            raise InputError(
                f"switch must lie in 1..steps (got switch={switch}, steps={steps}); the paper "
                "uses switch=20 of 50 steps."
            )
        self.steps = steps
        self.switch = switch
        self.restarts = restarts

    def _run(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        other: torch.Tensor | None,
        run: int,
        gen: torch.Generator,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One two-stage run: ``(first misclassifying iterate else last iterate, fooled)``."""
        ball = Ball(x, self.eps, self.norm)
        adv = ball(x + random_start(x, self.eps, self.norm, gen))
        best = adv.clone()
        won = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
        for step in range(self.steps + 1):
            adv_in = adv.detach().requires_grad_(True)
            logits = self.logits(adv_in)
            fooled = logits.detach().argmax(1) != y
            new = fooled & ~won
            best[new] = adv[new]
            won |= fooled
            if step == self.steps:
                break
            name = stage_objective(step, self.switch, run)
            z_y, z_o = margin_terms(logits, y, other)
            (g,) = torch.autograd.grad(_objective(name, z_y, z_o).sum(), adv_in)
            alpha = stage_step(step, self.steps, self.switch, self.eps)
            adv = ball(adv + alpha * step_direction(g.detach(), self.norm))
        best[~won] = adv[~won]
        return best, won

    def _attack(
        self, x: torch.Tensor, y: torch.Tensor, others: list[torch.Tensor | None]
    ) -> torch.Tensor:
        """Runs ``run = 0, 1, ...`` with second terms ``others[run]``, each on the samples not
        fooled yet; the first success per sample is kept, else the last run's last iterate."""
        gen = self.generator()
        out = x.clone()
        done = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
        for run, other in enumerate(others):
            idx = (~done).nonzero().squeeze(1)
            if idx.numel() == 0:
                break
            sub_other = None if other is None else other[idx]
            adv, won = self._run(x[idx], y[idx], sub_other, run, gen)
            out[idx] = adv
            done[idx[won]] = True
        return out

    def perturb(
        self, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None
    ) -> torch.Tensor:
        return self._attack(x, y, [None] * self.restarts)


@EVASION.register(
    "mdmt",
    "MDMT: multi-targeted margin decomposition attack (top-9 wrong classes)",
    paper=_MA,
    threat="white-box, untargeted at the interface (targeted runs), L-inf (or L2) ball",
)
class MDMT(MD):
    """Multi-targeted Margin Decomposition: for each target among the ``n_target_classes``
    (default 9, capped at K-1) largest other clean logits, two two-stage runs whose second margin
    term is ``z_t``, one per stage-1 term (``-z_y``, then ``z_t``), as the reference
    ``MDMTAttack``; called untargeted, ``MDMT(model)(x, y)``. Other arguments as :class:`MD`.

    Ma et al., "Imbalanced Gradients", arXiv:2006.13726 (the paper's MD-MT); reference code
    HanxunH/MDAttack ``attacks/MD.py`` (see the module for the target order).

    Args:
        model, eps, steps, switch, norm, seed: as :class:`MD` (defaults ``8/255``, 50, 20,
            ``"linf"``, 0).
        n_target_classes: targets tried (default 9).

    Shape:
        as :class:`MD`.

    Example::

        atk = MDMT(model, eps=8 / 255)
        x_adv = atk(x, y)
    """

    def __init__(
        self,
        model: nn.Module,
        eps: float | str = 8 / 255,
        steps: int = 50,
        switch: int = 20,
        n_target_classes: int = 9,
        norm: str = "linf",
        seed: int = 0,
    ) -> None:
        super().__init__(model, eps, steps, switch, restarts=1, norm=norm, seed=seed)
        if n_target_classes < 1:
            raise InputError(f"n_target_classes must be >= 1, got {n_target_classes}.")
        self.n_target_classes = n_target_classes

    def perturb(
        self, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None
    ) -> torch.Tensor:
        with torch.no_grad():
            logits = self.logits(x)
        k = logits.shape[1]
        if k < 2:
            raise InputError(f"MDMT needs a model with at least 2 classes, it has {k}.")
        order = wrong_classes(logits, y)
        n = min(self.n_target_classes, k - 1)
        # runs 2i (stage 1: -z_y) and 2i+1 (stage 1: z_t) both target order[:, i]
        return self._attack(x, y, [order[:, i] for i in range(n) for _ in range(2)])


def imbalance_ratio(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, symmetric: bool = True
) -> torch.Tensor:
    """Imbalanced-gradient diagnostic (Ma et al., section 3): per input the ratio of the L2 norms
    ``r = ||grad_x z_y|| / ||grad_x z_max||`` at the clean input (model frozen: eval mode, no
    parameter gradients, both restored). With ``symmetric=True`` (default) returns
    ``max(r, 1/r) >= 1`` so that dominance of either term shows as a large value; with
    ``symmetric=False`` the raw ``r``. Norms are clamped at ``1e-12`` (a zero gradient gives a huge
    value rather than a NaN). Returns ``(N,)`` on ``x``'s device.
    """
    check_inputs(x, y)
    with frozen(model), torch.enable_grad():
        xg = x.detach().requires_grad_(True)
        z_y, z_max = margin_terms(model(xg), y.to(x.device))
        (g_y,) = torch.autograd.grad(z_y.sum(), xg, retain_graph=True)
        (g_m,) = torch.autograd.grad(z_max.sum(), xg)
    n_y = g_y.flatten(1).norm(dim=1).clamp_min(1e-12)
    n_m = g_m.flatten(1).norm(dim=1).clamp_min(1e-12)
    r = (n_y / n_m).detach()
    return torch.maximum(r, 1 / r) if symmetric else r
