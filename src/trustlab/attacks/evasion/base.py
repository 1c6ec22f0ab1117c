"""What every evasion attack shares: input checks, a frozen model, norm-ball geometry, gradients.

Contract (architecture section 3): inputs are images in ``[0, 1]`` (``(N, C, H, W)`` or video),
labels ``int64``; normalisation lives inside the model. ``atk = PGD(model, eps=8/255, ...)``;
``x_adv = atk(x, y)`` returns a detached tensor on the input's device and dtype, inside the
``eps`` ball of ``x`` and inside ``[0, 1]``. While an attack runs the model is in eval mode with
``requires_grad`` off for its parameters; both are restored on exit, also after an exception.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from fractions import Fraction

import torch
from torch import nn

from trustlab.errors import InputError
from trustlab.utils.modules import frozen
from trustlab.utils.seed import generator

NORMS = ("linf", "l2")


def parse_eps(value: float | str, norm: str | None = None) -> float:
    """``0.03``, ``"8/255"`` or ``"0.5"`` -> float (the CLI's ``--eps 8/255``).

    Refuses what is not a finite number ``>= 0``. With ``norm="linf"`` also a radius above 1:
    inputs live in ``[0, 1]``, so an L-inf ball of radius 1 already holds every image (an L2
    radius may exceed 1; the attack's constructor passes its norm).
    """
    shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
    try:
        if isinstance(value, (int, float)):
            eps = float(value)
        else:
            text = str(value).strip()
            try:  # a decimal, e.g. "0.5" or "1e309" (inf), without Fraction's 10**exponent
                eps = float(text)
            except ValueError:  # a fraction, e.g. "8/255"
                eps = float(Fraction(text))
    except (ValueError, ZeroDivisionError):
        raise InputError(f"eps {shown} is not a number; write e.g. 8/255 or 0.5.") from None
    except OverflowError:  # finite but too large for a float, e.g. "1e309"
        eps = math.inf
    if not math.isfinite(eps):
        raise InputError(f"eps must be a finite number, got {shown}; write e.g. 8/255 or 0.5.")
    if not eps >= 0:
        raise InputError(f"eps must be >= 0, got {shown}.")
    if norm == "linf" and eps > 1:
        raise InputError(
            f"eps {shown} is larger than 1: inputs lie in [0, 1], so an L-inf radius above 1 "
            "allows any image. Use a radius in [0, 1] such as 8/255 (on the 0-255 scale, "
            "divide by 255)."
        )
    return eps


def _view(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return t.view(-1, *([1] * (like.dim() - 1)))


def norms(delta: torch.Tensor, norm: str) -> torch.Tensor:
    """Per-sample ``||delta||`` (L-inf or L2)."""
    flat = delta.flatten(1)
    return flat.abs().amax(1) if norm == "linf" else flat.norm(p=2, dim=1)


def project(delta: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    """Project each perturbation onto the ``eps`` ball of the norm."""
    if norm == "linf":
        return delta.clamp(-eps, eps)
    n = norms(delta, "l2")
    factor = torch.where(n > eps, eps / n.clamp_min(1e-12), torch.ones_like(n))
    return delta * _view(factor, delta)


class Ball:
    """The feasible set of an attack on ``x``: its ``eps`` ball intersected with ``[0, 1]``.

    ``ball(adv)`` moves ``adv`` into it. For L-inf this is the exact projection, one clamp
    against bounds computed once per attack; for L2 it is the projection onto the ball followed
    by the clamp to ``[0, 1]`` (the usual approximation of the projection onto the intersection).

    Example::

        ball = Ball(x, 8 / 255, "linf")
        adv = ball(adv + 2 / 255 * grad.sign())
    """

    def __init__(self, x: torch.Tensor, eps: float, norm: str) -> None:
        self.x, self.eps, self.norm = x, eps, norm
        if norm == "linf":
            self.lo = (x - eps).clamp_(min=0)
            self.hi = (x + eps).clamp_(max=1)

    def __call__(self, adv: torch.Tensor) -> torch.Tensor:
        if self.norm == "linf":
            return torch.clamp(adv, self.lo, self.hi)
        return (self.x + project(adv - self.x, self.eps, self.norm)).clamp(0, 1)


def random_start(
    x: torch.Tensor, eps: float, norm: str, gen: torch.Generator | None
) -> torch.Tensor:
    """A uniform point of the L-inf ball, or a uniform direction at a uniform radius in L2."""
    if norm == "linf":
        u = torch.rand(x.shape, generator=gen, dtype=x.dtype).to(x.device)
        return (2 * u - 1) * eps
    d = torch.randn(x.shape, generator=gen, dtype=x.dtype).to(x.device)
    d = d / _view(norms(d, "l2").clamp_min(1e-12), d)
    r = torch.rand(x.shape[0], generator=gen, dtype=x.dtype).to(x.device)
    return d * _view(r * eps, d)


def step_direction(grad: torch.Tensor, norm: str) -> torch.Tensor:
    """Steepest-ascent direction of unit norm: ``sign(g)`` (L-inf) or ``g / ||g||_2`` (L2)."""
    if norm == "linf":
        return grad.sign()
    return grad / _view(norms(grad, "l2").clamp_min(1e-12), grad)


def check_inputs(x: torch.Tensor, y: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise InputError("attack inputs must be a float tensor of images in [0, 1].")
    if x.dim() < 2 or not isinstance(y, torch.Tensor) or y.shape != (x.shape[0],):
        raise InputError(
            f"attack inputs {tuple(x.shape)} and labels {tuple(getattr(y, 'shape', ()))} do not "
            "match: labels must be a (N,) tensor for N inputs."
        )
    if y.is_floating_point():
        raise InputError("attack labels must be integer class indices.")
    if x.numel() and (float(x.min()) < 0 or float(x.max()) > 1 or not torch.isfinite(x).all()):
        raise InputError(
            "attack inputs must lie in [0, 1] (normalisation belongs inside the model: "
            "trustlab.models.Normalized)."
        )


class Attack:
    """Base class: subclasses implement :meth:`perturb` on a frozen model.

    ``atk(x, y)`` checks the inputs, freezes the model (eval mode, no parameter gradients, both
    restored on exit), runs :meth:`perturb` and moves the result into the feasible set
    (:class:`Ball`). A new attack is one subclass registered in
    :data:`trustlab.registry.EVASION` (``@EVASION.register("name", ..., paper=...)``).

    Args:
        model: maps ``[0, 1]`` inputs to logits.
        eps: radius of the threat model (default ``8/255``; float or ``"8/255"``).
        norm: ``"linf"`` (default) or ``"l2"``.
        targeted: if True, ``atk(x, y, target)`` pushes toward ``target`` (default False).
        seed: seeds the attack's own random numbers (random starts): same seed, same result
            (default 0).

    Shape:
        ``x``: ``(N, C, H, W)`` (or video ``(N, C, T, H, W)``) in ``[0, 1]``; ``y`` and
        ``target``: ``(N,)`` int64; returns a detached tensor of ``x``'s shape, dtype and device,
        inside the ``eps`` ball of ``x`` and inside ``[0, 1]``.

    Example::

        atk = PGD(model, eps=8 / 255)  # any subclass
        x_adv = atk(x, y)
    """

    def __init__(
        self,
        model: nn.Module,
        eps: float | str = 8 / 255,
        norm: str = "linf",
        targeted: bool = False,
        seed: int = 0,
    ) -> None:
        if norm not in NORMS:
            raise InputError(f"unknown norm {norm!r}; use one of {', '.join(NORMS)}.")
        self.model = model
        self.eps = parse_eps(eps, norm)
        self.norm = norm
        self.targeted = targeted
        self.seed = seed

    def generator(self) -> torch.Generator:
        return generator(self.seed)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def grad(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        objective,
        target: torch.Tensor | None = None,
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(objective per sample, its gradient w.r.t. x, logits)`` at ``x``; with
        ``transform`` the model sees ``transform(x)`` and the gradient flows through it."""
        x = x.detach().requires_grad_(True)
        logits = self.logits(x if transform is None else transform(x))
        obj = objective(logits, y, target)
        (g,) = torch.autograd.grad(obj.sum(), x)
        return obj.detach(), g.detach(), logits.detach()

    def __call__(
        self, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None = None
    ) -> torch.Tensor:
        check_inputs(x, y)
        if self.targeted and target is None:
            raise InputError("a targeted attack needs target classes: atk(x, y, target).")
        if x.shape[0] == 0 or self.eps == 0:
            return x.detach().clone()
        with frozen(self.model), torch.enable_grad():
            adv = self.perturb(
                x.detach(), y.to(x.device), None if target is None else target.to(x.device)
            )
        return Ball(x, self.eps, self.norm)(adv).detach().to(x.dtype)

    def perturb(
        self, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None
    ) -> torch.Tensor:
        raise NotImplementedError

    def succeeded(
        self, logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None
    ) -> torch.Tensor:
        pred = logits.argmax(1)
        return pred == target if target is not None else pred != y
