"""Transfer (black-box) attacks and their evaluation.

- :class:`MIFGSM`: Dong, Liao, Pang, Su, Zhu, Hu & Li, "Boosting Adversarial Attacks with
  Momentum", CVPR 2018: ``g <- mu g + grad / ||grad||_1``, ``x <- x + alpha sign(g)``. Defaults
  (the paper): ``mu = 1.0``, 10 iterations, ``alpha = eps / steps``, no random start; eps 8/255
  here (the paper's 16/255 is for ImageNet).
- :class:`DIFGSM`: Xie et al., "Improving Transferability of Adversarial Examples with Input
  Diversity", CVPR 2019 (DI2-FGSM; with ``momentum=1`` M-DI2-FGSM): each gradient is taken on a
  randomly resized and padded input (:mod:`~trustlab.attacks.evasion.diversity`), probability
  0.5, ``alpha = eps / steps``, 10 steps.
- The Skip Gradient Method is :class:`trustlab.attacks.evasion.sgm.SGM`; all three are the one PGD
  loop with options, so ``SGM(model, momentum=1.0, diversity=0.5)`` is SGM+MI+DI.

:func:`evaluate_transfer` crafts adversarial examples on a *source* model and measures them on
*target* models. The success rate on a target is the fraction, among the points that both the
source and that target classify correctly, that the target misclassifies after the attack (the
SGM paper's protocol: inputs correctly classified by the models, success = error of the target on
the adversarial examples).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.utils.data import Dataset

from trustlab.attacks.evasion.base import Attack
from trustlab.attacks.evasion.pgd import PGD
from trustlab.data.datasets import ArrayDataset, as_array_dataset
from trustlab.errors import InputError
from trustlab.registry import EVASION
from trustlab.utils.device import resolve_device
from trustlab.utils.modules import device_of, frozen


@EVASION.register(
    "mifgsm",
    "MI-FGSM: iterative FGSM with momentum (transfer attack)",
    paper="Dong, Liao, Pang, Su, Zhu, Hu, Li. Boosting Adversarial Attacks with Momentum. "
    "CVPR 2018.",
    threat="transfer (black-box via a white-box source), untargeted or targeted, L-inf ball",
    transfer=True,
)
class MIFGSM(PGD):
    """MI-FGSM: ``g <- mu g + grad / ||grad||_1``, ``x <- x + alpha sign(g)``, no random start.

    Dong, Liao, Pang, Su, Zhu, Hu & Li, "Boosting Adversarial Attacks with Momentum", CVPR 2018.

    Args:
        model: the source model (``[0, 1]`` inputs to logits).
        eps: radius (default ``8/255``; the paper's 16/255 is for ImageNet).
        steps: iterations (default 10, the paper's).
        momentum: decay ``mu`` (default 1.0, the paper's).
        alpha: step size (default ``None``: ``eps / steps``, the paper's).
        norm: ``"linf"`` (default) or ``"l2"``.
        loss: ``"ce"`` (default), ``"cw"`` or ``"dlr"``.
        targeted: if True, ``atk(x, y, target)`` pushes toward ``target`` (default False).
        seed: seeds DI's draws when ``diversity > 0`` (default 0).
        diversity: DI's transform probability (default 0: none; 0.5 is M-DI2-FGSM).

    Shape:
        as :class:`~trustlab.attacks.evasion.pgd.PGD`.

    Example::

        atk = MIFGSM(source, eps=8 / 255)
        report = evaluate_transfer(source, {"vgg": target}, data, atk)
    """

    def __init__(
        self,
        model: nn.Module,
        eps: float | str = 8 / 255,
        steps: int = 10,
        momentum: float = 1.0,
        alpha: float | str | None = None,
        norm: str = "linf",
        loss: str = "ce",
        targeted: bool = False,
        seed: int = 0,
        diversity: float = 0.0,
    ) -> None:
        super().__init__(
            model, eps, alpha, steps, norm, loss, 1, False, targeted, seed, momentum, diversity
        )


@EVASION.register(
    "difgsm",
    "DI2-FGSM: iterative FGSM on randomly resized and padded inputs (transfer attack)",
    paper="Xie, Zhang, Zhou, Bai, Wang, Ren, Yuille. Improving Transferability of Adversarial "
    "Examples with Input Diversity. CVPR 2019.",
    threat="transfer (black-box via a white-box source), untargeted or targeted, L-inf ball",
    transfer=True,
)
class DIFGSM(PGD):
    """DI2-FGSM: every gradient is taken on a randomly resized and padded input
    (:mod:`~trustlab.attacks.evasion.diversity`); with ``momentum=1`` M-DI2-FGSM.

    Xie, Zhang, Zhou, Bai, Wang, Ren & Yuille, "Improving Transferability of Adversarial Examples
    with Input Diversity", CVPR 2019. trustlab shrinks and pads back to the input size (the
    paper enlarges), see :mod:`~trustlab.attacks.evasion.diversity`.

    Args:
        model: the source model (``[0, 1]`` inputs to logits).
        eps: radius (default ``8/255``).
        steps: iterations (default 10).
        diversity: transform probability (default 0.5, the paper's).
        resize_rate: smallest relative side (default 0.9, torchattacks').
        alpha: step size (default ``None``: ``eps / steps``).
        norm: ``"linf"`` (default) or ``"l2"``.
        loss: ``"ce"`` (default), ``"cw"`` or ``"dlr"``.
        targeted: if True, ``atk(x, y, target)`` pushes toward ``target`` (default False).
        seed: seeds the transforms (default 0).
        momentum: MI's decay (default 0: none).

    Shape:
        ``x``: ``(N, C, H, W)`` in ``[0, 1]``; otherwise as
        :class:`~trustlab.attacks.evasion.pgd.PGD`.

    Example::

        atk = DIFGSM(source, eps=8 / 255)
        x_adv = atk(x, y)
    """

    def __init__(
        self,
        model: nn.Module,
        eps: float | str = 8 / 255,
        steps: int = 10,
        diversity: float = 0.5,
        resize_rate: float = 0.9,
        alpha: float | str | None = None,
        norm: str = "linf",
        loss: str = "ce",
        targeted: bool = False,
        seed: int = 0,
        momentum: float = 0.0,
    ) -> None:
        super().__init__(
            model,
            eps,
            alpha,
            steps,
            norm,
            loss,
            1,
            False,
            targeted,
            seed,
            momentum,
            diversity,
            resize_rate,
        )


@dataclass
class TransferReport:
    """What :func:`evaluate_transfer` measures (the SGM paper's protocol, see the module).

    Attributes:
        source_accuracy: the source's clean accuracy.
        source_success: white-box success on the source's correctly classified points.
        targets: per target name, ``clean_accuracy``, ``adv_accuracy``, ``success_rate`` and
            ``n`` (the points correct on both source and target, on which ``success_rate`` is
            measured).
        n: the number of points attacked.

    Example::

        report = evaluate_transfer(source, {"vgg": vgg}, data, SGM(source))
        report.mean_success(), report.to_dict()
    """

    source_accuracy: float
    source_success: float  # white-box success on the source's correct points
    targets: dict[str, dict[str, float]] = field(default_factory=dict)
    n: int = 0

    def mean_success(self) -> float:
        rates = [t["success_rate"] for t in self.targets.values()]
        return sum(rates) / len(rates) if rates else float("nan")

    def to_dict(self) -> dict[str, object]:
        return {
            "source_accuracy": self.source_accuracy,
            "source_success": self.source_success,
            "targets": {k: dict(v) for k, v in self.targets.items()},
            "mean_success": self.mean_success(),
            "n": self.n,
        }


def _predict(model: nn.Module, x: torch.Tensor, batch_size: int, dev: torch.device) -> torch.Tensor:
    with torch.no_grad():
        return (
            torch.cat([model(b.to(dev)).argmax(1).cpu() for b in x.split(batch_size)])
            if len(x)
            else torch.zeros(0, dtype=torch.long)
        )


def evaluate_transfer(
    source: nn.Module,
    targets: Mapping[str, nn.Module],
    data: Dataset | ArrayDataset,
    attack: Attack,
    batch_size: int = 256,
    device: str | torch.device | None = None,
) -> TransferReport:
    """Craft ``attack`` (built on ``source``) on ``data`` and measure it on every target."""
    if not targets:
        raise InputError("evaluate_transfer needs at least one target model.")
    if attack.model is not source:
        raise InputError("the attack must be built on the source model: attack.model is source.")
    ds = data if isinstance(data, ArrayDataset) else as_array_dataset(data)
    dev = resolve_device(device) if device is not None else device_of(source)
    y = ds.y
    with frozen(source):
        src_clean = _predict(source, ds.x, batch_size, dev) == y
        adv = torch.cat(
            [
                attack(ds.x[i : i + batch_size].to(dev), y[i : i + batch_size].to(dev)).cpu()
                for i in range(0, len(ds), batch_size)
            ]
        )
        src_adv = _predict(source, adv, batch_size, dev) == y
    report = TransferReport(
        source_accuracy=float(src_clean.float().mean()),
        source_success=float((~src_adv[src_clean]).float().mean()) if src_clean.any() else 0.0,
        n=len(ds),
    )
    for name, model in targets.items():
        tdev = device_of(model) if any(True for _ in model.parameters()) else dev
        with frozen(model):
            clean = _predict(model, ds.x, batch_size, tdev) == y
            robust = _predict(model, adv, batch_size, tdev) == y
        both = clean & src_clean
        report.targets[name] = {
            "clean_accuracy": float(clean.float().mean()),
            "adv_accuracy": float(robust.float().mean()),
            "success_rate": float((~robust[both]).float().mean()) if both.any() else 0.0,
            "n": int(both.sum()),
        }
    return report
