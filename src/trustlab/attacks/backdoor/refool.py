"""Refool's reflection candidates and their selection by trial poisoning.

Liu, Ma, Bailey & Lu, "Reflection Backdoor: A Natural Backdoor Attack on Deep Neural Networks",
ECCV 2020. The trigger is a reflection (:class:`~trustlab.attacks.backdoor.triggers.
ReflectionTrigger`: in-focus, out-of-focus or ghost) added to *target-class* images whose labels
never change (clean-label). Not every reflection makes a good trigger, so the paper ranks a pool
of candidates by how well they work (its Algorithm 1, with the weight update of the authors'
code as TrojanZoo documents it):

1. every candidate starts with weight ``W = 1``;
2. each round poisons the training set with the ``keep`` candidates of highest weight (spread
   over the poisoned target-class images), trains a model, and sets the weight of each used
   candidate to its attack success rate on a validation set, and of each unused one to the
   median of the used ones' (so untried candidates rank in the middle and get tried later);
3. the paper poisons with the final ``keep`` candidates of highest weight.

:func:`reflection_candidates` builds the pool from scikit-image's bundled photographs (nothing is
downloaded), each with all three reflection models; :func:`select_reflections` runs the rounds
with trustlab's trainer. Defaults: every bundled photograph x three models (69 candidates),
``keep = 8``, ``rounds = 3``, poisoning rate 5% of the training set (the paper's headline regime
is < 3.3%; its ``keep`` and round count depend on the dataset and are not fixed).

Departures from the paper: the candidate pool is scikit-image's 23 photographs (the paper draws
thousands from PascalVOC); the validation set is a held-out part of the training split; the ASR of
a candidate is measured on that set's non-target images (trustlab's ASR). The final attack uses
the single best candidate (:attr:`Selection.best`), as TrojanZoo's Refool does after consulting
the first author (the paper's Algorithm 1 returns a set; the authors' code samples candidates in
proportion to ``W`` instead of taking the top ``keep``; we follow the paper there). Ties in the
weights are broken by a seeded permutation, so the selection is deterministic for a seed.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from trustlab.attacks.backdoor.artifact import evaluate_backdoor
from trustlab.attacks.backdoor.labels import CleanLabel, LabelPolicy
from trustlab.attacks.backdoor.poison import poison_dataset
from trustlab.attacks.backdoor.recipe import BackdoorRecipe
from trustlab.attacks.backdoor.triggers import REFLECTIONS, ReflectionTrigger
from trustlab.data.datasets import ArrayDataset
from trustlab.errors import InputError
from trustlab.registry import BACKDOORS
from trustlab.utils.seed import derive_seed, generator

_PAPER = (
    "Liu, Ma, Bailey, Lu. Reflection Backdoor: A Natural Backdoor Attack on Deep Neural "
    "Networks. ECCV 2020."
)


@BACKDOORS.register(
    "refool",
    "out-of-focus reflection of a bundled photograph, target-class images only (clean label)",
    paper=_PAPER,
    threat="data poisoning (clean label): rate of the training set, target class only",
    injector="data",
    rate=0.05,
)
class RefoolBackdoor(BackdoorRecipe):
    """Refool (Liu et al., ECCV 2020) with one fixed reflection: the reflection of a bundled
    photograph added to target-class images whose labels never change (clean label).
    ``rate`` counts the whole training set (all of it drawn from the target class).

    Args:
        reflection: a bundled scikit-image photograph (default ``"chelsea"``); the paper
            selects its reflections from PascalVOC by trial poisoning
            (:func:`select_reflections`), which this one-trigger recipe skips.
        model: the reflection model: ``"in-focus"``, ``"out-of-focus"`` (default) or ``"ghost"``.
        weight: the reflection's intensity weight (default 0.4).

    Shapes: the reflection is made at the data's ``(C, H, W)``; its blur and shift are drawn
    from the attack's seed.

    Example::

        art = train_backdoor("refool", train, test, model, settings, rate=0.05)
        art.policy.state()  # {"policy": "clean-label", "target": 0}
    """

    def __init__(
        self, reflection: str = "chelsea", model: str = "out-of-focus", weight: float = 0.4
    ) -> None:
        self.reflection, self.model, self.weight = reflection, model, weight

    def trigger(self, data: ArrayDataset, seed: int = 0, **surrogate: object) -> ReflectionTrigger:
        c, size = data.x.shape[1], tuple(data.x.shape[-2:])
        return ReflectionTrigger(self.reflection, self.model, self.weight, c, size, seed)

    def policy(self, target: int, num_classes: int) -> LabelPolicy:
        return CleanLabel(target, num_classes)


def reflection_candidates(
    images: Sequence[str | torch.Tensor] | None = None,
    models: Sequence[str] = REFLECTIONS,
    channels: int = 3,
    size: tuple[int, int] = (32, 32),
    weight: float = 0.4,
    seed: int = 0,
) -> list[ReflectionTrigger]:
    """One :class:`ReflectionTrigger` per (image, reflection model); ``images`` defaults to every
    bundled scikit-image photograph (names or ``(C, H, W)`` tensors in [0, 1])."""
    from trustlab.data.synthetic import BUNDLED_IMAGES

    images = list(BUNDLED_IMAGES if images is None else images)
    if not images:
        raise InputError("no reflection images; pass names of bundled photographs or tensors.")
    for m in models:
        if m not in REFLECTIONS:
            raise InputError(f"unknown reflection model {m!r}; use {', '.join(REFLECTIONS)}.")
    out = []
    for i, img in enumerate(images):
        for m in models:
            out.append(
                ReflectionTrigger(img, m, weight, channels, size, derive_seed(seed, "refl", i, m))
            )
    return out


def candidate_name(trigger: ReflectionTrigger) -> str:
    """``"<photograph>/<reflection model>"``, e.g. ``"chelsea/ghost"``."""
    return f"{trigger.source}/{trigger.model}"


@dataclass
class Selection:
    """The result of :func:`select_reflections`: the kept triggers (best first), every
    candidate's final weight, and each round's record.

    Example::

        sel = select_reflections(candidates, train, val, trial, target=0, rate=0.05)
        poisoned = poison_dataset(train, sel.best, CleanLabel(0, train.num_classes), 0.05)
    """

    triggers: list[ReflectionTrigger]
    indices: list[int]
    weights: list[float]
    rounds: list[dict[str, Any]]

    @property
    def best(self) -> ReflectionTrigger:
        """The candidate of highest weight (the final trigger)."""
        return self.triggers[0]


def _top(weights: list[float], k: int, order: list[int]) -> list[int]:
    """The ``k`` indices of highest weight; ties go by ``order`` (a seeded permutation)."""
    rank = {i: r for r, i in enumerate(order)}
    return sorted(range(len(weights)), key=lambda i: (-weights[i], rank[i]))[:k]


def select_reflections(
    candidates: Sequence[ReflectionTrigger],
    train: ArrayDataset,
    val: ArrayDataset,
    trial: Callable[[ArrayDataset, int], nn.Module],
    target: int = 0,
    rate: float = 0.05,
    keep: int = 8,
    rounds: int = 3,
    seed: int = 0,
    device: torch.device | str = "cpu",
    progress: Callable[[int, dict[str, Any]], None] | None = None,
) -> Selection:
    """Rank ``candidates`` by trial poisoning (Refool's Algorithm 1; see the module).

    Args:
        trial: ``trial(poisoned_train, round) -> trained model``: trains a fresh model on the
            poisoned set (the caller decides architecture and budget).
        train, val: the data to poison and the held-out data the ASR is measured on.
        rate: the fraction of ``train`` poisoned in each round (clean-label, target class only).
        keep: how many candidates poison each round.

    Returns the candidates ranked by their final weight (best first).
    """
    if not candidates:
        raise InputError("select_reflections needs at least one candidate reflection.")
    if keep < 1 or rounds < 1:
        raise InputError(f"keep and rounds must be >= 1, got keep={keep}, rounds={rounds}.")
    keep = min(keep, len(candidates))
    policy = CleanLabel(target, train.num_classes)
    weights = [1.0] * len(candidates)
    order = torch.randperm(len(candidates), generator=generator(seed)).tolist()
    history: list[dict[str, Any]] = []
    for r in range(rounds):
        used = _top(weights, keep, order)
        poisoned = poison_dataset(
            train, [candidates[i] for i in used], policy, rate, seed=derive_seed(seed, "round", r)
        )
        model = trial(poisoned, r)
        asr = {
            i: evaluate_backdoor(model, val, candidates[i], policy, device=device)["asr"]
            for i in used
        }
        med = statistics.median(asr.values())
        weights = [asr.get(i, med) for i in range(len(candidates))]
        record = {"round": r, "used": used, "asr": [asr[i] for i in used]}
        history.append(record)
        if progress is not None:
            progress(r, record)
    ranked = _top(weights, len(candidates), order)
    return Selection([candidates[i] for i in ranked], ranked, weights, history)
