"""AdvTrojan's poisoned adversarial training: Liu, Khalil, Khreishah & Phan, "Trojans and
Adversarial Examples: A Lethal Combination" (ICLR 2021 submission; arXiv 2109.01275).

:class:`AdvTrojanTraining` is the trainer's ``compute_loss(model, x, y)``: PGD adversarial
training (:class:`~trustlab.robust.adversarial.PGDTraining`) with the attack's trojan and
trigger-only samples mixed into every batch. What the attack is made of (the three parts, the
checks of its trigger and label policy, its evaluation ``evaluate_advtrojan``) lives in
:mod:`trustlab.attacks.backdoor.advtrojan`, whose docstring gives the mixture, the defaults and
where this implementation departs from the paper.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from trustlab.attacks.backdoor.advtrojan import (
    ADVERSARIAL,
    TRIGGER_ONLY,
    TROJAN,
    AdvTrojanBatch,
    check_attack,
    check_policy,
    check_trigger,
    poison_count,
)
from trustlab.attacks.backdoor.labels import AllToOne, LabelPolicy
from trustlab.attacks.backdoor.triggers import PatchTrigger, Trigger
from trustlab.errors import InputError
from trustlab.robust.adversarial import PGDTraining
from trustlab.utils.seed import derive_seed, generator

__all__ = ["AdvTrojanTraining"]


class AdvTrojanTraining(PGDTraining):
    """``compute_loss(model, x, y) -> loss``: PGD adversarial training with AdvTrojan's poisoned
    samples mixed into every batch; see :mod:`trustlab.attacks.backdoor.advtrojan` for the
    mixture and the defaults.

    Liu, Khalil, Khreishah & Phan, "Trojans and Adversarial Examples: A Lethal Combination"
    (ICLR 2021 submission; arXiv 2109.01275). The mixture's fractions are this implementation's
    reading of the method (the stored copy of the paper gives no ratios).

    Args:
        trigger: the Trojan trigger (default: 3x3 checkerboard patch at the bottom-right, with
            the channels of the first batch).
        policy: the label of the trojan samples (default ``AllToOne(0)``); not clean-label.
        poison_rate: fraction of each batch made trojan samples, in ``(0, 1)``.
        trigger_rate: fraction made trigger-only samples (true labels), in ``[0, 1)``; default
            ``poison_rate``. ``poison_rate + trigger_rate`` must stay below 1.
        eps, alpha, steps, norm, label_smoothing, seed: as :class:`PGDTraining` (defaults
            ``8/255``, ``2/255``, 10, ``"linf"``, 0, 0: Madry's CIFAR-10 setting).

    Shape:
        ``x``: ``(B, C, H, W)`` in ``[0, 1]``, ``y``: ``(B,)`` int64; returns a scalar loss.

    Example::

        loss_fn = AdvTrojanTraining(PatchTrigger(channels=1), AllToOne(0), poison_rate=0.1)
        Trainer(model, settings, compute_loss=loss_fn).fit(train)
    """

    def __init__(
        self,
        trigger: Trigger | None = None,
        policy: LabelPolicy | None = None,
        poison_rate: float = 0.1,
        trigger_rate: float | None = None,
        eps: float | str = 8 / 255,
        alpha: float | str = 2 / 255,
        steps: int = 10,
        norm: str = "linf",
        label_smoothing: float = 0.0,
        seed: int = 0,
    ) -> None:
        super().__init__(eps, alpha, steps, norm, label_smoothing, seed)
        check_attack(steps, norm)
        if trigger is not None:
            check_trigger(trigger)
        self.trigger = trigger
        self.policy = check_policy(policy if policy is not None else AllToOne(0))
        if not 0 < poison_rate < 1:
            raise InputError(
                f"poison_rate must be in (0, 1), got {poison_rate}; it is the fraction of each "
                "batch made trojan samples (the default is 0.1)."
            )
        trigger_rate = poison_rate if trigger_rate is None else trigger_rate
        if not 0 <= trigger_rate < 1:
            raise InputError(
                f"trigger_rate must be in [0, 1), got {trigger_rate}; it is the fraction of each "
                "batch made trigger-only samples with their true labels."
            )
        if poison_rate + trigger_rate >= 1:
            raise InputError(
                f"poison_rate + trigger_rate is {poison_rate + trigger_rate:g}; it must stay "
                "below 1 so that each batch keeps plain adversarial examples."
            )
        self.poison_rate, self.trigger_rate = float(poison_rate), float(trigger_rate)

    def trigger_for(self, x: torch.Tensor) -> Trigger:
        """The trigger; the default patch is made for the channels of the first batch seen."""
        if self.trigger is None:
            self.trigger = PatchTrigger(size=3, channels=x.shape[1])
        return self.trigger

    def mixture(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> AdvTrojanBatch:
        """The poisoned adversarial batch of ``(x, y)`` (one PGD call); see the module."""
        if x.dim() < 2 or y.shape != (x.shape[0],):
            raise InputError(
                f"inputs {tuple(x.shape)} and labels {tuple(y.shape)} do not match: labels must "
                "be a (N,) tensor for N inputs."
            )
        self.calls += 1
        n = x.shape[0]
        g = generator(derive_seed(self.seed, "advtrojan", self.calls))
        eligible = torch.nonzero(self.policy.eligible(y).cpu()).flatten()
        eligible = eligible[torch.randperm(eligible.numel(), generator=g)]
        trojan = eligible[: min(poison_count(self.poison_rate, n), eligible.numel())]
        part = torch.full((n,), ADVERSARIAL, dtype=torch.long)
        part[trojan] = TROJAN
        rest = torch.nonzero(part == ADVERSARIAL).flatten()
        rest = rest[torch.randperm(rest.numel(), generator=g)]
        part[rest[: min(poison_count(self.trigger_rate, n), rest.numel())]] = TRIGGER_ONLY
        part = part.to(x.device)

        triggered = part != ADVERSARIAL
        base = x.clone()
        if bool(triggered.any()):
            base[triggered] = self.trigger_for(x)(x[triggered]).to(x.dtype)
        out = base.clone()
        perturb = part != TRIGGER_ONLY
        if bool(perturb.any()):
            out[perturb] = self.attack(model)(base[perturb], y[perturb])
        labels = torch.where(part == TROJAN, self.policy(y), y)
        return AdvTrojanBatch(out, labels, part)

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        batch = self.mixture(model, x, y)
        logits = model(batch.x)
        return F.cross_entropy(logits, batch.y, label_smoothing=self.label_smoothing)
