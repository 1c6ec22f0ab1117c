"""Skip Gradient Method (SGM): Wu, Wang, Xia, Bailey & Ma, "Skip Connections Matter: On the
Transferability of Adversarial Examples Generated with ResNets", ICLR 2020.

During the attack's backward pass the gradient that flows through every residual branch is
multiplied by ``gamma`` (``0 < gamma <= 1``); the skip connections and the main path after each
addition are left untouched, so more of the input gradient comes from the skip connections and
the adversarial examples transfer better to other architectures.

:func:`skip_gradient` is a context manager: inside it, full backward hooks on the residual-branch
modules scale the gradient with respect to each branch's input by ``gamma``; on exit (also after
an exception) the hooks are removed. The branches of trustlab's residual models (``resnet8``,
``resnet20``, ``resnet18``, ``wrn-16-4``, ``densenet-small``) are found by name
(:func:`trustlab.models.wrappers.residual_branches`: sub-modules called ``residual``); for a
user's network pass ``branches=`` the module names (or modules) of its residual branches.
:class:`SGM` is the PGD loop run inside that context, combinable with MI (``momentum``) and DI
(``diversity``).

Defaults (the paper): ``gamma = 0.2`` for ResNets (0.5 for DenseNets); the attack is the
iterative FGSM the authors use, L-inf ``eps = 8/255`` on CIFAR-10 (16/255 on ImageNet), step
2/255 (``eps/4``, scaled with the radius), 10 steps, no random start, cross-entropy.

Where trustlab departs from the authors' code: their code hooks ReLU modules (``sqrt(gamma)`` per
ReLU in blocks with two); on torchvision's blocks the same ReLU module also runs after the
addition, which scales the main path too. trustlab scales each residual branch exactly once, by
``gamma``, as the method is specified.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch
from torch import nn

from trustlab.attacks.evasion.pgd import PGD
from trustlab.errors import InputError
from trustlab.models.wrappers import residual_branches, resolve_layer
from trustlab.registry import EVASION

_WU = (
    "Wu, Wang, Xia, Bailey, Ma. Skip Connections Matter: On the Transferability of Adversarial "
    "Examples Generated with ResNets. ICLR 2020."
)
_MI = "Dong et al. Boosting Adversarial Attacks with Momentum. CVPR 2018."
_DI = (
    "Xie et al. Improving Transferability of Adversarial Examples with Input Diversity. CVPR 2019."
)
_THREAT = "transfer (black-box via a white-box residual source), untargeted or targeted, L-inf ball"

Branches = Sequence[str | nn.Module] | None


def branch_modules(model: nn.Module, branches: Branches = None) -> list[nn.Module]:
    """The residual-branch modules SGM scales: ``branches`` (names or modules) or, by default,
    every sub-module called ``residual``. An :class:`InputError` when there are none."""
    if branches is None:
        mods = [m for _, m in residual_branches(model)]
        if not mods:
            raise InputError(
                f"{type(model).__name__} has no sub-modules named 'residual'; SGM needs the "
                "residual branches: pass branches=['layer1.0.branch', ...] (module names from "
                "trustlab.models.layer_names(model))."
            )
        return mods
    if isinstance(branches, (str, nn.Module)):
        branches = [branches]
    mods = [b if isinstance(b, nn.Module) else resolve_layer(model, b) for b in branches]
    if not mods:
        raise InputError("branches is empty; name at least one residual branch.")
    return mods


def check_gamma(gamma: float) -> float:
    if not 0 < gamma <= 1:
        raise InputError(f"SGM's gamma must be in (0, 1], got {gamma}; the paper uses 0.2.")
    return float(gamma)


@contextlib.contextmanager
def skip_gradient(
    model: nn.Module, gamma: float = 0.2, branches: Branches = None
) -> Iterator[list[nn.Module]]:
    """Scale the gradient through the residual branches by ``gamma`` inside the block."""
    gamma = check_gamma(gamma)
    mods = branch_modules(model, branches)

    def hook(module: nn.Module, grad_input, grad_output):
        return tuple(None if g is None else g * gamma for g in grad_input)

    handles = [m.register_full_backward_hook(hook) for m in mods]
    try:
        yield mods
    finally:
        for h in handles:
            h.remove()


# decorators apply bottom-up: "sgm" registers first
@EVASION.register(
    "sgm-mi-di",
    "SGM with MI-FGSM's momentum and DI's input diversity, step eps/steps",
    paper=f"{_WU} With {_MI} and {_DI}",
    threat=_THREAT,
    defaults={"momentum": 1.0, "diversity": 0.5, "alpha": None},
    transfer=True,
)
@EVASION.register(
    "sgm-mi",
    "SGM with MI-FGSM's momentum, step eps/steps",
    paper=f"{_WU} With {_MI}",
    threat=_THREAT,
    defaults={"momentum": 1.0, "alpha": None},
    transfer=True,
)
@EVASION.register(
    "sgm",
    "SGM: skip gradient method (residual-branch gradients decayed by gamma)",
    paper=_WU,
    threat=_THREAT,
    transfer=True,
)
class SGM(PGD):
    """The PGD loop with skip gradients (see the module); ``gamma = 1`` is plain PGD.

    Wu, Wang, Xia, Bailey & Ma, "Skip Connections Matter: On the Transferability of Adversarial
    Examples Generated with ResNets", ICLR 2020. Defaults are the paper's iterative FGSM on
    CIFAR-10 (no random start); trustlab scales each residual branch once by ``gamma`` where the
    authors' code hooks ReLUs (see the module).

    Args:
        model: the residual source model (``[0, 1]`` inputs to logits).
        eps: radius (default ``8/255``; 16/255 on ImageNet in the paper).
        alpha: step size (default ``"eps/4"``: 2/255 at the paper's 8/255, scaled with the
            radius); ``None`` takes MI-FGSM's ``eps / steps``.
        steps: iterations (default 10).
        gamma: residual-gradient decay in ``(0, 1]`` (default 0.2, the paper's for ResNets;
            0.5 for DenseNets).
        branches: names or modules of the residual branches (default: sub-modules called
            ``residual``, as in trustlab's residual models).
        norm: ``"linf"`` (default) or ``"l2"``.
        loss: ``"ce"`` (default), ``"cw"`` or ``"dlr"``.
        restarts: independent runs (default 1).
        random_start: start at a random point of the ball (default False, the paper's).
        targeted: if True, ``atk(x, y, target)`` pushes toward ``target`` (default False).
        seed: seeds random starts and DI's draws (default 0).
        momentum: MI's decay (default 0; ``sgm-mi`` uses 1.0).
        diversity: DI's transform probability (default 0; ``sgm-mi-di`` uses 0.5).
        resize_rate: DI's smallest relative side (default 0.9).

    Shape:
        as :class:`~trustlab.attacks.evasion.pgd.PGD`.

    Example::

        atk = SGM(resnet, eps=8 / 255, gamma=0.2)
        report = evaluate_transfer(resnet, {"vgg": vgg}, data, atk)
    """

    def __init__(
        self,
        model: nn.Module,
        eps: float | str = 8 / 255,
        alpha: float | str | None = "eps/4",
        steps: int = 10,
        gamma: float = 0.2,
        branches: Branches = None,
        norm: str = "linf",
        loss: str = "ce",
        restarts: int = 1,
        random_start: bool = False,
        targeted: bool = False,
        seed: int = 0,
        momentum: float = 0.0,
        diversity: float = 0.0,
        resize_rate: float = 0.9,
    ) -> None:
        super().__init__(
            model,
            eps,
            alpha,
            steps,
            norm,
            loss,
            restarts,
            random_start,
            targeted,
            seed,
            momentum,
            diversity,
            resize_rate,
        )
        self.gamma = check_gamma(gamma)
        self.branches = branches
        branch_modules(model, branches)  # fail now, not mid-attack

    def perturb(
        self, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None
    ) -> torch.Tensor:
        with skip_gradient(self.model, self.gamma, self.branches):
            return super().perturb(x, y, target)
