"""The poisoner: which training samples carry the trigger, with the poison mask recorded.

``poison_dataset(data, trigger, policy, rate=0.1, seed=0)`` picks exactly
``round(rate * n)`` samples uniformly (seeded) among those the label policy allows
(``of="dataset"``: ``n`` is the whole training set, as BadNets counts its poisoning rate;
``of="eligible"``: ``n`` is the eligible set, e.g. "30% of the target class" for clean-label
attacks), applies the trigger to them and relabels them, and returns a :class:`PoisonedDataset`:
an :class:`~trustlab.data.datasets.ArrayDataset` with ``poison_mask``, ``clean_y`` (the labels
before poisoning) and ``poison_indices``. ``transform=`` (e.g. the clean-label attack's
adversarial perturbation) runs on the chosen samples before the trigger. A sequence of triggers
(Refool's set of reflections) is spread over the chosen samples in turn: the ``i``-th chosen
sample (in index order) gets ``triggers[i % len(triggers)]``.

When the trigger is applied: ``trigger_stage="poisoning"`` (default) writes the triggered images
into the dataset, so training-time augmentation (random crops, flips) then transforms them, as
in the authors' pipelines (Refool's ``strategy.py`` writes the blended images to disk and
``train.py`` transforms them; BackdoorBench's ``prepro_cls_DatasetBD_v2`` applies the trigger
before ``dataset_wrapper_with_transform`` runs the training transforms; TrojanZoo likewise).
A flip then mirrors a corner patch or a reflection in half of the poisoned samples, so the
model also learns mirrored triggers while tests use the unmirrored one. ``"after-augment"``
keeps the chosen samples untriggered and records them (``trigger_rows``: for each sample the
index into ``row_triggers``, or -1); trustlab's trainer applies each one's trigger after
augmenting the batch, so the model learns exactly the trigger that is tested.
:meth:`PoisonedDataset.triggered` bakes the triggers in (for anything but the trainer).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from trustlab.attacks.backdoor.labels import LabelPolicy
from trustlab.attacks.backdoor.triggers import Trigger
from trustlab.data.augment import apply_per_row
from trustlab.data.datasets import ArrayDataset
from trustlab.errors import InputError
from trustlab.utils.seed import generator

#: when the trigger is applied: at poisoning time (the anchors' order) or after augmentation
TRIGGER_STAGES = ("poisoning", "after-augment")


class PoisonedDataset(ArrayDataset):
    """An :class:`ArrayDataset` that remembers which samples were poisoned: ``poison_mask``
    ``(N,)`` bool, ``clean_y`` ``(N,)`` (the labels before poisoning) and ``poison_indices``.

    Example::

        poisoned = poison_dataset(train, PatchTrigger(channels=3), AllToOne(0), rate=0.1)
        poisoned.poison_indices[:5]
    """

    poison_mask: torch.Tensor
    clean_y: torch.Tensor
    #: ``trigger_stage="after-augment"``: per sample the index into ``row_triggers`` (-1: none)
    trigger_rows: torch.Tensor | None = None
    row_triggers: list[Trigger] | None = None

    @property
    def poison_indices(self) -> torch.Tensor:
        return torch.nonzero(self.poison_mask).flatten()

    def triggered(self) -> PoisonedDataset:
        """This dataset with every pending trigger (``trigger_stage="after-augment"``) applied,
        as ``trigger_stage="poisoning"`` would have made it; itself when none is pending."""
        if self.trigger_rows is None or self.row_triggers is None:
            return self
        x = apply_per_row(self.x, self.trigger_rows, self.row_triggers)
        out = PoisonedDataset(x, self.y, self.classes, self.mean, self.std, self.name)
        out.poison_mask, out.clean_y = self.poison_mask, self.clean_y
        return out


def poison_count(data: ArrayDataset, policy: LabelPolicy, rate: float, of: str = "dataset") -> int:
    """How many samples :func:`poison_dataset` poisons: ``round(rate * n)``, ``n`` the dataset
    (``of="dataset"``) or its eligible samples (``of="eligible"``); an :class:`InputError`
    naming the largest rate that fits when more are asked than the policy allows."""
    eligible = int(policy.eligible(data.y).sum())
    base = len(data) if of == "dataset" else eligible
    count = round(rate * base)
    if count > eligible:
        most = math.floor(1000 * eligible / base) / 1000 if base else 0
        raise InputError(
            f"rate {rate:g} asks for {count} poisoned samples ({rate:.1%} of {base}) but only "
            f"{eligible} are eligible under {policy.name}; lower the rate to at most {most:g}."
        )
    return count


def poison_dataset(
    data: ArrayDataset,
    trigger: Trigger | Sequence[Trigger],
    policy: LabelPolicy,
    rate: float = 0.1,
    of: str = "dataset",
    seed: int = 0,
    transform: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    batch_size: int = 512,
    trigger_stage: str = "poisoning",
) -> PoisonedDataset:
    """Poison ``data``; see the module (``trigger_stage``: ``"poisoning"``, the default, or
    ``"after-augment"``)."""
    if trigger_stage not in TRIGGER_STAGES:
        raise InputError(
            f"unknown trigger_stage {trigger_stage!r}; use {' or '.join(TRIGGER_STAGES)}."
        )
    if of not in ("dataset", "eligible"):
        raise InputError(f"of must be 'dataset' or 'eligible', got {of!r}.")
    if not 0 <= rate <= 1:
        raise InputError(f"the poisoning rate must be in [0, 1], got {rate}.")
    triggers = [trigger] if isinstance(trigger, Trigger) else list(trigger)
    if not triggers or not all(isinstance(t, Trigger) for t in triggers):
        raise InputError("poison_dataset needs a Trigger or a non-empty sequence of Triggers.")
    eligible = torch.nonzero(policy.eligible(data.y)).flatten()
    count = poison_count(data, policy, rate, of)
    pick = eligible[torch.randperm(len(eligible), generator=generator(seed))[:count]]
    pick = pick.sort().values
    x, y = data.x.clone(), data.y.clone()
    which = torch.arange(count) % len(triggers)
    for s in range(0, count, batch_size):
        idx = pick[s : s + batch_size]
        xs = x[idx]
        if transform is not None:
            xs = transform(xs, y[idx])
        if trigger_stage == "poisoning":
            xs = apply_per_row(xs, which[s : s + batch_size], triggers)
        x[idx] = xs.to(x.dtype)
        y[idx] = policy(y[idx])
    out = PoisonedDataset(x, y, data.classes, data.mean, data.std, f"{data.name}+poison")
    out.poison_mask = torch.zeros(len(data), dtype=torch.bool)
    out.poison_mask[pick] = True
    out.clean_y = data.y.clone()
    if trigger_stage == "after-augment":
        out.trigger_rows = torch.full((len(data),), -1, dtype=torch.long)
        out.trigger_rows[pick] = which
        out.row_triggers = triggers
    return out
