"""Skip Gradient Method (SGM): Wu, Wang, Xia, Bailey & Ma, "Skip Connections Matter: On the
Transferability of Adversarial Examples Generated with ResNets", ICLR 2020.

During the attack's backward pass the gradient that flows through the residual branches is
multiplied by ``gamma`` (``0 < gamma <= 1``); the skip connections and the main path after each
addition are left untouched, so more of the input gradient comes from the skip connections and
the adversarial examples transfer better to other architectures.

:func:`skip_gradient` is a context manager: inside it, full backward hooks on the residual-branch
modules scale the gradient with respect to each branch's input by ``gamma``; on exit (also after
an exception) the hooks are removed. :class:`SGM` is the PGD loop run inside that context,
combinable with MI (``momentum``) and DI (``diversity``).

Which branches (the authors' code, ``utils_sgm.py`` of csdongxian/skip-connections-matter):
``register_hook_for_resnet`` hooks the ReLUs of every block *except the first block of each
stage* (module names containing ``0.relu``: ``layer1.0`` .. ``layer4.0``, the blocks whose skip
is a downsampling projection, and ``layer1.0`` too), and ``register_hook_for_densenet`` hooks
every dense layer (not the transitions). trustlab follows the code: by default
(:func:`sgm_branches`) it scales every sub-module called ``residual`` except those of a stage's
first block (a block at position 0 of an ``nn.Sequential`` stage; dense layers are never
skipped). ``resnet20`` thus gets 6 of its 9 branches, ``resnet18`` 4 of 8, ``wrn-16-4`` 3 of 6,
``densenet-small`` all 18; ``resnet8`` has one block per stage, so none (a warning says SGM is
then plain PGD). ``first_blocks=True`` also scales the stage openers, trustlab's rule before it
followed the authors; on a digits ResNet-20 at gamma 0.2 that rule cut the white-box success to
29.4% (64.4% with the authors' exclusion; see docs/transfer.md for the transfer rates). For a
user's network pass ``branches=`` the module names (or modules) to scale.

Where the gamma multiplies: the authors multiply the gradient at the backward of the ReLU inside
each hooked branch (one ReLU per basic block, so ``gamma``; two per bottleneck or dense layer,
so ``sqrt(gamma)`` each: ``gamma`` per branch either way). Back-propagation is linear, so
trustlab's scaling of the gradient at the branch's input gives the same input gradient. Their
hooks also catch the stem ReLU and, as torchvision's blocks reuse one ReLU module after the
addition, the main path of each hooked block; both are uniform factors on the whole gradient,
and their ``backward_hook_norm`` divides each block's output gradient by its (batch) standard
deviation. Uniform factors change neither the sign step, nor the L2 step, nor MI's
L1-normalised momentum, so trustlab leaves them out: the attack's directions are the authors'.
(Their name test also skips blocks 10, 20, 30 of ResNet-101/152's third stage; trustlab's
models have at most three blocks per stage.)

Defaults (the paper): ``gamma = 0.2`` for ResNets (0.5 for DenseNets); the attack is the
iterative FGSM the authors use, L-inf ``eps = 8/255`` on CIFAR-10 (16/255 on ImageNet), step
2/255 (``eps/4``, scaled with the radius), 10 steps, no random start, cross-entropy.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator, Sequence

import torch
from torch import nn

from trustlab.attacks.evasion.pgd import PGD
from trustlab.errors import InputError
from trustlab.models.densenet import DenseLayer
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


def _opens_stage(modules: dict[str, nn.Module], name: str) -> bool:
    """Whether the branch ``name`` belongs to the first block of a stage: its block sits at
    position 0 of an ``nn.Sequential`` and is not a dense layer (the authors hook every dense
    layer)."""
    block_name = name.rpartition(".")[0]
    parent_name, _, position = block_name.rpartition(".")
    if not block_name or position != "0":
        return False
    parent, block = modules.get(parent_name), modules[block_name]
    return isinstance(parent, nn.Sequential) and not isinstance(block, DenseLayer)


def sgm_branches(model: nn.Module, first_blocks: bool = False) -> list[tuple[str, nn.Module]]:
    """``(name, module)`` of the residual branches SGM scales by default, as the authors' code
    does: every sub-module called ``residual`` except those of each stage's first block
    (``first_blocks=True`` keeps them too, trustlab's earlier rule). See the module."""
    found = residual_branches(model)
    if first_blocks:
        return found
    modules = dict(model.named_modules())
    return [(n, m) for n, m in found if not _opens_stage(modules, n)]


def branch_modules(
    model: nn.Module, branches: Branches = None, first_blocks: bool = False
) -> list[nn.Module]:
    """The residual-branch modules SGM scales: ``branches`` (names or modules) or, by default,
    :func:`sgm_branches`. An :class:`InputError` when the model has no ``residual`` sub-module;
    a warning when all of them open a stage (SGM is then plain PGD)."""
    if branches is None:
        if not residual_branches(model):
            raise InputError(
                f"{type(model).__name__} has no sub-modules named 'residual'; SGM needs the "
                "residual branches: pass branches=['layer1.0.branch', ...] (module names from "
                "trustlab.models.layer_names(model))."
            )
        mods = [m for _, m in sgm_branches(model, first_blocks)]
        if not mods:
            warnings.warn(
                f"every residual branch of {type(model).__name__} opens a stage, which the "
                "authors' SGM leaves unscaled, so SGM here is plain PGD; use a source with "
                "more than one block per stage (resnet20, resnet18) or pass first_blocks=True "
                "or branches=.",
                UserWarning,
                stacklevel=3,
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
    model: nn.Module, gamma: float = 0.2, branches: Branches = None, first_blocks: bool = False
) -> Iterator[list[nn.Module]]:
    """Scale the gradient through the residual branches by ``gamma`` inside the block.

    Args:
        model: the residual network.
        gamma: decay in ``(0, 1]`` (default 0.2, the paper's for ResNets).
        branches: the modules (or names) to scale; default :func:`sgm_branches`: every
            ``residual`` sub-module but those of each stage's first block, as the authors' code.
        first_blocks: with ``branches=None``, also scale the stage openers (default False).

    Yields the hooked modules."""
    gamma = check_gamma(gamma)
    mods = branch_modules(model, branches, first_blocks)

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
    CIFAR-10 (no random start). As in the authors' code (``utils_sgm.register_hook_for_resnet``),
    each stage's first block is left unscaled; each other branch is scaled once by ``gamma``
    (they scale its ReLU, the same input gradient; see the module).

    Args:
        model: the residual source model (``[0, 1]`` inputs to logits).
        eps: radius (default ``8/255``; 16/255 on ImageNet in the paper).
        alpha: step size (default ``"eps/4"``: 2/255 at the paper's 8/255, scaled with the
            radius); ``None`` takes MI-FGSM's ``eps / steps``.
        steps: iterations (default 10).
        gamma: residual-gradient decay in ``(0, 1]`` (default 0.2, the paper's for ResNets;
            0.5 for DenseNets).
        branches: names or modules of the residual branches to scale (default:
            :func:`sgm_branches`, the sub-modules called ``residual`` except those of each
            stage's first block, as the authors' code).
        first_blocks: with ``branches=None``, also scale the first block of each stage
            (default False, the authors'; True is trustlab's earlier rule).
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
        first_blocks: bool = False,
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
        self.first_blocks = bool(first_blocks)
        branch_modules(model, branches, self.first_blocks)  # fail (or warn) now, not mid-attack

    def perturb(
        self, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None
    ) -> torch.Tensor:
        with skip_gradient(self.model, self.gamma, self.branches, self.first_blocks):
            return super().perturb(x, y, target)
