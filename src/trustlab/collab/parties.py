"""One FDPDDL party: its shard, its model, its DP-SGD local training, and how it behaves.

A :class:`Party` holds what a real participant holds and nothing more: its own training shard,
the public test set, a model (the same architecture for every party, its own initialisation) and
its DP-SGD state (Opacus, through :class:`~trustlab.train.dp.PrivateTraining`: one accountant
for all of the party's local training, pre-training and every round). It never sees another
party's data; :mod:`trustlab.collab.protocol` hands it only what the others release.

Behaviours (``behaviour=``), to test the reputation system:

- ``"honest"`` (default): trains, releases its true update, labels with its model.
- ``"zero"``: a free-rider that releases an all-zero update and does not train.
- ``"random"``: releases uniform noise in ``[-update_clip, update_clip]`` (``[-0.01, 0.01]``
  without a bound) and labels with a model it never trains.
- ``"mislabel"``: trains honestly but labels the benchmark samples at random.
- ``"crash"``: stops (its process exits) at the start of round ``crash_round``.

The local loop is a few lines rather than :class:`~trustlab.train.Trainer`: a party's DP-SGD
state lives across rounds, pre-training and updates alike, while the trainer runs one training
from its first epoch to its last.
"""

from __future__ import annotations

import math
import os
import warnings
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from trustlab.data.datasets import ArrayDataset
from trustlab.errors import InputError
from trustlab.train.dp import DPSettings, PrivateTraining
from trustlab.train.evaluate import evaluate, predict_logits
from trustlab.utils.seed import derive_seed, generator, seed_torch_rng

BEHAVIOURS = ("honest", "zero", "random", "mislabel", "crash")
#: the environment variable holding a party's own secret, mixed into its noise seeds
SECRET_ENV = "TRUSTLAB_PARTY_SECRET"


class PartyCrashed(RuntimeError):
    """Raised (in one process) where a real party's process would die."""


def flat_parameters(model: nn.Module) -> torch.Tensor:
    """All trainable parameters of ``model`` as one flat float tensor (a copy)."""
    return torch.cat([p.detach().flatten() for p in model.parameters() if p.requires_grad])


def add_flat_(model: nn.Module, delta: torch.Tensor) -> None:
    """``theta += delta`` for a flat ``delta`` laid out as :func:`flat_parameters`."""
    start = 0
    with torch.no_grad():
        for p in model.parameters():
            if not p.requires_grad:
                continue
            n = p.numel()
            p.add_(delta[start : start + n].view_as(p).to(p.device, p.dtype))
            start += n
    if start != delta.numel():
        raise InputError(f"update has {delta.numel()} coordinates, the model {start}.")


