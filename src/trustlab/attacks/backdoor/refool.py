"""Refool's reflection candidates and their selection by trial poisoning.

Liu, Ma, Bailey & Lu, "Reflection Backdoor: A Natural Backdoor Attack on Deep Neural Networks",
ECCV 2020. The trigger is a reflection (:class:`~trustlab.attacks.backdoor.triggers.
ReflectionTrigger`: in-focus, out-of-focus or ghost) added to *target-class* images whose labels
never change (clean-label). Not every reflection makes a good trigger, so the paper ranks a pool
of candidates by how well they work (its Algorithm 1). trustlab follows the authors' code
(``strategy.py``, ``main``) and TrojanZoo's ``Refool.attack`` where they differ from the paper:

1. every candidate starts with weight ``W = 1``;
2. each round draws the candidates that poison the training set *at random in proportion to*
   ``W`` (the paper's Algorithm 1 takes the top ones; the authors' ``random.choices(...,
   sample_weights, ...)`` and TrojanZoo, which notes the conflict and follows the code, sample),
   trains a model, and sets the weight of each used candidate to its attack success rate on a
   validation set and of every other candidate, tried before or never, to the median of the used
   ones' (the authors' ``sample_weights[:] = median`` before writing the used ones' scores);
3. the final attack uses the candidate of highest weight.

Sampling matters: with a top-``keep`` rule every unused candidate has the median weight, so the
losers of one round tie with the untried ones and come back first; in 16 rounds of 8 over 69
candidates with random trial ASRs that tried the same 12 candidates (10 of 10 seeds); drawing in
proportion to ``W`` tried 56-63 (mean 59.8), about the 59 of uniform draws.

:func:`reflection_candidates` builds the pool as the authors' ``scripts/insert_reflection.py``
does: each reflection is blended into background photographs until a blend passes their filter
(SSIM between blend and transmission layer inside (0.7, 0.85), the reflection not dominating);
the reflection layer of that blend is the candidate, and the trigger mixes it into an image
with weights proportional to their mean brightness (``strategy.py``'s ``blend_image``).
:func:`select_reflections` runs the rounds with trustlab's trainer. Defaults: every bundled
photograph x three models (69 tried; those no background accepts are left out), ``keep = 8``,
``rounds = 16`` (the authors' ``strategy.py``; it scores 200 candidates), poisoning rate 5% of
the training set (the paper's headline regime is < 3.3%).

Departures from the authors' code:

- the pool: scikit-image's 23 photographs, each tried with all three reflection models against
  the other bundled photographs as backgrounds, one candidate per (reflection, model): the first
  background (in a seeded order) that passes the filter. The authors loop over backgrounds
  first (PascalVOC "person" images) and keep, for each background, the first "cat" reflection
  that passes, so one reflection can become several candidates; they draw ghost (probability
  0.39) or out-of-focus at random per blend and have no in-focus branch (the paper's type I);
- the draw: the authors draw one candidate per poisoned image, with replacement
  (``random.choices``, ``k`` = the poisoned images, 40% of the target class), so a round uses a
  varying number of distinct candidates in shares that follow ``W``; trustlab draws ``keep``
  distinct candidates without replacement, each in proportion to its weight among those left
  (:func:`draw_candidates`, seeded), and spreads them over the poisoned images in turn. When
  every weight is 0 (all used candidates scored 0) trustlab draws uniformly; the authors'
  ``random.choices`` would stop with an error;
- the score: the authors count, per reflection, the attacked test images the model gets wrong
  (their eval log lists misclassified images: an untargeted count, not a rate), and score only
  the reflections that appear in that log; a used reflection with no misclassified image keeps
  the median of the logged counts. trustlab (as TrojanZoo) scores every used candidate with its
  targeted ASR on the validation set's non-target images, 0 included, and the median is over
  all used candidates. The validation set is a held-out part of the training split;
- the final trigger is the single best candidate (:attr:`Selection.best`), as TrojanZoo's Refool
  does after consulting the first author (the paper's Algorithm 1 returns a set; the authors'
  code stops at the weights). Ties in the final weights go by a seeded permutation (TrojanZoo's
  ``argmax``: the first index), so the selection is deterministic for a seed.
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
from trustlab.attacks.backdoor.poison import TRIGGER_STAGES, poison_dataset
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


def draw_candidates(weights: Sequence[float], k: int, g: torch.Generator) -> list[int]:
    """``k`` distinct indices drawn one after another, each with probability proportional to its
    weight among those not yet drawn (sampling without replacement, as ``torch.multinomial``
    with ``replacement=False``); once every remaining weight is 0, uniformly among the rest
    (the authors' ``random.choices`` would fail there: all weights zero).

    Example::

        draw_candidates([1.0, 0.0, 3.0], 2, generator(0))  # 2 is drawn first 3 times in 4
    """
    w = torch.tensor([float(x) for x in weights], dtype=torch.float64)
    if bool((w < 0).any()) or not bool(torch.isfinite(w).all()):
        raise InputError("candidate weights must be finite and >= 0.")
    if not 0 <= k <= len(w):
        raise InputError(f"cannot draw {k} of {len(w)} candidates.")
    out: list[int] = []
    left = torch.ones(len(w), dtype=torch.bool)
    for _ in range(k):
        p = torch.where(left, w, 0.0)
        if float(p.sum()) <= 0:
            p = left.double()
        i = int(torch.multinomial(p, 1, generator=g))
        out.append(i)
        left[i] = False
    return out


def update_weights(n: int, asr: dict[int, float]) -> list[float]:
    """Algorithm 1's weight update as the authors' ``strategy.py`` does it: the candidates used
    this round (the keys of ``asr``) get their score, every other one the median of the used
    ones' scores (tried in an earlier round or never).

    Example::

        update_weights(4, {0: 0.9, 2: 0.1, 3: 0.4})  # [0.9, 0.4, 0.1, 0.4]
    """
    med = statistics.median(asr.values())
    return [asr.get(i, med) for i in range(n)]


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
    trigger_stage: str = "poisoning",
) -> Selection:
    """Rank ``candidates`` by trial poisoning (Refool's Algorithm 1 with the authors' sampling;
    see the module).

    Each round draws ``keep`` distinct candidates with probability proportional to their weights
    (:func:`draw_candidates`, seeded by ``seed``), poisons ``rate`` of ``train`` with them in
    turn, trains ``trial``'s model, and updates the weights (:func:`update_weights`: the used
    candidates' ASR on ``val``, every other one the median of those).

    Args:
        candidates: the pool (:func:`reflection_candidates`).
        train, val: the data to poison and the held-out data the ASR is measured on.
        trial: ``trial(poisoned_train, round) -> trained model``: trains a fresh model on the
            poisoned set (the caller decides architecture and budget).
        target: the target class (default 0).
        rate: the fraction of ``train`` poisoned in each round (default 0.05; clean-label,
            target class only).
        keep: how many candidates poison each round (default 8).
        rounds: default 16, the authors' ``strategy.py`` ``--n_iterations``.
        seed: the draws and each round's poisoned rows (default 0).
        device: where the ASR is measured (default ``"cpu"``).
        progress: called as ``progress(round, record)`` after each round (default None).
        trigger_stage: ``"poisoning"`` (default: triggers in the stored images, augmentation on
            top) or ``"after-augment"``, as :func:`~trustlab.attacks.backdoor.poison.
            poison_dataset`; pass the final attack's, so the trial models learn the trigger the
            way the final model does.

    Returns the candidates ranked by their final weight (best first; ties by a seeded
    permutation); each round's record has the candidates used and their ASRs.
    """
    if not candidates:
        raise InputError("select_reflections needs at least one candidate reflection.")
    if keep < 1 or rounds < 1:
        raise InputError(f"keep and rounds must be >= 1, got keep={keep}, rounds={rounds}.")
    if trigger_stage not in TRIGGER_STAGES:
        raise InputError(
            f"unknown trigger_stage {trigger_stage!r}; use {' or '.join(TRIGGER_STAGES)}."
        )
    keep = min(keep, len(candidates))
    policy = CleanLabel(target, train.num_classes)
    weights = [1.0] * len(candidates)
    g = generator(derive_seed(seed, "draw"))
    history: list[dict[str, Any]] = []
    for r in range(rounds):
        used = draw_candidates(weights, keep, g)
        poisoned = poison_dataset(
            train,
            [candidates[i] for i in used],
            policy,
            rate,
            seed=derive_seed(seed, "round", r),
            trigger_stage=trigger_stage,
        )
        model = trial(poisoned, r)
        asr = {
            i: evaluate_backdoor(model, val, candidates[i], policy, device=device)["asr"]
            for i in used
        }
        weights = update_weights(len(candidates), asr)
        record = {"round": r, "used": used, "asr": [asr[i] for i in used]}
        history.append(record)
        if progress is not None:
            progress(r, record)
    order = torch.randperm(len(candidates), generator=generator(seed)).tolist()
    ranked = _top(weights, len(candidates), order)
    return Selection([candidates[i] for i in ranked], ranked, weights, history)
