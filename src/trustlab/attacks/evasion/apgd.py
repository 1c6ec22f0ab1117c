"""APGD-CE and APGD-T: Croce & Hein, "Reliable evaluation of adversarial robustness with an
ensemble of diverse parameter-free attacks", ICML 2020 (AutoAttack, Algorithm 1).

Auto-PGD is PGD with momentum and a per-sample step size that needs no tuning. From a uniform
random start ``x_0`` in the ``eps`` ball, with ``P`` the projection onto the ball and ``[0, 1]``:
``z_{k+1} = P(x_k + eta_k * d_k)`` (``d = sign(grad)`` for L-inf, ``grad / ||grad||_2`` for L2)
and ``x_{k+1} = P(x_k + a (z_{k+1} - x_k) + (1 - a)(x_k - x_{k-1}))`` with ``a = 0.75`` (``a = 1``
for the first step). The step starts at ``eta_0 = 2 eps``; at the checkpoints ``w_j = ceil(p_j N)``
with ``p_0 = 0``, ``p_1 = 0.22``, ``p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)`` it is halved
for each sample where (1) the loss increased in fewer than ``rho (w_j - w_{j-1})`` of the steps
since the last checkpoint, or (2) neither the step size nor the best loss changed since then; a
halved sample restarts from its best point (with no momentum). Per sample the best-loss point and
the first misclassifying point are kept; the attack returns the latter where one was found.

- :class:`APGD` (APGD-CE with ``loss="ce"``, also ``"dlr"`` or ``"cw"``). Defaults:
  ``eps = 8/255``, L-inf, CE, ``steps = 100``, ``restarts = 1``, ``rho = 0.75``. Restarts run only
  on the points still robust.
- :class:`APGDT` (APGD-T): the targeted DLR loss toward each of the ``n_target_classes = 9``
  most likely wrong classes of the clean logits in turn (one run per target, on the points still
  robust), 100 steps each. It is untargeted at the interface: ``APGDT(model)(x, y)`` returns
  misclassified points where found, else the point with the largest CW margin.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from trustlab.attacks.evasion.base import Attack, Ball, _view, random_start, step_direction
from trustlab.attacks.evasion.losses import Objective, cw, dlr, objective, wrong_classes
from trustlab.errors import InputError
from trustlab.registry import EVASION

_CROCE = (
    "Croce, Hein. Reliable evaluation of adversarial robustness with an ensemble of diverse "
    "parameter-free attacks. ICML 2020."
)

MOMENTUM = 0.75


def apgd_checkpoints(steps: int) -> list[int]:
    """The checkpoints ``w_j = ceil(p_j * steps) <= steps`` of APGD, starting with ``w_0 = 0``.

    ``p_0 = 0``, ``p_1 = 0.22``, ``p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)`` (computed
    exactly in hundredths); e.g. ``steps=100 -> [0, 22, 41, 57, 70, 80, 87, 93, 99]``.
    Repeated values (tiny ``steps``) are dropped.
    """
    if steps < 1:
        raise InputError(f"APGD needs steps >= 1, got {steps}.")
    p_prev, p = 0, 22  # hundredths
    out = [0]
    while True:
        w = -(-p * steps // 100)  # exact ceil
        if w > steps:
            return out
        if w > out[-1]:
            out.append(w)
        p_prev, p = p, p + max(p - p_prev - 3, 6)


def halve_step(
    increases: torch.Tensor,
    interval: int,
    rho: float,
    step_unchanged: torch.Tensor,
    best_unchanged: torch.Tensor,
) -> torch.Tensor:
    """APGD's rule at a checkpoint: which samples halve their step (Croce & Hein 2020, eq. 3-4).

    Args:
        increases: per sample, how many of the ``interval`` steps since the last checkpoint
            increased the loss (``f(x_{i+1}) > f(x_i)``).
        interval: ``w_j - w_{j-1}``.
        rho: condition 1 fires when ``increases < rho * interval`` (default 0.75).
        step_unchanged: the step size was not halved at the last checkpoint.
        best_unchanged: the best loss did not improve since the last checkpoint.
    Returns:
        boolean mask: condition 1 OR (``step_unchanged`` AND ``best_unchanged``).
    """
    return (increases < rho * interval) | (step_unchanged & best_unchanged)


@EVASION.register(
    "apgd-ce",
    "APGD-CE: Auto-PGD with cross-entropy (AutoAttack)",
    paper=_CROCE,
    threat="white-box, untargeted, L-inf or L2 ball",
    defaults={"loss": "ce"},
)
class APGD(Attack):
    """Auto-PGD (untargeted): PGD with momentum and a per-sample step size halved at
    checkpoints; see the module docstring for the algorithm.

    Croce & Hein, "Reliable evaluation of adversarial robustness with an ensemble of diverse
    parameter-free attacks", ICML 2020. Defaults are AutoAttack's.

    Args:
        model: maps ``[0, 1]`` inputs to logits (normalisation inside the model).
        eps: radius (default ``8/255``; a float or ``"8/255"``).
        norm: ``"linf"`` (default) or ``"l2"``.
        loss: ``"ce"`` (default; APGD-CE), ``"dlr"`` or ``"cw"``.
        steps: iterations per restart (default 100).
        restarts: runs, each on the points still robust (default 1).
        rho: the checkpoint condition's fraction (default 0.75).
        seed: seeds the random starts (default 0).

    Shape:
        ``x``: ``(N, C, H, W)`` in ``[0, 1]``; ``y``: ``(N,)`` int64; returns a tensor of ``x``'s
        shape, dtype and device, inside the ``eps`` ball of ``x`` and ``[0, 1]``.

    Example::

        atk = APGD(model, eps=8 / 255, loss="ce")
        x_adv = atk(x, y)
    """

    def __init__(
        self,
        model: nn.Module,
        eps: float | str = 8 / 255,
        norm: str = "linf",
        loss: str = "ce",
        steps: int = 100,
        restarts: int = 1,
        rho: float = 0.75,
        seed: int = 0,
    ) -> None:
        super().__init__(model, eps, norm, targeted=False, seed=seed)
        if steps < 1 or restarts < 1:
            raise InputError(f"steps and restarts must be >= 1 (got {steps}, {restarts}).")
        if not 0 < rho <= 1:
            raise InputError(f"rho must be in (0, 1], got {rho}; AutoAttack uses 0.75.")
        self.steps = steps
        self.restarts = restarts
        self.rho = rho
        self.loss_name = loss
        self.loss = objective(loss)
        self.checkpoints = apgd_checkpoints(steps)

    def run(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        loss: Objective,
        target: torch.Tensor | None,
        gen: torch.Generator | None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One APGD run from a random start on a frozen model.

        Returns ``(points, won, best_loss)``: per sample the first misclassifying point where
        ``won``, else the best-loss point; ``best_loss`` is the best objective value. The final
        per-sample step sizes are left in ``self.step_size_``.
        """
        ball = Ball(x, self.eps, self.norm)
        adv = ball(x + random_start(x, self.eps, self.norm, gen))
        obj, g, logits = self.grad(adv, y, loss, target)
        won = logits.argmax(1) != y
        found = adv.clone()
        best_x, best_g, best_obj = adv.clone(), g.clone(), obj.clone()
        prev, prev_obj = adv.clone(), obj.clone()
        eta = torch.full_like(obj, 2 * self.eps)
        increases = torch.zeros_like(obj)
        halved_last = torch.zeros_like(won)
        best_at_check = best_obj.clone()
        last_check = 0
        checks = set(self.checkpoints[1:])
        for k in range(self.steps):
            a = 1.0 if k == 0 else MOMENTUM
            z = ball(adv + _view(eta, adv) * step_direction(g, self.norm))
            new = ball(adv + a * (z - adv) + (1 - a) * (adv - prev))
            prev, adv = adv, new
            obj, g, logits = self.grad(adv, y, loss, target)
            newly = _view((logits.argmax(1) != y) & ~won, adv)
            found = torch.where(newly, adv, found)
            won = won | newly.flatten()
            increases += (obj > prev_obj).to(increases.dtype)
            prev_obj = obj
            better = obj > best_obj
            vb = _view(better, adv)
            best_x = torch.where(vb, adv, best_x)
            best_g = torch.where(vb, g, best_g)
            best_obj = torch.where(better, obj, best_obj)
            if k + 1 in checks:
                halve = halve_step(
                    increases, k + 1 - last_check, self.rho, ~halved_last, best_obj <= best_at_check
                )
                eta = torch.where(halve, eta / 2, eta)
                vh = _view(halve, adv)
                adv = torch.where(vh, best_x, adv)
                prev = torch.where(vh, best_x, prev)
                g = torch.where(vh, best_g, g)
                prev_obj = torch.where(halve, best_obj, prev_obj)
                halved_last = halve
                best_at_check = best_obj.clone()
                increases.zero_()
                last_check = k + 1
            if bool(won.all()):
                break
        self.step_size_ = eta  # the last run's final per-sample step sizes (for inspection)
        return torch.where(_view(won, x), found, best_x), won, best_obj

    def perturb(
        self, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None
    ) -> torch.Tensor:
        gen = self.generator()
        best = x.clone()
        best_obj = torch.full((x.shape[0],), float("-inf"), dtype=x.dtype, device=x.device)
        done = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
        for _ in range(self.restarts):
            idx = (~done).nonzero().flatten()
            if idx.numel() == 0:
                break
            out, won, obj = self.run(x[idx], y[idx], self.loss, None, gen)
            take = won | (obj > best_obj[idx])
            best[idx[take]] = out[take]
            best_obj[idx[take]] = obj[take]
            done[idx[won]] = True
        return best


