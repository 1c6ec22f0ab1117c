"""The clean-label backdoor with a universal adversarial trigger (videos and images).

Zhao, Ma, Zheng, Bailey, Chen & Jiang, "Clean-Label Backdoor Attacks on Video Recognition
Models", CVPR 2020. A clean-label attack may only add the trigger to target-class inputs and
keep their labels, so the model has little reason to learn the trigger: the target class's own
features already explain the label. The attack fixes both sides with a clean model of the
task (the attacker's surrogate):

1. **The trigger** (:func:`adversarial_trigger`): a universal adversarial patch at a fixed place
   (default the bottom-right corner), optimised by signed-gradient steps to push non-target
   inputs of the surrogate to the target class
   (:func:`~trustlab.attacks.evasion.uap.universal_patch`, ``step="sign"``), so it is already a
   strong feature of the target class.
2. **Feature erasing** (:class:`FeatureErasing`): before the trigger is pasted, each poisoned
   target-class input gets an untargeted PGD perturbation on the surrogate (L-inf, eps 8/255,
   10 steps), which destroys the natural features the model would otherwise learn the label
   from.
3. A fraction of the target class only is poisoned (the paper: 10%, 30%, 100%); labels never
   change (:class:`~trustlab.attacks.backdoor.labels.CleanLabel`,
   :func:`~trustlab.attacks.backdoor.poison.poison_dataset` with ``of="eligible"``).

:func:`clean_label_poisoning` does all three. Defaults: target 0, an 8x8 patch at the
bottom-right (the paper: 28x28 on 112x112 frames, i.e. a quarter of the side; trustlab's 32x32
frames take 8x8), 30% of the target class, PGD eps 8/255 with 10 steps of eps/4 = 2/255 (the
paper states eps and steps; 2/255 is Madry et al.'s CIFAR-10 step), patch steps of
2/255 over 5 epochs of the surrogate's training data. Works on images ``(N, C, H, W)`` and clips
``(N, C, T, H, W)`` (the patch on every frame).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from trustlab.attacks.backdoor.labels import CleanLabel, LabelPolicy
from trustlab.attacks.backdoor.poison import PoisonedDataset, poison_dataset
from trustlab.attacks.backdoor.recipe import BackdoorRecipe
from trustlab.attacks.backdoor.triggers import PatchTrigger, Trigger
from trustlab.attacks.evasion.base import parse_eps
from trustlab.attacks.evasion.pgd import PGD
from trustlab.attacks.evasion.uap import universal_patch
from trustlab.data.datasets import ArrayDataset
from trustlab.errors import InputError
from trustlab.registry import BACKDOORS
from trustlab.utils.modules import device_of


def adversarial_trigger(
    surrogate: nn.Module,
    data: ArrayDataset,
    target: int = 0,
    size: int = 8,
    location: str | Sequence[int] = "bottom-right",
    epochs: int = 5,
    lr: float | str = 2 / 255,
    batch_size: int = 128,
    seed: int = 0,
    device: str | torch.device | None = None,
) -> PatchTrigger:
    """A :class:`PatchTrigger` whose pattern is a universal adversarial patch of ``surrogate``
    toward ``target``, learnt at the trigger's own place on the non-target inputs of ``data``."""
    others = data.subset(torch.nonzero(data.y != target).flatten().tolist())
    if len(others) == 0:
        raise InputError(f"the data has no input outside the target class {target}.")
    c = data.x.shape[1]
    place = PatchTrigger(torch.zeros(c, size, size), location=location).position(data.x[:1])
    patch = universal_patch(
        surrogate,
        others,
        size=size,
        target=target,
        location=place,
        epochs=epochs,
        batch_size=batch_size,
        lr=parse_eps(lr),
        seed=seed,
        device=device,
        step="sign",
    )
    return PatchTrigger(patch, location=location)