class Party:
    """One participant of FDPDDL (Lyu et al., IEEE TDSC 2020, arXiv:2007.09370).

    Args:
        index: the party's number ``0..n-1``.
        train: its own shard, an :class:`~trustlab.data.ArrayDataset` ``(N_i, C, H, W)`` in [0, 1].
        test: the public test set used to report accuracy.
        model: a fresh model for the data, from the run's one public initialisation (see
            :meth:`ModelSpec.build`; BatchNorm is replaced by GroupNorm for DP-SGD).
        dp: the DP-SGD settings of its local training (:class:`~trustlab.train.dp.DPSettings`).
        total_epochs: all local epochs it will run (pre-training plus every round), so that a
            target epsilon sizes the noise for the whole run.
        batch_size: expected Poisson batch size; default 10 (the authors' local batch).
        lr: SGD learning rate; default 0.15 (the authors' code).
        seed: the run's seed; the party's draws are derived from ``(seed, index)``.
        behaviour: one of ``BEHAVIOURS``; default ``"honest"``.
        crash_round: the round a ``"crash"`` party stops at; default 1.
        device: where it computes.

    Example:
        >>> from trustlab.collab.settings import CollabSettings, make_party
        >>> party = make_party(CollabSettings(samples=400), 0, seed=0)  # 100 digits
        >>> party.train_epochs(1)
        >>> party.epsilon() > 0
        True
    """

    def __init__(
        self,
        index: int,
        train: ArrayDataset,
        test: ArrayDataset,
        model: nn.Module,
        dp: DPSettings,
        total_epochs: int,
        batch_size: int = 10,
        lr: float = 0.15,
        seed: int = 0,
        behaviour: str = "honest",
        crash_round: int = 1,
        device: torch.device | str = "cpu",
    ) -> None:
        if behaviour not in BEHAVIOURS:
            raise InputError(f"unknown behaviour {behaviour!r}; use one of {list(BEHAVIOURS)}.")
        self.index = index
        self.train = train
        self.test = test
        self.seed = seed
        self.behaviour = behaviour
        self.crash_round = crash_round
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.model = model.to(self.device)
        self.epoch = 0
        self.secret = os.environ.get(SECRET_ENV, "")
        self.private = PrivateTraining(dp, seed=self.private_seed("party"))
        optimizer = torch.optim.SGD(self.model.parameters(), lr=lr)
        self._module, self._optimizer = self.private.attach(
            self.model, optimizer, len(train), batch_size, total_epochs, self.device
        )

    def private_seed(self, purpose: str) -> int:
        """The seed of this party's DP noise and sampling for ``purpose``: from the run's seed,
        the party's index and, when set, the party's own secret (``$TRUSTLAB_PARTY_SECRET``).
        Without a secret, anyone who knows the run's seed can replay a party's noise: fine for
        a simulation, not for a deployment (see ``docs/collaborative.md``)."""
        if self.secret:
            return derive_seed(self.seed, purpose, self.index, self.secret)
        return derive_seed(self.seed, purpose, self.index)

    @property
    def num_params(self) -> int:
        return sum(p.numel() for p in self.model.parameters() if p.requires_grad)

    @property
    def trains(self) -> bool:
        """Whether this party trains on its data at all (free-riders do not)."""
        return self.behaviour not in ("zero", "random")

    def train_epochs(self, epochs: int) -> None:
        """``epochs`` epochs of DP-SGD on the party's own shard (Poisson batches)."""
        if not self.trains:
            return
        net = self._module
        net.train()
        with warnings.catch_warnings():  # Opacus' hooks on a first layer whose input needs no grad
            warnings.filterwarnings("ignore", message="Full backward hook is firing")
            self._epochs(net, epochs)
        self._optimizer.zero_grad(set_to_none=True)

    def _epochs(self, net: nn.Module, epochs: int) -> None:
        for _ in range(epochs):
            seed_torch_rng(derive_seed(self.seed, "party-epoch", self.index, self.epoch))
            batches, _ = self.private.batches(self.train, self.batch_size, self.epoch, self.device)
            for x, y in batches:
                self._optimizer.zero_grad(set_to_none=True)
                logits = net(x)
                # an empty Poisson sample: a zero loss, still a (noisy) step for the accountant
                loss = F.cross_entropy(logits, y) if y.numel() else logits.sum() * 0.0
                loss.backward()
                self._optimizer.step()
            self.epoch += 1

    def local_update(self, epochs: int, round_: int, clip: float | None = None) -> torch.Tensor:
        """Train ``epochs`` epochs and return what the party releases: its parameter change
        (flat), or what its behaviour releases instead.

        ``clip``: bound every coordinate of the change to ``[-clip, clip]`` and keep only the
        bounded change in the party's own model too (the authors' code, range 0.001); None
        keeps the whole change.
        """
        if self.behaviour == "crash" and round_ >= self.crash_round:
            raise PartyCrashed(f"party {self.index} stopped at round {round_}")
        before = flat_parameters(self.model)
        self.train_epochs(epochs)
        update = flat_parameters(self.model) - before
        if clip is not None:
            bounded = update.clamp(-clip, clip)
            add_flat_(self.model, bounded - update)
            update = bounded
        if self.behaviour == "zero":
            return torch.zeros_like(update)
        if self.behaviour == "random":
            gen = generator(derive_seed(self.seed, "random-update", self.index, round_))
            scale = clip if clip is not None else 0.01
            return (torch.rand(update.shape, generator=gen) * 2 - 1) * scale
        return update

    def apply(self, delta: torch.Tensor) -> None:
        """Add an aggregated download to the model's parameters."""
        add_flat_(self.model, delta)

    @torch.no_grad()
    def label(self, images: torch.Tensor, num_classes: int, round_: int) -> torch.Tensor:
        """The party's labels of published samples ``(m, C, H, W)`` -> ``(m,)`` int64."""
        if self.behaviour == "mislabel":
            gen = generator(derive_seed(self.seed, "mislabel", self.index, round_))
            return torch.randint(0, num_classes, (images.shape[0],), generator=gen)
        data = ArrayDataset(images, torch.zeros(images.shape[0], dtype=torch.long))
        return predict_logits(self.model, data, device=self.device).argmax(1)

    def accuracy(self) -> float:
        return float(evaluate(self.model, self.test, device=self.device)["accuracy"])

    def epsilon(self) -> float:
        """The epsilon of the party's DP-SGD so far (``settings.delta``)."""
        eps = self.private.epsilon()
        return eps if math.isfinite(eps) else math.inf

    def report(self) -> dict[str, Any]:
        return {"index": self.index, "behaviour": self.behaviour, **self.private.report()}

    def close(self) -> None:
        """Remove Opacus' hooks (the model becomes a plain module)."""
        self.private.detach()


__all__ = ["BEHAVIOURS", "SECRET_ENV", "Party", "PartyCrashed", "add_flat_", "flat_parameters"]
