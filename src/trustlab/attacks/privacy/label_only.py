"""Label-only membership inference: Choquette-Choo, Tramer, Carlini, Papernot, "Label-Only
Membership Inference Attacks", ICML 2021.

The attacker sees only the target's predicted label (its argmax). Training points tend to lie
farther from the decision boundary than unseen points, so the attacker perturbs an example and
counts how often the label stays correct. Three attacks are here, each registered in
:data:`~trustlab.registry.PRIVACY_ATTACKS` with a scoring hook
(:mod:`trustlab.attacks.privacy.audit`):

- ``label-only`` (:func:`label_noise_scores`, the default label-only attack): the paper's
  **noise-robustness** estimate of the distance to the boundary. Each example gets ``samples``
  queries ``clip(x + sigma * z, 0, 1)`` (``z`` standard Gaussian) at every ``sigma`` of a ladder.
  The score is the fraction of correct labels over the example itself and all its noisy copies
  (``(1 + sum_sigma k_sigma) / (1 + S * samples)``, where ``k_sigma`` is how many of the copies
  at ``sigma`` keep the true label), or 0 if the example itself is misclassified.
- ``label-only-hsj`` (:func:`label_boundary_scores`): the paper's **boundary distance**: the
  L2 distance to the adversarial example found by HopSkipJump (Chen, Jordan, Wainwright, S&P
  2020), a decision-based attack that needs only labels; 0 if the example is misclassified.
- ``label-only-augment`` (:func:`label_augment_scores`): the paper's **data-augmentation**
  attack with translations. The example and its ``4d`` shifts by ``|dy| + |dx| = d`` pixels
  (``4d + 1`` queries, edge pixels replicated) are queried. The score is how many of them keep
  the true label, or 0 if the example itself is misclassified. ``flip=True`` adds the horizontal
  mirror of each one (this is trustlab's option; the authors' code uses translations and
  rotations).

:func:`gap_scores` is the paper's "gap attack" baseline: 1 if the example is correctly
classified, else 0 (one query). Higher scores always mean "member".

**Label-only by construction.** Every query goes through :class:`LabelOracle`, which keeps the
model private and returns only argmax labels (int64) while counting its queries. The attack
functions never see logits, and they also accept a ``LabelOracle`` built on any callable that
returns labels (for example a remote API).

**Thresholds.** The paper picks one threshold on a shadow ("source") model and reports accuracy
and precision. trustlab reports threshold-free metrics (AUC, TPR at 1% / 0.1% FPR; see
:func:`trustlab.metrics.privacy.membership_metrics`), the same way it reports its other threshold
attacks, so only a score is needed and no shadow model is trained.

Choices and deviations, compared with the paper and the authors' code
(github.com/cchoquette/membership-inference: ``attack_features_tf1.continuous_rand_robust``,
``attack_features.augmentation_attack``, ``utils.create_translates``, ``pipeline.py``):

- **Sigma ladder.** The code runs each ``sigma`` of ``0.02, 0.03, ..., 0.10`` (images in
  ``[0, 1]``) as a *separate* threshold attack calibrated on the source model
  (``pipeline.py`` prints one result per sigma).
  With no source model, trustlab pools the whole ladder (the default ``sigmas``) into one score,
  so robustness at growing noise levels estimates the distance. For a linear boundary at
  distance ``d`` the expected score grows with ``d``. ``sigmas=(s,)`` gives the authors'
  single-sigma statistic, and :func:`label_noise_counts` returns the per-sigma counts for anyone
  who wants to pick a sigma on shadow data.
- **Queries.** The code draws 2,500 noisy copies per example and sigma (``noise_samples``;
  ``pipeline.py``'s flag says 5,000 but the function reads at most 2,500). trustlab's default is
  ``samples=250`` per sigma, 2,250 per example over the 9 sigmas, about the authors' budget for
  one attack.
- **Measured** on digits (an MLP trained on 100 digits to train accuracy 1 and test accuracy
  0.87; 100 members against 100 non-members): AUC 0.625 with the defaults (2,105 queries per
  example), 0.595 with 25 per sigma; the loss attack 0.725, the gap attack 0.565. The
  authors' sigmas are small for 16x16 inputs. On an MLP trained on 300 digits, every member
  and 88% of the non-members keep all their noisy labels, which ties them at the top score,
  so TPR at 1% FPR is 0. ``sigmas=(0.1, 0.2, 0.3, 0.5)`` reaches AUC 0.680 with 25 queries
  per sigma.
- **Misclassified points** score 0, as in the paper and the code, and they get no further
  queries (the code does the same). A correctly classified point scores at least
  ``1 / (1 + S * samples)`` (the example's own correct label counts as one query that passed).
  Among correctly classified points this ranks exactly like the code's fraction; it only
  separates "correct, but no noisy copy correct" (which ties with misclassified points in the
  code) from "misclassified".
- **Common random numbers.** Every example is perturbed by the same seeded noise draws ``z``
  (generated in fixed blocks, so the scores do not depend on ``batch_size`` or on which other
  examples are scored), and every sigma scales the same ``z``. The code draws fresh noise per
  example and sigma. Each example's marginal distribution is the same either way; shared draws
  lower the variance of comparisons between examples and, without clipping, make each sigma's
  count monotone in a linear model's margin.
- **Augmentation score.** The code feeds the ``4d + 1`` correct/incorrect bits to a per-class
  neural attack model trained on the source model. trustlab thresholds their count instead
  (its choice; no shadow model needed). Translations follow
  ``create_translates``: the identity plus the ``4d`` shifts with ``|dy| + |dx| = d``, with
  ``scipy.ndimage.shift(mode="nearest")`` edge replication. Default ``d = 1`` (5 queries), as
  in the code. Rotations are not implemented.
- **HopSkipJump** (``label-only-hsj``, :func:`label_boundary_scores`) follows cleverhans's
  ``HopSkipJumpAttack`` (untargeted, L2, geometric step-size search), which the authors' code
  calls with its defaults: 64 iterations, ``min(100 sqrt(t), 10000)`` gradient queries at
  iteration ``t``, binary-search threshold ``1 / D^1.5``. That is about 33,000 queries per
  example on 16x16 digits. trustlab runs a chunk of examples in lockstep (every query of an
  iteration, for all of them, in batched forward passes) instead of one example at a time.
  It draws its uniform-noise starts 16 at a time, up to 10,000 per example, as cleverhans
  does. An example with no misclassified start scores ``sqrt(D)`` (cleverhans stops with an
  error). The step-size search halves at most 60 times (cleverhans has no limit). Measured
  on the same MLP: AUC 0.628 and TPR 0.04 at 1% FPR with the defaults (33,060 queries per
  example, 155 s for 200 examples on one loaded CPU core), 0.621 with 4 iterations (659
  queries). On a cnn-small trained the same way, 4 iterations give AUC 0.678, against 0.590
  for the noise attack at 25 queries per sigma and 0.727 for the loss attack.
- **Not implemented:** the C&W white-box distance and rotations.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from trustlab.attacks.privacy.audit import MembershipAudit
from trustlab.data.datasets import ArrayDataset, as_array_dataset
from trustlab.errors import InputError
from trustlab.registry import PRIVACY_ATTACKS
from trustlab.utils.device import resolve_device
from trustlab.utils.modules import device_of, eval_mode
from trustlab.utils.progress import progress_bar
from trustlab.utils.seed import derive_seed, generator
from trustlab.utils.validate import check_float, check_int

__all__ = [
    "NOISE_BLOCK",
    "SIGMAS",
    "LabelOracle",
    "as_oracle",
    "gap_scores",
    "label_augment_scores",
    "label_boundary_scores",
    "label_noise_counts",
    "label_noise_scores",
    "translations",
]

#: the authors' Gaussian-noise ladder for images in [0, 1] (``pipeline.py``, attack ``g``)
SIGMAS: tuple[float, ...] = (0.02, 0.03, 0.04, 0.05, 0.06, 0.07, 0.08, 0.09, 0.10)
#: noise draws are generated in blocks of this many samples, each block seeded on its own, so a
#: sample's noise depends only on the seed and its index
NOISE_BLOCK = 64


class LabelOracle:
    """Label-only access to a classifier: ``oracle(x)`` returns the predicted labels and nothing
    else. The attacks of this module query the target only through it.

    Args:
        target: an ``nn.Module`` returning logits ``(N, K)``, whose argmax is returned (it is
            called in eval mode, without gradients, on ``device``); or any callable
            ``x -> labels`` returning ``(N,)`` integer labels (a label-only API).
        device: where a module's queries run; default None (the module's own device).
        batch_size: the most inputs sent in one call of the target; default 2048.

    Attributes:
        queries: the number of inputs labelled so far.

    Shapes: ``x`` ``(N, ...)`` float -> ``(N,)`` int64 on CPU.

    Example::

        oracle = LabelOracle(model)
        labels = oracle(x)  # (N,) int64; oracle.queries == len(x)
    """

    def __init__(
        self,
        target: nn.Module | Callable[[torch.Tensor], torch.Tensor],
        device: str | torch.device | None = None,
        batch_size: int = 2048,
    ) -> None:
        if not callable(target):
            raise InputError(
                f"a label oracle needs a model or a callable x -> labels, got "
                f"{type(target).__name__}."
            )
        self._target = target
        self._module = isinstance(target, nn.Module)
        if self._module:
            self._device = resolve_device(device) if device is not None else device_of(target)
        else:
            self._device = resolve_device(device) if device is not None else torch.device("cpu")
        self.batch_size = check_int("batch_size", batch_size, minimum=1)
        self.queries = 0

    @torch.no_grad()
    def _labels(self, x: torch.Tensor) -> torch.Tensor:
        if self._module:
            assert isinstance(self._target, nn.Module)
            with eval_mode(self._target):
                out = self._target(x.to(self._device))
            if out.dim() != 2:
                raise InputError(
                    f"the model returned {tuple(out.shape)}; a label oracle needs logits (N, K)."
                )
            return out.argmax(-1)
        out = torch.as_tensor(self._target(x.to(self._device)))
        if out.shape != (len(x),) or out.is_floating_point() or out.dtype == torch.bool:
            raise InputError(
                f"the label function returned {out.dtype} {tuple(out.shape)} for {len(x)} "
                f"inputs; it must return one integer label per input, shape ({len(x)},)."
            )
        return out

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """The predicted labels of ``x`` ``(N, ...)``: ``(N,)`` int64 on CPU."""
        out = [self._labels(chunk).long().cpu() for chunk in x.split(self.batch_size)]
        self.queries += len(x)
        return torch.cat(out) if out else torch.zeros(0, dtype=torch.long)


def as_oracle(
    target: nn.Module | LabelOracle | Callable[[torch.Tensor], torch.Tensor],
    device: str | torch.device | None = None,
    batch_size: int = 2048,
) -> LabelOracle:
    """``target`` itself if it is a :class:`LabelOracle`, else a new oracle on it."""
    if isinstance(target, LabelOracle):
        return target
    return LabelOracle(target, device, batch_size)


def _data(data: ArrayDataset | Dataset) -> ArrayDataset:
    ds = as_array_dataset(data)
    if len(ds) == 0:
        raise InputError("the dataset to score is empty; pass at least one labelled example.")
    return ds


def _sigmas(sigmas: Sequence[float]) -> tuple[float, ...]:
    if isinstance(sigmas, (int, float, str)):
        raise InputError(
            f"sigmas must be a sequence of noise levels, got {sigmas!r}; e.g. (0.05,)."
        )
    out = tuple(check_float("sigmas", s, minimum=0.0) for s in sigmas)
    if not out or any(s <= 0 for s in out):
        raise InputError(
            f"sigmas must be one or more noise standard deviations > 0, got {tuple(sigmas)!r}."
        )
    return out


def _noise_block(seed: int, start: int, size: int, shape: tuple[int, ...]) -> torch.Tensor:
    """Standard Gaussian draws ``(size, *shape)`` for noise samples ``start .. start + size``
    (``start`` a multiple of :data:`NOISE_BLOCK`, ``size <= NOISE_BLOCK``)."""
    g = generator(derive_seed(seed, "label-only-noise", start // NOISE_BLOCK))
    return torch.randn((NOISE_BLOCK, *shape), generator=g)[:size]


def label_noise_counts(
    model: nn.Module | LabelOracle | Callable[[torch.Tensor], torch.Tensor],
    data: ArrayDataset | Dataset,
    sigmas: Sequence[float] = SIGMAS,
    samples: int = 250,
    *,
    seed: int = 0,
    clip: bool = True,
    batch_size: int = 2048,
    device: str | torch.device | None = None,
    progress: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Label-only noise robustness per example and sigma (see the module).

    Returns ``(correct, counts)``: ``correct`` ``(N,)`` bool (is the example itself labelled
    correctly) and ``counts`` ``(N, S)`` int64, the number of its ``samples`` noisy copies
    ``clip(x + sigma_s * z, 0, 1)`` labelled correctly at each sigma (0 for misclassified
    examples, which get no noisy queries). ``counts[:, s] / samples`` is the authors' statistic at
    ``sigmas[s]``. Queries: ``N + correct.sum() * S * samples``.
    """
    ds = _data(data)
    sig = _sigmas(sigmas)
    samples = check_int("samples", samples, minimum=1, fix="(noisy queries per example and sigma)")
    batch_size = check_int("batch_size", batch_size, minimum=1)
    oracle = as_oracle(model, device, batch_size)
    x, y = ds.x, ds.y
    correct = oracle(x) == y
    counts = torch.zeros(len(ds), len(sig), dtype=torch.long)
    idx = correct.nonzero().flatten()
    if len(idx) == 0:
        return correct, counts
    xc, yc = x[idx], y[idx]
    shape = tuple(x.shape[1:])
    starts = range(0, samples, NOISE_BLOCK)
    with progress_bar("label-only noise queries", len(starts) * len(sig), progress) as bar:
        for start in starts:  # a loop over noise blocks, sigmas and chunks of examples
            m = min(NOISE_BLOCK, samples - start)
            z = _noise_block(seed, start, m, shape)
            per_pass = max(1, batch_size // m)
            for s, sigma in enumerate(sig):
                for lo in range(0, len(idx), per_pass):
                    xb, yb = xc[lo : lo + per_pass], yc[lo : lo + per_pass]
                    q = xb.unsqueeze(1) + sigma * z.unsqueeze(0)  # (b, m, ...)
                    if clip:
                        q = q.clamp_(0.0, 1.0)
                    labels = oracle(q.reshape(-1, *shape)).view(len(xb), m)
                    counts[idx[lo : lo + per_pass], s] += (labels == yb.unsqueeze(1)).sum(1)
                bar()
    return correct, counts


def label_noise_scores(
    model: nn.Module | LabelOracle | Callable[[torch.Tensor], torch.Tensor],
    data: ArrayDataset | Dataset,
    sigmas: Sequence[float] = SIGMAS,
    samples: int = 250,
    *,
    seed: int = 0,
    clip: bool = True,
    batch_size: int = 2048,
    device: str | torch.device | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """The label-only noise-robustness attack of Choquette-Choo, Tramer, Carlini, Papernot,
    "Label-Only Membership Inference Attacks", ICML 2021. Scores are ``(N,)`` float64 in
    ``[0, 1]``, higher = member: 0 if misclassified, else the fraction of correct labels over the
    example and its ``len(sigmas) * samples`` noisy copies.

    Args:
        model: the target (only its argmax labels are used), a :class:`LabelOracle` or a
            callable ``x -> labels``.
        data: labelled examples, inputs in ``[0, 1]``.
        sigmas: Gaussian noise standard deviations; default :data:`SIGMAS`, the authors' ladder
            ``0.02 .. 0.10`` (pooled here, see the module).
        samples: noisy queries per example and sigma; default 250 (the authors' code: 2,500
            per sigma, one sigma per attack).
        seed: seeds the noise (the same draws for every example and sigma).
        clip: clip noisy inputs to ``[0, 1]`` as the authors' code does; default True.
        batch_size: the most queries per forward pass; default 2048.
        device: where a module's queries run; default its own device.
        progress: a progress bar over the noise blocks (only on a terminal).

    Example::

        scores = label_noise_scores(model, audit_data, seed=0)
    """
    correct, counts = label_noise_counts(
        model, data, sigmas, samples, seed=seed, clip=clip, batch_size=batch_size,
        device=device, progress=progress,
    )  # fmt: skip
    total = 1 + counts.shape[1] * samples
    return torch.where(correct, (1 + counts.sum(1)).double() / total, 0.0).double()


def translations(d: int) -> list[tuple[int, int]]:
    """The authors' translation set for displacement ``d``: ``(0, 0)`` and the ``4d`` shifts
    ``(dy, dx)`` with ``|dy| + |dx| = d`` (``utils.create_translates``), ``4d + 1`` in all."""
    d = check_int("d", d, minimum=0)
    out = [(0, 0)]
    if d == 0:
        return out
    for k in range(4 * d):  # walk the diamond |dy| + |dx| = d, starting at (d, 0)
        side, step = divmod(k, d)
        dy, dx = [(d - step, -step), (-step, -d + step), (-d + step, step), (step, d - step)][side]
        out.append((dy, dx))
    return out


def _shifted(x: torch.Tensor, shifts: list[tuple[int, int]], flip: bool) -> torch.Tensor:
    """``(N, A, ...)``: every input shifted by each ``(dy, dx)`` (``out[r] = x[r - dy]``, the
    borders replicated, as ``scipy.ndimage.shift(mode="nearest")``), then, with ``flip``, each
    of those mirrored horizontally."""
    d = max(max(abs(a), abs(b)) for a, b in shifts)
    lead, (h, w) = x.shape[:-2], x.shape[-2:]
    flat = x.reshape(-1, 1, h, w)
    padded = F.pad(flat, (d, d, d, d), mode="replicate") if d else flat
    views = [padded[..., d - dy : d - dy + h, d - dx : d - dx + w] for dy, dx in shifts]
    if flip:
        views += [v.flip(-1) for v in views]
    out = torch.stack(views, 1)  # (N * rest, A, 1, h, w)
    n = x.shape[0]
    return (
        out.reshape(n, -1, len(views), h, w).transpose(1, 2).reshape(n, len(views), *lead[1:], h, w)
    )


def label_augment_scores(
    model: nn.Module | LabelOracle | Callable[[torch.Tensor], torch.Tensor],
    data: ArrayDataset | Dataset,
    d: int = 1,
    flip: bool = False,
    *,
    batch_size: int = 2048,
    device: str | torch.device | None = None,
) -> torch.Tensor:
    """The label-only data-augmentation attack (translations) of Choquette-Choo, Tramer, Carlini,
    Papernot, "Label-Only Membership Inference Attacks", ICML 2021, thresholded on the count:
    ``(N,)`` float64, 0 if the example is misclassified, else how many of its ``4d + 1``
    translations (:func:`translations`; doubled by their mirrors with ``flip``) keep the true
    label. Higher = member.

    Args:
        model: the target (only its argmax labels are used), a :class:`LabelOracle` or a
            callable ``x -> labels``.
        data: labelled images ``(N, C, H, W)`` (or video ``(N, C, T, H, W)``, shifted per frame)
            in ``[0, 1]``.
        d: translation in pixels; default 1 (the authors' code), ``4d + 1`` queries.
        flip: also query the horizontal mirror of each translation (trustlab's option); default
            False.
        batch_size: the most queries per forward pass; default 2048.
        device: where a module's queries run; default its own device.

    Example::

        scores = label_augment_scores(model, audit_data, d=1)
    """
    ds = _data(data)
    if ds.x.dim() < 4:
        raise InputError(
            f"translations need images (N, C, H, W), got inputs of shape {tuple(ds.x.shape)}."
        )
    h, w = ds.x.shape[-2:]
    d = check_int("d", d, minimum=0, maximum=min(h, w) - 1, fix="(pixels, less than the image)")
    batch_size = check_int("batch_size", batch_size, minimum=1)
    oracle = as_oracle(model, device, batch_size)
    shifts = translations(d)
    correct = oracle(ds.x) == ds.y
    scores = torch.zeros(len(ds), dtype=torch.float64)
    idx = correct.nonzero().flatten()
    a = len(shifts) * (2 if flip else 1)
    per_pass = max(1, batch_size // a)
    for lo in range(0, len(idx), per_pass):  # a loop over chunks of examples
        sel = idx[lo : lo + per_pass]
        q = _shifted(ds.x[sel], shifts, flip)  # (b, A, ...)
        labels = oracle(q.reshape(-1, *ds.x.shape[1:])).view(len(sel), a)
        scores[sel] = (labels == ds.y[sel].unsqueeze(1)).sum(1).double()
    return scores


def gap_scores(
    model: nn.Module | LabelOracle | Callable[[torch.Tensor], torch.Tensor],
    data: ArrayDataset | Dataset,
    *,
    batch_size: int = 2048,
    device: str | torch.device | None = None,
) -> torch.Tensor:
    """The gap attack (the label-only baseline of Yeom et al., CSF 2018 and Choquette-Choo et
    al., ICML 2021): ``(N,)`` float64, 1 if the example is labelled correctly, else 0."""
    ds = _data(data)
    return (as_oracle(model, device, batch_size)(ds.x) == ds.y).double()


def _blend(x0: torch.Tensor, x: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """``(1 - alpha) * x0 + alpha * x`` per row (``x0``, ``x``: ``(b, D)``, ``alpha``: ``(b,)``)."""
    a = alpha.unsqueeze(1)
    return (1 - a) * x0 + a * x


class _Decision:
    """HopSkipJump's decision function on flat inputs: is the label of ``clip(x, 0, 1)`` wrong?"""

    def __init__(self, oracle: LabelOracle, shape: tuple[int, ...]) -> None:
        self.oracle, self.shape = oracle, shape

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.oracle(x.clamp(0.0, 1.0).reshape(-1, *self.shape)) != y


def _to_boundary(
    adv: _Decision, x0: torch.Tensor, y: torch.Tensor, x: torch.Tensor, steps: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Binary search on each segment ``x0 -> x`` (``x`` misclassified) for ``steps`` halvings;
    returns the point at the misclassified end and ``||x - x0||`` (the distance *before* the
    search, which cleverhans's ``binary_search_batch`` returns and ``select_delta`` uses)."""
    lo = torch.zeros(len(x0))
    hi = torch.ones(len(x0))
    for _ in range(steps):  # the same number of halvings for every example (same threshold)
        mid = (lo + hi) / 2
        wrong = adv(_blend(x0, x, mid), y)
        hi, lo = torch.where(wrong, mid, hi), torch.where(wrong, lo, mid)
    return _blend(x0, x, hi), (x - x0).norm(dim=1)


def _initial_points(
    adv: _Decision, x0: torch.Tensor, y: torch.Tensor, trials: int, g: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Uniform noise images until one is misclassified (up to ``trials`` per example, 16 at a
    time), then the blend with ``x0`` closest to it (binary search to 0.001, 10 halvings): the
    blended-uniform-noise start of cleverhans's HopSkipJump. Returns the starts and a mask of
    the examples that have one."""
    b, dim = x0.shape
    noise, found = torch.zeros_like(x0), torch.zeros(b, dtype=torch.bool)
    per_round = 16
    for _ in range(-(-trials // per_round)):  # rounds of draws for the examples still without
        pend = (~found).nonzero().flatten()
        if len(pend) == 0:
            break
        r = torch.rand((len(pend), per_round, dim), generator=g)
        ok = adv(r.reshape(-1, dim), y[pend].repeat_interleave(per_round)).view(-1, per_round)
        hit = ok.any(1)
        first = ok.float().argmax(1)
        noise[pend[hit]] = r[hit, first[hit]]
        found[pend[hit]] = True
    lo, hi = torch.zeros(b), torch.ones(b)
    for _ in range(10):
        mid = (lo + hi) / 2
        wrong = adv(_blend(x0, noise, mid), y) | ~found
        hi, lo = torch.where(wrong, mid, hi), torch.where(wrong, lo, mid)
    return _blend(x0, noise, hi), found


def _gradient_direction(
    adv: _Decision,
    x: torch.Tensor,
    y: torch.Tensor,
    evals: int,
    delta: torch.Tensor,
    g: torch.Generator,
    batch_size: int,
) -> torch.Tensor:
    """HopSkipJump's Monte-Carlo estimate of the boundary's normal at ``x`` ``(b, D)`` from
    ``evals`` label queries per example at radius ``delta`` ``(b,)``, with the baseline
    subtracted when the decisions differ; unit rows."""
    b, dim = x.shape
    s_frv, s_rv, s_f = torch.zeros_like(x), torch.zeros_like(x), torch.zeros(b)
    per_block = max(1, batch_size // b)
    d = delta.view(b, 1, 1)
    for start in range(0, evals, per_block):  # blocks of samples, all examples at once
        m = min(per_block, evals - start)
        rv = torch.randn((b, m, dim), generator=g)
        rv = rv / rv.norm(dim=2, keepdim=True)
        q = (x.unsqueeze(1) + d * rv).clamp(0.0, 1.0)
        rv = (q - x.unsqueeze(1)) / d
        f = adv(q.reshape(-1, dim), y.repeat_interleave(m)).view(b, m).float() * 2 - 1
        s_frv += (f.unsqueeze(2) * rv).sum(1)
        s_rv += rv.sum(1)
        s_f += f.sum(1)
    fbar = (s_f / evals).unsqueeze(1)
    grad = torch.where(fbar.abs() == 1, s_frv / evals, s_frv / evals - fbar * s_rv / evals)
    return grad / grad.norm(dim=1, keepdim=True).clamp_min(1e-12)


def _hop_skip_jump(
    adv: _Decision,
    x0: torch.Tensor,
    y: torch.Tensor,
    iterations: int,
    initial_evals: int,
    max_evals: int,
    gamma: float,
    init_trials: int,
    g: torch.Generator,
    batch_size: int,
) -> torch.Tensor:
    """Untargeted L2 HopSkipJump (geometric step-size search) on ``x0`` ``(b, D)``, all
    examples in lockstep; returns ``||x_adv - x0||`` ``(b,)`` float64 (``sqrt(D)``, the
    diameter of the box, where no misclassified start was found)."""
    b, dim = x0.shape
    theta = gamma / (dim * math.sqrt(dim))
    steps = max(0, math.ceil(math.log2(1.0 / theta) - 1e-9))
    start, found = _initial_points(adv, x0, y, init_trials, g)
    x, dist_post = _to_boundary(adv, x0, y, start, steps)
    dist = (x - x0).norm(dim=1)
    for t in range(1, iterations + 1):  # HopSkipJump's iterations (sequential by nature)
        delta = torch.full((b,), 0.1) if t == 1 else math.sqrt(dim) * theta * dist_post
        evals = int(min(initial_evals * math.sqrt(t), max_evals))
        grad = _gradient_direction(adv, x, y, evals, delta.clamp_min(1e-12), g, batch_size)
        eps = dist / math.sqrt(t)
        pend = torch.arange(b)
        for _ in range(60):  # halve each step until it lands on the misclassified side
            ok = adv(x[pend] + eps[pend].unsqueeze(1) * grad[pend], y[pend])
            eps[pend[~ok]] /= 2
            pend = pend[~ok]
            if len(pend) == 0:
                break
        eps[pend] = 0.0
        x, dist_post = _to_boundary(adv, x0, y, (x + eps.unsqueeze(1) * grad).clamp(0, 1), steps)
        dist = (x - x0).norm(dim=1)
    return torch.where(found, dist.double(), math.sqrt(dim))


def label_boundary_scores(
    model: nn.Module | LabelOracle | Callable[[torch.Tensor], torch.Tensor],
    data: ArrayDataset | Dataset,
    iterations: int = 64,
    initial_evals: int = 100,
    max_evals: int = 10000,
    gamma: float = 1.0,
    *,
    init_trials: int = 10000,
    seed: int = 0,
    chunk: int = 128,
    batch_size: int = 2048,
    device: str | torch.device | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """The label-only boundary-distance attack of Choquette-Choo, Tramer, Carlini, Papernot,
    "Label-Only Membership Inference Attacks", ICML 2021: the L2 distance from each example to
    the adversarial example that untargeted HopSkipJump (Chen, Jordan, Wainwright, S&P 2020)
    finds with label queries only; 0 for a misclassified example. ``(N,)`` float64, higher =
    member.

    The examples of a chunk run in lockstep (every query of an iteration, for all of them, in
    batched forward passes); the algorithm and its defaults are cleverhans's
    ``HopSkipJumpAttack``, which the authors' code calls with its defaults (``attack="HSJ"``).

    Args:
        model: the target (only its argmax labels are used), a :class:`LabelOracle` or a
            callable ``x -> labels``.
        data: labelled examples, inputs in ``[0, 1]``.
        iterations: HopSkipJump iterations; default 64.
        initial_evals, max_evals: gradient-estimate queries at iteration ``t``:
            ``min(initial_evals * sqrt(t), max_evals)``; defaults 100 and 10,000.
        gamma: the binary-search threshold is ``gamma / D^1.5``; default 1.0.
        init_trials: uniform-noise draws to find a misclassified start; default 10,000 (an
            example without one scores ``sqrt(D)``, the diameter of ``[0, 1]^D``; cleverhans
            stops with an error).
        seed: seeds the draws; scores depend on the seed and on ``chunk``.
        chunk: examples attacked together; default 128.
        batch_size: the most queries per forward pass; default 2048.
        device: where a module's queries run; default its own device.
        progress: a progress bar over the chunks (only on a terminal).

    Example::

        dist = label_boundary_scores(model, audit_data, iterations=16)
    """
    ds = _data(data)
    iterations = check_int("iterations", iterations, minimum=1)
    initial_evals = check_int("initial_evals", initial_evals, minimum=1)
    max_evals = check_int("max_evals", max_evals, minimum=1)
    gamma = check_float("gamma", gamma, minimum=0.0)
    if gamma <= 0:
        raise InputError(f"gamma must be > 0 (the binary-search threshold), got {gamma}.")
    init_trials = check_int("init_trials", init_trials, minimum=1)
    chunk = check_int("chunk", chunk, minimum=1)
    batch_size = check_int("batch_size", batch_size, minimum=1)
    oracle = as_oracle(model, device, batch_size)
    shape = tuple(ds.x.shape[1:])
    adv = _Decision(oracle, shape)
    correct = oracle(ds.x) == ds.y
    out = torch.zeros(len(ds), dtype=torch.float64)
    idx = correct.nonzero().flatten()
    starts = range(0, len(idx), chunk)
    with progress_bar("label-only HopSkipJump", len(starts), progress) as bar:
        for lo in starts:  # a loop over chunks of examples
            sel = idx[lo : lo + chunk]
            g = generator(derive_seed(seed, "label-only-hsj", lo))
            out[sel] = _hop_skip_jump(
                adv, ds.x[sel].flatten(1), ds.y[sel], iterations, initial_evals, max_evals,
                gamma, init_trials, g, batch_size,
            )  # fmt: skip
            bar()
    return out


def _audit_hook(
    score: Callable[..., torch.Tensor], seeded: bool = True
) -> Callable[[MembershipAudit], torch.Tensor]:
    """The audit hook of a label-only scoring function: it queries the target through a
    :class:`LabelOracle` (``seeded``: with the audit's seed and progress) and records the
    queries spent."""

    def audit(a: MembershipAudit) -> torch.Tensor:
        oracle = LabelOracle(a.model, a.device)
        own = {"seed": a.seed, "progress": a.progress} if seeded else {}
        scores = score(oracle, a.data, **own, **a.options)
        a.extra["label_queries"] = oracle.queries
        a.extra["label_queries_per_example"] = round(oracle.queries / len(a.data), 1)
        return scores

    return audit


_PAPER = (
    "Choquette-Choo, Tramer, Carlini, Papernot. Label-Only Membership Inference Attacks. ICML 2021."
)
#: what the audit hooks set themselves (the rest of a scoring function's keywords are options)
_FIXED = ("seed", "progress", "device")
_THREAT = "label-only black-box: the target's predicted labels on chosen queries; no shadow models"

PRIVACY_ATTACKS.register(
    "label-only",
    "label-only: how often the predicted label survives Gaussian noise of growing sigma",
    paper=_PAPER,
    threat=_THREAT + f" ({len(SIGMAS) * 250} noisy queries per correctly labelled example)",
    inputs=("model", "data"),
    shadows=False,
    audit=_audit_hook(label_noise_scores),
    options=label_noise_scores,
    options_fixed=_FIXED,
)(label_noise_scores)

PRIVACY_ATTACKS.register(
    "label-only-hsj",
    "label-only: L2 distance to the boundary found by HopSkipJump from label queries",
    paper=_PAPER + " The distance by Chen, Jordan, Wainwright. HopSkipJumpAttack: A "
    "Query-Efficient Decision-Based Attack. IEEE S&P 2020.",
    threat=_THREAT + " (HopSkipJump: about 33,000 queries per correctly labelled example)",
    inputs=("model", "data"),
    shadows=False,
    audit=_audit_hook(label_boundary_scores),
    options=label_boundary_scores,
    options_fixed=_FIXED,
)(label_boundary_scores)

PRIVACY_ATTACKS.register(
    "label-only-augment",
    "label-only: how many 1-pixel translations keep the predicted label correct",
    paper=_PAPER,
    threat=_THREAT + " (4d + 1 = 5 queries per correctly labelled example)",
    inputs=("model", "data"),
    shadows=False,
    audit=_audit_hook(label_augment_scores, seeded=False),
    options=label_augment_scores,
    options_fixed=_FIXED,
)(label_augment_scores)