@EVASION.register(
    "apgd-t",
    "APGD-T: Auto-PGD with the targeted DLR loss over the top-9 wrong classes (AutoAttack)",
    paper=_CROCE,
    threat="white-box, untargeted at the interface (targeted runs), L-inf or L2 ball",
)
class APGDT(APGD):
    """APGD-T: APGD with the targeted DLR loss toward each of the ``n_target_classes`` most
    likely wrong classes in turn (one run per target, on the points still robust); untargeted at
    the interface. Needs at least 4 classes.

    Croce & Hein, "Reliable evaluation of adversarial robustness with an ensemble of diverse
    parameter-free attacks", ICML 2020. Defaults are AutoAttack's.

    Args:
        model: maps ``[0, 1]`` inputs to logits (normalisation inside the model).
        eps: radius (default ``8/255``).
        norm: ``"linf"`` (default) or ``"l2"``.
        steps: iterations per target (default 100).
        n_target_classes: targets tried (default 9, capped at K-1).
        seed: seeds the random starts (default 0).
        rho: the checkpoint condition's fraction (default 0.75).

    Shape:
        as :class:`APGD`.

    Example::

        atk = APGDT(model, eps=8 / 255)
        x_adv = atk(x, y)
    """

    def __init__(
        self,
        model: nn.Module,
        eps: float | str = 8 / 255,
        norm: str = "linf",
        steps: int = 100,
        n_target_classes: int = 9,
        seed: int = 0,
        rho: float = 0.75,
    ) -> None:
        super().__init__(model, eps, norm, "dlr", steps, 1, rho, seed)
        if n_target_classes < 1:
            raise InputError(f"n_target_classes must be >= 1, got {n_target_classes}.")
        self.n_target_classes = n_target_classes

    def perturb(
        self, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None
    ) -> torch.Tensor:
        gen = self.generator()
        with torch.no_grad():
            clean = self.logits(x)
        k = clean.shape[1]
        if k < 4:
            raise InputError(
                f"APGD-T's targeted DLR loss needs at least 4 classes, the model has {k}; "
                "use APGD(loss='ce') instead."
            )
        # wrong classes by decreasing clean logit (the true class sorts last)
        order = wrong_classes(clean, y)
        best = x.clone()
        best_margin = torch.full((x.shape[0],), -math.inf, dtype=x.dtype, device=x.device)
        done = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
        for t in range(min(self.n_target_classes, k - 1)):
            idx = (~done).nonzero().flatten()
            if idx.numel() == 0:
                break
            yi = y[idx]
            out, won, _ = self.run(x[idx], yi, dlr, order[idx, t], gen)
            with torch.no_grad():
                margin = cw(self.logits(out), yi)
            take = won | (margin > best_margin[idx])
            best[idx[take]] = out[take]
            best_margin[idx[take]] = margin[take]
            done[idx[won]] = True
        return best