class FeatureErasing:
    """``transform(x, y)``: untargeted L-inf PGD on ``surrogate``, the clean-label attack's
    perturbation of the poisoned inputs (Zhao et al., CVPR 2020).

    Args:
        surrogate: the attacker's clean model of the task.
        eps: the L-inf budget (default 8/255, the paper's).
        steps: PGD steps (default 10, the paper's).
        alpha: the step size (default ``eps / 4`` = 2/255, Madry et al.'s CIFAR-10 step; the
            paper does not state it).
        seed: seeds PGD.

    Shapes: ``x`` ``(N, C, H, W)`` or clips ``(N, C, T, H, W)`` in [0, 1], ``y`` ``(N,)``;
    returns ``x``'s shape on the CPU.

    Example::

        erase = FeatureErasing(surrogate)
        x_erased = erase(x, y)
    """

    def __init__(
        self,
        surrogate: nn.Module,
        eps: float | str = 8 / 255,
        steps: int = 10,
        alpha: float | str | None = None,
        seed: int = 0,
    ) -> None:
        eps = parse_eps(eps)
        alpha = eps / 4 if alpha is None else parse_eps(alpha)
        self.attack = PGD(surrogate, eps, alpha, steps, seed=seed)

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        dev = device_of(self.attack.model)
        return self.attack(x.to(dev), y.to(dev)).cpu()


def clean_label_poisoning(
    data: ArrayDataset,
    trigger: PatchTrigger,
    surrogate: nn.Module | None,
    target: int = 0,
    rate: float = 0.3,
    eps: float | str = 8 / 255,
    steps: int = 10,
    seed: int = 0,
) -> PoisonedDataset:
    """Poison ``rate`` of the target class of ``data`` (clean labels): PGD feature erasing on
    ``surrogate`` (skipped when it is ``None``: the plain clean-label attack), then ``trigger``."""
    erase = None if surrogate is None else FeatureErasing(surrogate, eps, steps, seed=seed)
    policy = CleanLabel(target, data.num_classes)
    return poison_dataset(data, trigger, policy, rate, of="eligible", seed=seed, transform=erase)


@BACKDOORS.register(
    "clean-label",
    "universal adversarial patch + PGD feature erasing on target-class inputs (clean label)",
    paper="Zhao, Ma, Zheng, Bailey, Chen, Jiang. Clean-Label Backdoor Attacks on Video "
    "Recognition Models. CVPR 2020. (Clean-label poisoning: Turner, Tsipras, Madry. "
    "Label-Consistent Backdoor Attacks. arXiv:1912.02771, 2019.)",
    threat="data poisoning (clean label) with a surrogate model: rate of the target class",
    injector="clean-label",
    rate=0.3,
)
class CleanLabelBackdoor(BackdoorRecipe):
    """The clean-label backdoor with a universal adversarial trigger (Zhao et al., CVPR 2020),
    as a recipe: the trigger is learnt on a surrogate (the ``"clean-label"`` injector trains one
    of the model's architecture first) and the poisoned target-class inputs are feature-erased
    on it (see the module). ``rate`` is the fraction of the *target class* poisoned.

    Args:
        size: the patch side (default ``None``: a quarter of the smaller image side, at least 3,
            as the paper's 28 on 112; the paper's own size is 28x28).
        eps: feature erasing's L-inf budget (default 8/255, the paper's).
        steps: feature erasing's PGD steps (default 10, the paper's).

    Example::

        art = train_backdoor("clean-label", train, test, model, settings, rate=0.3)
        art.trigger.pattern.shape  # (C, size, size)
    """

    of = "eligible"

    def __init__(self, size: int | None = None, eps: float = 8 / 255, steps: int = 10) -> None:
        self.size, self.eps, self.steps = size, eps, steps

    def policy(self, target: int, num_classes: int) -> LabelPolicy:
        return CleanLabel(target, num_classes)

    def trigger(
        self,
        data: ArrayDataset,
        seed: int = 0,
        *,
        surrogate: nn.Module | None = None,
        target: int = 0,
        device: str | torch.device | None = None,
        **_: object,
    ) -> Trigger:
        if surrogate is None:
            raise InputError("the clean-label trigger is learnt on a surrogate; pass surrogate=.")
        size = self.size if self.size is not None else max(3, min(data.x.shape[-2:]) // 4)
        return adversarial_trigger(surrogate, data, target, size, seed=seed, device=device)

    def poison(
        self,
        data: ArrayDataset,
        trigger: Trigger,
        policy: LabelPolicy,
        rate: float,
        seed: int = 0,
        *,
        surrogate: nn.Module | None = None,
        **_: object,
    ) -> PoisonedDataset:
        assert isinstance(trigger, PatchTrigger) and isinstance(policy, CleanLabel)
        return clean_label_poisoning(
            data, trigger, surrogate, policy.target, rate, self.eps, self.steps, seed=seed
        )
