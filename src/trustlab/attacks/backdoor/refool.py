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

:func:`reflection_candidates` builds the pool as the authors' ``scripts/insert_reflection.py``
does: each reflection is blended into background photographs until a blend passes their filter
(SSIM between blend and transmission layer inside (0.7, 0.85), the reflection not dominating);
the reflection layer of that blend is the candidate, and the trigger mixes it into an image
with weights proportional to their mean brightness (``strategy.py``'s ``blend_image``).
:func:`select_reflections` runs the rounds with trustlab's trainer. Defaults: every bundled
photograph x three models (69 tried; those no background accepts are left out), ``keep = 8``,
``rounds = 16`` (the authors' ``strategy.py``; it scores 200 candidates), poisoning rate 5% of
the training set (the paper's headline regime is < 3.3%).

Departures from the authors' code: the candidate pool is scikit-image's 23 photographs, each
tried with all three reflection models, backgrounds the other bundled photographs (the authors
blend PascalVOC "cat" reflections into "person" backgrounds, draw ghost or out-of-focus at
random with probability 0.39 for ghost, and have no in-focus branch, which is the paper's type
I); the validation set is a held-out part of the training split; the ASR of a candidate is
measured on that set's non-target images (trustlab's ASR). The final attack uses the single best
candidate (:attr:`Selection.best`), as TrojanZoo's Refool does after consulting the first
author (the paper's Algorithm 1 returns a set; the authors' code samples candidates in
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
from trustlab.attacks.backdoor.triggers import (
    REFLECTIONS,
    ReflectionTrigger,
    _blend_linear,
    _resize,
    _working_size,
    draw_reflection_params,
)
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
        weight: the reflection layer's intensity, the authors' ``1 - alpha_t`` (default 0.4, in
            their range 0.05-0.45; fixed so that the recipe's trigger does not vary by seed).

    The trigger mixes the layer into each image with weights proportional to their mean
    brightness (the authors' ``blend_image``). Shapes: the layer is made at the authors' working
    size (560 px) and resized to the data's ``(C, H, W)``; its blur, shift and vignette are
    drawn from the attack's seed.

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
    weight: float | None = None,
    seed: int = 0,
    backgrounds: Sequence[str | torch.Tensor] | None = None,
    ssim_range: tuple[float, float] = (0.7, 0.85),
    tries: int | None = None,
    max_image_size: int = 560,
) -> list[ReflectionTrigger]:
    """Refool's reflection candidates, made and filtered as the authors' code does
    (``scripts/insert_reflection.py``, ``gen_main_func``; TrojanZoo's ``gen_reflect_imgs``).

    For each (image, reflection model) the reflection is blended into background photographs
    (:func:`~trustlab.attacks.backdoor.triggers.refool_blend`, fresh random parameters per try)
    until a blend passes the authors' filter: the reflection layer no brighter on average than
    0.8 times the rest of the blend, the blend's maximum at least 0.1, and the SSIM between the
    blend and the transmission layer (the dimmed background) strictly inside ``ssim_range``
    (neither too similar nor too different). The layer of the first passing blend is the
    candidate; a reflection no background accepts is left out.

    Args:
        images: reflection photographs (bundled names or ``(C, H, W)`` tensors in [0, 1]);
            default every bundled scikit-image photograph.
        models: the reflection models (default all three; the authors' code draws ghost or
            out-of-focus at random, ghost with probability 0.39, and has no in-focus branch).
        channels, size: the data's channels and ``(H, W)`` (default 3, (32, 32)).
        weight: the reflection intensity ``1 - alpha_t``; default None: drawn per try,
            ``U(0.05, 0.45)`` as the authors do.
        seed: the order of the backgrounds and every random parameter.
        backgrounds: the photographs reflections are blended into; default every bundled
            photograph but the reflection itself (the authors use PascalVOC "person" images).
        ssim_range: default (0.7, 0.85), the authors'.
        tries: backgrounds tried per candidate; default None: each background once.
        max_image_size: the working size's longer side (default 560, the authors').

    Returns the candidates in (image, model) order, each with ``ssim`` and ``background`` (the
    accepting blend's SSIM and background) set; an :class:`InputError` when none passes.
    """
    from skimage.metrics import structural_similarity

    from trustlab.data.synthetic import BUNDLED_IMAGES, bundled_image

    images = list(BUNDLED_IMAGES if images is None else images)
    if not images:
        raise InputError("no reflection images; pass names of bundled photographs or tensors.")
    for m in models:
        if m not in REFLECTIONS:
            raise InputError(f"unknown reflection model {m!r}; use {', '.join(REFLECTIONS)}.")
    lo, hi = ssim_range
    if not 0 <= lo < hi <= 1:
        raise InputError(
            f"ssim_range must be (low, high) with 0 <= low < high <= 1, got {ssim_range}."
        )
    pool = list(BUNDLED_IMAGES if backgrounds is None else backgrounds)
    named = [b if isinstance(b, str) else f"background{k}" for k, b in enumerate(pool)]
    backs = []  # each background at its working size: before and after the gamma
    for b in pool:
        b = bundled_image(b) if isinstance(b, str) else b.float()
        hw = _working_size(b.shape[-2], b.shape[-1], max_image_size)
        b = _resize(b, 3, hw)
        backs.append((b, b**2.2))
    out = []
    for i, img in enumerate(images):
        source = img if isinstance(img, str) else "image"
        refl = bundled_image(img) if isinstance(img, str) else img.float()
        at_size: dict[tuple[int, int], torch.Tensor] = {}  # the reflection per working size
        usable = [k for k, b in enumerate(pool) if not (isinstance(img, str) and b == img)]
        if not usable:
            raise InputError("no background photographs to blend the reflections into.")
        for m in models:
            g = generator(derive_seed(seed, "refl", i, m))
            order = [usable[k] for k in torch.randperm(len(usable), generator=g).tolist()]
            for k in order[: tries if tries is not None else len(order)]:
                params = draw_reflection_params(g, weight)
                t_srgb, t = backs[k]
                hw = tuple(t.shape[-2:])
                if hw not in at_size:
                    at_size[hw] = _resize(refl, 3, hw) ** 2.2
                blended, trans, layer = _blend_linear(
                    at_size[hw], t_srgb, t, m, params, max_image_size
                )
                if not (
                    float(layer.mean()) <= 0.8 * float((blended - layer).mean())
                    and float(blended.max()) >= 0.1
                ):
                    continue
                ssim = float(
                    structural_similarity(
                        blended.numpy(), trans.numpy(), channel_axis=0, data_range=1.0
                    )
                )
                if lo < ssim < hi:
                    trig = ReflectionTrigger.from_layer(
                        layer, m, params, source, channels, size, max_image_size
                    )
                    trig.ssim, trig.background = ssim, named[k]
                    out.append(trig)
                    break
    if not out:
        raise InputError(
            f"no reflection passed the filter (SSIM in {ssim_range}); give more images or "
            "backgrounds, or more tries."
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
    rounds: int = 16,
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
        keep: how many candidates poison each round (default 8).
        rounds: default 16, the authors' ``strategy.py`` ``--n_iterations``.

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
