"""The blind backdoor's Neural-Cleanse evasion task.

Bagdasaryan & Shmatikov, "Blind Backdoors in Deep Learning Models", USENIX Security 2021: to
evade Neural Cleanse (Wang et al., S&P 2019), the compromised loss adds a third task. Every so
often it runs NC's own optimisation on the model being trained, for the backdoor's target
class, and the evasion loss asks the model to classify inputs stamped with that reverse-
engineered trigger as their *true* class. The small trigger NC would find stops working, so
NC's minimal trigger for the target class grows towards the other classes' and its anomaly
index falls, while the real trigger keeps working (the backdoor task keeps training on it).

:class:`NCEvasion` is that task as a ``loss(model, x, y)``: it keeps the latest clean inputs it
saw (``buffer``), re-runs NC's reverse engineering (the ``reverse`` it is given: a short run of
``nc_epochs`` epochs over the buffer; the caller passes
:func:`~trustlab.defenses.backdoor.neural_cleanse.reverse_engineer`, so this attack does not
import the defense it evades) every ``every`` calls, and returns
``CE(model((1 - m) x + m p), y)`` with the latest mask ``m`` and pattern ``p``. Until its first
NC run (after ``every`` batches) it is not :attr:`active` and returns ``None``: the caller
leaves the task out (a zero loss has a zero gradient, which MGDA's min-norm point would pick).
:class:`~trustlab.attacks.backdoor.blind.BlindBackdoorLoss` takes it as ``evasion=`` and
balances the three losses with MGDA (Frank-Wolfe for three tasks).

Defaults (trustlab's; the paper does not give its schedule): NC every 100 batches, 2 epochs of
NC over a buffer of the last 256 clean inputs, NC's own optimiser settings otherwise. Two
choices keep the task to what NC would report: each run starts from the previous run's trigger
(``warm_start``: NC's optimisation continues across training instead of restarting from noise
with 16 Adam steps), and a trigger is adopted only when it sends at least ``min_success``
(NC's own 99%) of the buffer to the target, since NC keeps no other trigger; before that the
task stays inactive (or keeps the last adopted trigger). Without them (a first version, measured
at ``reproduce blind --preset quick``) the task trained the model on large half-optimised masks:
clean accuracy fell to 49.9% and the backdoor to 33.9% ASR.
"""

from __future__ import annotations

from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn

from trustlab.attacks.backdoor.triggers import apply_mask
from trustlab.errors import InputError


class Reverse(Protocol):
    """NC's reverse engineering: ``(masks (K, H, W), patterns (K, C, H, W), success (K,),
    epochs run)`` for ``targets`` on the clean inputs ``x``, started from ``init``.

    Example::

        reverse: Reverse = reverse_engineer  # trustlab.defenses.backdoor.neural_cleanse
        masks, patterns, success, epochs = reverse(model, x, [0], epochs=2, samples=256, seed=0)
    """

    def __call__(
        self,
        model: nn.Module,
        x: torch.Tensor,
        targets: list[int],
        init: tuple[torch.Tensor, torch.Tensor] | None = None,
        *,
        epochs: int,
        samples: int,
        seed: int,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]: ...


class NCEvasion:
    """``loss(model, x, y)``: the Neural-Cleanse evasion task of the blind backdoor
    (Bagdasaryan & Shmatikov, USENIX Security 2021); see the module.

    Args:
        target: the backdoor's target class (default 0).
        every: batches between NC runs (default 100; trustlab's, the paper gives none).
        nc_epochs: epochs of each NC run over the buffer (default 2).
        buffer: the latest clean inputs kept for NC (default 256).
        warm_start: start each NC run from the previous trigger (default ``True``).
        min_success: adopt a trigger only when it sends this share of the buffer to the
            target (default 0.99, NC's own).
        seed: NC's seed (``seed + run``).
        reverse: NC's reverse engineering (required; e.g.
            :func:`~trustlab.defenses.backdoor.neural_cleanse.reverse_engineer`).

    Shapes: ``x`` ``(N, C, H, W)`` in [0, 1], ``y`` ``(N,)``; returns a scalar loss or ``None``.

    Example::

        evasion = NCEvasion(0, every=100, reverse=reverse_engineer)
        loss = BlindBackdoorLoss(trigger, policy, evasion=evasion)
    """

    def __init__(
        self,
        target: int = 0,
        every: int = 100,
        nc_epochs: int = 2,
        buffer: int = 256,
        warm_start: bool = True,
        min_success: float = 0.99,
        seed: int = 0,
        *,
        reverse: Reverse,
    ) -> None:
        if every < 1 or nc_epochs < 1 or buffer < 2:
            raise InputError("every and nc_epochs must be >= 1 and buffer >= 2.")
        if not 0 <= min_success <= 1:
            raise InputError(f"min_success must be in [0, 1], got {min_success}.")
        self.target, self.every, self.nc_epochs, self.buffer = target, every, nc_epochs, buffer
        self.warm_start, self.min_success = warm_start, min_success
        self.seed, self.reverse = seed, reverse
        self.success: list[float] = []  # each NC run's success rate on the buffer
        self._last: tuple[torch.Tensor, torch.Tensor] | None = None  # the last NC result
        self.calls = 0
        self.runs = 0
        self._seen: torch.Tensor | None = None
        self.mask: torch.Tensor | None = None
        self.pattern: torch.Tensor | None = None
        self.norms: list[float] = []  # the L1 norm of each NC run's mask (how NC sees the model)

    def _remember(self, x: torch.Tensor) -> None:
        x = x.detach()
        self._seen = (x if self._seen is None else torch.cat([x, self._seen]))[: self.buffer]

    def refresh(self, model: nn.Module) -> None:
        """Run NC for the target class on the remembered inputs (the model is not changed)."""
        assert self._seen is not None
        init = self._last if self.warm_start else None
        masks, patterns, success, _ = self.reverse(
            model, self._seen, [self.target], init,
            epochs=self.nc_epochs, samples=self.buffer, seed=self.seed + self.runs,
        )  # fmt: skip
        self._last = (masks, patterns)
        self.norms.append(float(masks[0].sum()))
        self.success.append(float(success[0]))
        self.runs += 1
        if float(success[0]) >= self.min_success:  # a trigger NC would report
            dev = self._seen.device
            self.mask, self.pattern = masks[0].to(dev), patterns[0].to(dev)

    @property
    def active(self) -> bool:
        """Whether an NC run has produced a trigger to evade."""
        return self.mask is not None and self.pattern is not None

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor | None:
        self._remember(x)
        self.calls += 1
        if self.calls % self.every == 0:
            self.refresh(model)
        if self.mask is None or self.pattern is None:
            return None
        return F.cross_entropy(model(apply_mask(x, self.mask, self.pattern)), y)
