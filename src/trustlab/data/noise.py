"""Synthetic label noise: symmetric, asymmetric, pair-flip and instance-dependent.

Every generator takes clean labels (a 1-D integer tensor, array or list with values in
``[0, num_classes)``), a noise rate ``eta`` and a ``seed``, and returns a :class:`NoisyLabels`
record: the noisy labels, the clean ones, the flip mask, the *designed* transition matrix
``T[i, j] = P(noisy = j | clean = i)`` of the noise model, the *realised* one counted from the
draw, and the realised overall flip rate. The same arguments give the same labels on every
machine (NumPy's ``Generator``, seeded through :func:`trustlab.utils.seed.derive_seed`, drives
every draw); nothing loops over samples.

Models (specification: ``methods.md``, "Noisy labels"; the SCE paper, Wang et al., ICCV 2019, and
the APL paper, Ma et al., ICML 2020, use symmetric and asymmetric noise):

* :func:`symmetric` - exactly ``floor(eta * n_c)`` samples of each class ``c`` get a uniformly
  random *other* class. Designed ``T``: ``1 - eta`` on the diagonal, ``eta / (K - 1)`` elsewhere.
* :func:`asymmetric` - a class map ``c -> m(c)`` of visually similar classes (Patrini et al.,
  CVPR 2017, whose maps the SCE/APL code uses; :func:`asymmetric_map`); exactly
  ``floor(eta * n_c)`` samples whose *clean* label is a source class ``c`` get ``m(c)``.
* :func:`pair_flip` - Han et al., "Co-teaching", NeurIPS 2018: ``c -> (c + 1) mod K``.
* :func:`instance_dependent` - Xia et al., "Part-dependent label noise", NeurIPS 2020: the
  flip probability and the wrong class depend on the input.

``floor(eta * n_c)`` is computed exactly with ``eta`` read as the decimal it is written as
(``0.29 * 100`` gives 29 flips, not the 28 of binary floating point).

:func:`parse_noise` reads ``"sym:0.4"``-style specs (configs, ``--noise``) and
:func:`apply_noise` returns a new :class:`~trustlab.data.datasets.ArrayDataset` with noisy labels.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import numpy as np
import torch

from trustlab.data.datasets import ArrayDataset
from trustlab.data.synthetic import SHAPES
from trustlab.errors import InputError
from trustlab.utils.seed import derive_seed
from trustlab.utils.validate import check_int

__all__ = [
    "ASYMMETRIC_MAPS",
    "CIFAR10_MAP",
    "FASHION_MNIST_MAP",
    "MNIST_MAP",
    "NOISE_KINDS",
    "SHAPES10_MAP",
    "NoisyLabels",
    "apply_noise",
    "asymmetric",
    "asymmetric_map",
    "instance_dependent",
    "pair_flip",
    "parse_noise",
    "superclass_map",
    "symmetric",
]

LabelsLike = Any  # torch.Tensor | np.ndarray | Sequence[int]

#: Canonical kinds and the aliases :func:`parse_noise` accepts for them.
NOISE_KINDS: dict[str, tuple[str, ...]] = {
    "none": ("none", "clean"),
    "sym": ("sym", "symmetric", "uniform"),
    "asym": ("asym", "asymmetric"),
    "pair": ("pair", "pairflip", "pair-flip"),
    "idn": ("idn", "instance", "instance-dependent"),
}
_ALIASES = {alias: kind for kind, aliases in NOISE_KINDS.items() for alias in aliases}
_FORMS = "'none' (or 'clean'), 'sym:ETA', 'asym:ETA', 'pair:ETA' or 'idn:ETA', e.g. 'sym:0.4'"

#: MNIST-style digits (Patrini et al., CVPR 2017; the SCE/APL code): 7 -> 1, 2 -> 7, 5 <-> 6,
#: 3 -> 8. Used for ``mnist`` and the built-in ``digits``.
MNIST_MAP: dict[int, int] = {7: 1, 2: 7, 5: 6, 6: 5, 3: 8}

#: CIFAR-10 (Patrini et al., CVPR 2017): truck -> automobile, bird -> airplane, cat <-> dog,
#: deer -> horse (class ids of the python-version files).
CIFAR10_MAP: dict[int, int] = {9: 1, 2: 0, 3: 5, 5: 3, 4: 7}

#: Fashion-MNIST (trustlab's choice: the noisy-label papers trustlab reproduces use no Fashion-MNIST
#: map): five flips between the classes Fashion-MNIST classifiers confuse most, as MNIST's and
#: CIFAR-10's maps have five: T-shirt/top -> Shirt, Pullover <-> Coat (the swap, like cat <-> dog),
#: Sandal -> Sneaker, Ankle boot -> Sneaker (class ids of the IDX files).
FASHION_MNIST_MAP: dict[int, int] = {0: 6, 2: 4, 4: 2, 5: 7, 9: 7}

#: shapes10 pairs, by class name (see :data:`SHAPES10_MAP` for the reasoning).
SHAPES10_PAIRS: tuple[tuple[str, str], ...] = (
    ("ellipse", "circle"),
    ("circle", "ellipse"),
    ("ring", "crescent"),
    ("star", "cross"),
    ("arrow", "triangle"),
)

#: shapes10 (built-in), five flips between shapes that look alike, as CIFAR-10's map has five:
#: ellipse <-> circle (both smooth convex blobs; an ellipse is a squashed circle and the pair is
#: the swap, like cat <-> dog), ring -> crescent (both thin curved bands cut out of a disc),
#: star -> cross (both concave polygons of radial spikes, five arms vs four), arrow -> triangle
#: (the arrow's head is a triangle, its most salient part).
SHAPES10_MAP: dict[int, int] = {SHAPES.index(a): SHAPES.index(b) for a, b in SHAPES10_PAIRS}

#: Datasets with a fixed asymmetric map (``cifar100`` derives its map from the superclasses).
ASYMMETRIC_MAPS: dict[str, dict[int, int]] = {
    "mnist": MNIST_MAP,
    "digits": MNIST_MAP,
    "cifar10": CIFAR10_MAP,
    "fashion-mnist": FASHION_MNIST_MAP,
    "shapes10": SHAPES10_MAP,
}


# --------------------------------------------------------------------------------------------
# The record
# --------------------------------------------------------------------------------------------


@dataclass
class NoisyLabels:
    """The result of a noise model: noisy and clean labels, flip mask, designed and realised ``T``.

    Attributes:
        labels: ``int64`` noisy labels ``(N,)``.
        clean: ``int64`` clean labels ``(N,)``.
        flipped: ``bool`` mask ``(N,)``, ``labels != clean``.
        transition: ``float64`` ``(K, K)``, the designed ``P(noisy = j | clean = i)``; rows sum
            to 1 (for instance-dependent noise: the per-class mean of the per-sample rows).
        realised_transition: ``float64`` ``(K, K)``, the counted fraction of class-``i`` samples
            labelled ``j``; rows of classes absent from the labels are all zero.
        rate: realised overall flip fraction ``flipped.mean()``.
        kind: ``"none"``, ``"sym"``, ``"asym"``, ``"pair"`` or ``"idn"``.
        eta: the requested noise rate.
        seed: the seed of the draw; default None.
        details: JSON-able parameters of the model (e.g. the class map, the IDN ``std``); default
            ``{}``.

    Example:
        >>> noisy = symmetric(torch.arange(10) % 2, eta=0.4, num_classes=2, seed=0)
        >>> noisy.rate, int(noisy.flipped.sum())
        (0.4, 4)
    """

    labels: torch.Tensor
    clean: torch.Tensor
    flipped: torch.Tensor
    transition: torch.Tensor
    realised_transition: torch.Tensor
    rate: float
    kind: str
    eta: float
    seed: int | None = None
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return int(self.transition.shape[0])

    def per_class_rate(self) -> list[float | None]:
        """Realised flip fraction of each clean class (``None`` for classes with no samples)."""
        k = self.num_classes
        clean = self.clean.cpu()
        counts = torch.bincount(clean, minlength=k)
        flips = torch.bincount(clean[self.flipped.cpu()], minlength=k)
        return [
            float(f) / float(n) if n > 0 else None
            for f, n in zip(flips.tolist(), counts.tolist(), strict=True)
        ]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able summary for run records (no per-sample tensors, no matrices)."""
        return {
            "kind": self.kind,
            "eta": float(self.eta),
            "rate": float(self.rate),
            "num_samples": int(self.labels.numel()),
            "num_flipped": int(self.flipped.sum()),
            "num_classes": self.num_classes,
            "per_class_rate": self.per_class_rate(),
            "seed": self.seed,
            **self.details,
        }


# --------------------------------------------------------------------------------------------
# Input checks and shared machinery
# --------------------------------------------------------------------------------------------


def _as_labels(
    labels: LabelsLike, num_classes: int | None, what: str = "labels"
) -> tuple[np.ndarray, torch.device]:
    """Labels as a 1-D ``int64`` array in ``[0, num_classes)`` (``>= 0`` when ``num_classes`` is
    ``None``), and the device to return tensors on."""
    device = torch.device("cpu")
    if isinstance(labels, torch.Tensor):
        device = labels.device
        labels = labels.detach().cpu().numpy()
    elif not isinstance(labels, (np.ndarray, list, tuple)):
        raise InputError(
            f"{what} are a {type(labels).__name__}; pass a 1-D integer tensor, array or list of "
            "class indices (e.g. dataset.y)."
        )
    arr = np.asarray(labels)
    if arr.ndim != 1 or arr.size == 0:
        raise InputError(
            f"{what} have shape {arr.shape}; expected a non-empty 1-D vector of class indices "
            "(N,). Argmax one-hot labels first."
        )
    if arr.dtype.kind not in "iu":
        raise InputError(
            f"{what} have dtype {arr.dtype}; expected integer class indices. Convert them with "
            ".long() (or .astype(int)) first."
        )
    lo, hi = int(arr.min()), int(arr.max())
    if num_classes is None:
        if lo < 0:
            raise InputError(f"{what} contain negative values (min {lo}); expected ids >= 0.")
    elif lo < 0 or hi >= num_classes:
        raise InputError(
            f"{what} span [{lo}, {hi}] but num_classes is {num_classes}; labels must be in "
            f"[0, {num_classes - 1}]. Pass the dataset's number of classes."
        )
    return arr.astype(np.int64), device


def _check_eta(kind: str, eta: Any, num_classes: int | None = None) -> float:
    """``eta`` as a float within the range that is meaningful for ``kind``.

    * ``sym``: ``0 <= eta <= (K - 1) / K``; at ``(K - 1) / K`` the noisy label is uniform and
      carries no information, above it the labels point away from the true class.
    * ``asym``, ``pair``: ``0 <= eta < 0.5``; at 0.5 or more the majority of a source class
      carries the mapped label, so the noisy-label Bayes classifier swaps the classes.
    * ``idn``: ``0 <= eta < 1`` (the per-sample rates are truncated to ``[0, 1]``).
    """
    if isinstance(eta, bool) or not isinstance(eta, numbers.Real) or not math.isfinite(eta):
        raise InputError(f"noise rate eta must be a finite number in [0, 1), got {eta!r}.")
    value = float(eta)
    if not 0.0 <= value < 1.0:
        raise InputError(f"noise rate eta must be in [0, 1), got {value}. Use e.g. 0.4 for 40%.")
    if kind in ("asym", "pair") and value >= 0.5:
        raise InputError(
            f"{kind} noise needs eta < 0.5, got {value}: at 0.5 or more most samples of a source "
            "class carry the mapped label and the classes are no longer identifiable. Use a "
            "smaller eta (the papers use up to 0.4-0.45)."
        )
    if kind == "sym" and num_classes is not None and value > (num_classes - 1) / num_classes:
        raise InputError(
            f"symmetric noise on {num_classes} classes needs eta <= (K-1)/K = "
            f"{(num_classes - 1) / num_classes:.4g}, got {value}: beyond it each wrong label "
            "is more likely than the true one. Use a smaller eta."
        )
    return value


def _rngs(kind: str, seed: Any, n: int) -> list[np.random.Generator]:
    """``n`` independent generators for one draw of noise ``kind`` with ``seed``."""
    seed = check_int("seed", seed, 0, fix="Pass a non-negative integer seed.")
    root = np.random.SeedSequence(derive_seed("trustlab.data.noise", kind, seed))
    return [np.random.default_rng(child) for child in root.spawn(n)]


def _quota(counts: np.ndarray, eta: float) -> np.ndarray:
    """``floor(eta * n_c)`` per class, exact for ``eta`` read as its shortest decimal."""
    frac = Fraction(repr(eta))
    num, den = frac.numerator, frac.denominator
    return np.array([int(c) * num // den for c in counts.tolist()], dtype=np.int64)


def _choose_per_class(
    y: np.ndarray, eta: float, num_classes: int, eligible: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """A mask selecting exactly ``floor(eta * n_c)`` random samples of each eligible class."""
    n = y.shape[0]
    perm = rng.permutation(n)
    order = perm[np.argsort(y[perm], kind="stable")]  # grouped by class, random within
    counts = np.bincount(y, minlength=num_classes)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n) - starts[y[order]]
    quota = np.where(eligible, _quota(counts, eta), 0)
    return rank < quota[y]


def _record(
    kind: str,
    eta: float,
    clean: np.ndarray,
    noisy: np.ndarray,
    transition: np.ndarray,
    seed: int,
    device: torch.device,
    details: dict[str, Any] | None = None,
) -> NoisyLabels:
    k = transition.shape[0]
    counts = np.bincount(clean * k + noisy, minlength=k * k).reshape(k, k).astype(np.float64)
    rows = counts.sum(1, keepdims=True)
    realised = np.divide(counts, rows, out=np.zeros_like(counts), where=rows > 0)
    flipped = noisy != clean
    return NoisyLabels(
        labels=torch.from_numpy(noisy).to(device),
        clean=torch.from_numpy(clean.copy()).to(device),
        flipped=torch.from_numpy(flipped).to(device),
        transition=torch.from_numpy(transition),
        realised_transition=torch.from_numpy(realised),
        rate=float(flipped.mean()),
        kind=kind,
        eta=eta,
        seed=int(seed),
        details=dict(details or {}),
    )


def _check_map(class_map: Any, num_classes: int) -> dict[int, int]:
    if not isinstance(class_map, Mapping):
        raise InputError(
            f"class_map is a {type(class_map).__name__}; pass a dict {{source: target}} of class "
            "ids, e.g. asymmetric_map('cifar10')."
        )
    out: dict[int, int] = {}
    for src, dst in class_map.items():
        hint = "The map must fit num_classes; pass the dataset's class count."
        s = check_int("class_map source", src, 0, num_classes - 1, fix=hint)
        d = check_int("class_map target", dst, 0, num_classes - 1, fix=hint)
        if s == d:
            raise InputError(f"class_map maps class {s} to itself; drop that entry.")
        out[s] = d
    return out


# --------------------------------------------------------------------------------------------
# Class maps
# --------------------------------------------------------------------------------------------


def superclass_map(coarse_labels: Any, fine_labels: LabelsLike | None = None) -> dict[int, int]:
    """Each fine class -> the next fine class (by id, cyclically) of its superclass.

    The CIFAR-100 asymmetric noise of the SCE/APL papers ("flipping each class into the next,
    circularly, within super-classes"). The membership is the *true* one given by the data, not
    blocks of consecutive ids (which the papers' public code assumes, wrongly for CIFAR-100).

    Args:
        coarse_labels: either per-sample superclass labels ``(N,)`` together with
            ``fine_labels`` ``(N,)`` (e.g. ``ds.coarse_y`` and ``ds.y`` of
            ``load_dataset("cifar100")``), or without ``fine_labels`` a fine -> coarse
            assignment: a dict, or a sequence/tensor indexed by fine class id.
        fine_labels: the per-sample fine labels matching ``coarse_labels``.

    Superclasses with one fine class map nothing. Fine classes absent from per-sample labels
    are neither sources nor targets.
    """
    if isinstance(coarse_labels, Mapping):
        if fine_labels is not None:
            raise InputError(
                "pass either a fine -> coarse dict or per-sample coarse labels with fine_labels, "
                "not both."
            )
        fine = np.array([check_int("fine class", f, 0) for f in coarse_labels], dtype=np.int64)
        coarse = np.array(
            [check_int("coarse class", c, 0) for c in coarse_labels.values()], dtype=np.int64
        )
    else:
        if coarse_labels is None:
            raise InputError(
                "the CIFAR-100 asymmetric map needs the superclass membership: pass "
                "coarse_labels=ds.coarse_y (with the fine labels ds.y) of "
                "load_dataset('cifar100')."
            )
        coarse_arr, _ = _as_labels(coarse_labels, None, "coarse labels")
        if fine_labels is None:
            coarse, fine = coarse_arr, np.arange(coarse_arr.shape[0], dtype=np.int64)
        else:
            fine_arr, _ = _as_labels(fine_labels, None, "fine labels")
            if fine_arr.shape != coarse_arr.shape:
                raise InputError(
                    f"fine labels {fine_arr.shape} and coarse labels {coarse_arr.shape} differ "
                    "in length; pass the two label vectors of the same samples."
                )
            pairs = np.unique(np.stack([fine_arr, coarse_arr], 1), axis=0)
            if np.unique(pairs[:, 0]).shape[0] != pairs.shape[0]:
                dup = pairs[np.r_[False, pairs[1:, 0] == pairs[:-1, 0]], 0]
                raise InputError(
                    f"fine class(es) {sorted(set(dup.tolist()))[:5]} appear under more than one "
                    "superclass; the coarse labels must be a function of the fine labels."
                )
            fine, coarse = pairs[:, 0], pairs[:, 1]
    out: dict[int, int] = {}
    for group in np.unique(coarse).tolist():  # a loop over superclasses
        members = np.sort(fine[coarse == group]).tolist()
        if len(members) < 2:
            continue
        for i, f in enumerate(members):
            out[f] = members[(i + 1) % len(members)]
    return dict(sorted(out.items()))


def asymmetric_map(
    dataset: str, coarse_labels: Any = None, fine_labels: LabelsLike | None = None
) -> dict[int, int]:
    """The asymmetric-noise class map ``{source: target}`` of a dataset.

    * ``mnist``, ``digits``: :data:`MNIST_MAP` (7 -> 1, 2 -> 7, 5 <-> 6, 3 -> 8).
    * ``cifar10``: :data:`CIFAR10_MAP` (truck -> automobile, bird -> airplane, cat <-> dog,
      deer -> horse).
    * ``cifar100``: :func:`superclass_map` of ``coarse_labels`` (per-sample superclasses with
      ``fine_labels``, or a fine -> coarse assignment); required.
    * ``shapes10``: :data:`SHAPES10_MAP` (ellipse <-> circle, ring -> crescent, star -> cross,
      arrow -> triangle).

    Other datasets raise :class:`InputError` (use ``sym`` or ``pair`` noise, or pass a map to
    :func:`asymmetric` yourself).
    """
    name = str(dataset).lower()
    if name == "cifar100":
        return superclass_map(coarse_labels, fine_labels)
    if name not in ASYMMETRIC_MAPS:
        known = sorted([*ASYMMETRIC_MAPS, "cifar100"])
        raise InputError(
            f"no asymmetric noise map for dataset {dataset!r}; maps exist for {known}. Use "
            "'sym:ETA' or 'pair:ETA' noise, or call trustlab.data.noise.asymmetric with your "
            "own class map."
        )
    return dict(ASYMMETRIC_MAPS[name])


# --------------------------------------------------------------------------------------------
# Noise models
# --------------------------------------------------------------------------------------------


def symmetric(labels: LabelsLike, eta: float, num_classes: int, seed: int) -> NoisyLabels:
    """Symmetric (uniform) noise: ``floor(eta * n_c)`` samples of each class ``c``, chosen
    uniformly, get a uniformly random *other* class (SCE, ICCV 2019; APL, ICML 2020).

    Designed ``T``: ``1 - eta`` on the diagonal, ``eta / (K - 1)`` elsewhere. Needs
    ``0 <= eta <= (K - 1) / K``.
    """
    k = check_int("num_classes", num_classes, 2)
    y, device = _as_labels(labels, k)
    eta = _check_eta("sym", eta, k)
    pick_rng, target_rng = _rngs("sym", seed, 2)
    chosen = _choose_per_class(y, eta, k, np.ones(k, dtype=bool), pick_rng)
    noisy = y.copy()
    offsets = target_rng.integers(1, k, size=int(chosen.sum()))  # 1..K-1: never the class itself
    noisy[chosen] = (y[chosen] + offsets) % k
    transition = np.full((k, k), eta / (k - 1))
    np.fill_diagonal(transition, 1.0 - eta)
    return _record("sym", eta, y, noisy, transition, seed, device)


def asymmetric(
    labels: LabelsLike, eta: float, class_map: Mapping[int, int], num_classes: int, seed: int
) -> NoisyLabels:
    """Asymmetric (class-conditional) noise: for each source class ``c`` of ``class_map``,
    ``floor(eta * n_c)`` samples whose *clean* label is ``c`` get ``class_map[c]``; other classes
    are untouched (Patrini et al., CVPR 2017; SCE, ICCV 2019; APL, ICML 2020).

    Designed ``T``: identity, except ``T[c, c] = 1 - eta`` and ``T[c, class_map[c]] = eta``.
    Maps: :func:`asymmetric_map`. Needs ``0 <= eta < 0.5``.
    """
    k = check_int("num_classes", num_classes, 2)
    y, device = _as_labels(labels, k)
    eta = _check_eta("asym", eta, k)
    cmap = _check_map(class_map, k)
    return _mapped("asym", y, eta, cmap, k, seed, device, {"class_map": _json_map(cmap)})


def pair_flip(labels: LabelsLike, eta: float, num_classes: int, seed: int) -> NoisyLabels:
    """Pair-flip noise (Han et al., "Co-teaching", NeurIPS 2018): ``floor(eta * n_c)`` samples of
    each class ``c`` get ``(c + 1) mod K``.

    Designed ``T``: ``1 - eta`` on the diagonal, ``eta`` at ``(c, (c + 1) mod K)``. Needs
    ``0 <= eta < 0.5``.
    """
    k = check_int("num_classes", num_classes, 2)
    y, device = _as_labels(labels, k)
    eta = _check_eta("pair", eta, k)
    cmap = {c: (c + 1) % k for c in range(k)}
    return _mapped("pair", y, eta, cmap, k, seed, device)


def _mapped(
    kind: str,
    y: np.ndarray,
    eta: float,
    cmap: dict[int, int],
    k: int,
    seed: int,
    device: torch.device,
    details: dict[str, Any] | None = None,
) -> NoisyLabels:
    dest = np.full(k, -1, dtype=np.int64)
    for src, dst in cmap.items():
        dest[src] = dst
    (pick_rng,) = _rngs(kind, seed, 1)
    chosen = _choose_per_class(y, eta, k, dest >= 0, pick_rng)
    noisy = np.where(chosen, dest[y], y)
    transition = np.eye(k)
    src = np.flatnonzero(dest >= 0)
    transition[src, src] = 1.0 - eta
    transition[src, dest[src]] = eta
    return _record(kind, eta, y, noisy, transition, seed, device, details)


def instance_dependent(
    labels: LabelsLike,
    eta: float,
    num_classes: int,
    features: torch.Tensor | np.ndarray,
    seed: int,
    std: float = 0.1,
) -> NoisyLabels:
    """Instance-dependent noise (IDN) of Xia et al., "Part-dependent label noise: towards
    instance-dependent label noise", NeurIPS 2020 (the generator of their public code,
    ``get_instance_noisy_label``, used by most IDN benchmarks).

    Per sample ``i`` with clean label ``y``: a flip rate ``q_i ~ N(eta, std^2)`` truncated to
    ``[0, 1]``; scores ``s = x_i W_y`` with one Gaussian projection ``W_c ~ N(0, 1)`` of shape
    ``(D, K)`` per clean class (the public code's ``W[y]``, shape ``(K, D, K)``), ``s_y = -inf``;
    the noisy label is drawn from ``q_i * softmax(s)`` on the other classes and ``1 - q_i`` on
    ``y``, so it never flips to itself. ``features`` ``(N, ...)`` are flattened to ``(N, D)``
    (the public code uses the input pixels in ``[0, 1]``). The expected flip rate is the mean of
    the truncated normal, about ``eta`` for ``std = 0.1`` (default) and ``0.1 <= eta <= 0.9``.

    Differences from the public code: ``eta = 0`` gives no noise (the truncated ``N(0, 0.01)``
    would still flip ~8%); sampling is vectorised (Gumbel-max) rather than one
    ``np.random.choice`` per sample. Designed ``T``: row ``c`` is the mean over class-``c``
    samples of their flip distributions (rows of absent classes: identity).
    """
    from scipy import stats

    k = check_int("num_classes", num_classes, 2)
    y, device = _as_labels(labels, k)
    eta = _check_eta("idn", eta, k)
    if isinstance(std, bool) or not isinstance(std, numbers.Real) or not 0 <= std < math.inf:
        raise InputError(f"std of the IDN flip rates must be a number >= 0, got {std!r}.")
    x = _as_features(features, y.shape[0])
    q_rng, w_rng, flip_rng, class_rng = _rngs("idn", seed, 4)
    n = y.shape[0]
    if eta == 0.0:
        q = np.zeros(n)
    elif std == 0:
        q = np.full(n, eta)
    else:
        a, b = (0.0 - eta) / std, (1.0 - eta) / std
        q = stats.truncnorm.rvs(a, b, loc=eta, scale=float(std), size=n, random_state=q_rng)
    scores = np.empty((n, k))
    for c in range(k):  # a loop over classes: one projection W_c per clean class
        w = torch.from_numpy(w_rng.standard_normal((x.shape[1], k)))
        members = np.flatnonzero(y == c)
        if members.size:
            scores[members] = (x[torch.from_numpy(members)].double() @ w).numpy()
    rows = np.arange(n)
    scores[rows, y] = -np.inf
    # the wrong class: a softmax(s) draw by the Gumbel-max trick (exact, vectorised, and never
    # y because s_y = -inf); whether to flip at all: a Bernoulli(q_i) draw
    target = np.argmax(scores + class_rng.gumbel(size=(n, k)), axis=1)
    flip = flip_rng.random(n) < q
    noisy = np.where(flip, target, y)
    probs = np.exp(scores - scores.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    per_sample = q[:, None] * probs
    per_sample[rows, y] += 1.0 - q
    counts = np.bincount(y, minlength=k)
    transition = np.zeros((k, k))
    np.add.at(transition, y, per_sample)
    transition = np.where(
        counts[:, None] > 0, transition / np.maximum(counts, 1)[:, None], np.eye(k)
    )
    return _record("idn", eta, y, noisy, transition, seed, device, {"std": float(std)})


def _as_features(features: Any, n: int) -> torch.Tensor:
    if isinstance(features, np.ndarray):
        features = torch.from_numpy(features)
    if not isinstance(features, torch.Tensor):
        raise InputError(
            f"features are a {type(features).__name__}; pass an (N, D) tensor or array, e.g. "
            "dataset.x.flatten(1)."
        )
    if features.dim() < 2 or features.shape[0] != n or features[0].numel() == 0:
        raise InputError(
            f"features have shape {tuple(features.shape)} for {n} labels; expected (N, D) with "
            f"N = {n} (e.g. dataset.x.flatten(1))."
        )
    if features.is_complex() or features.dtype == torch.bool:
        raise InputError(f"features have dtype {features.dtype}; pass real numbers.")
    x = features.detach().cpu().reshape(n, -1)
    if not torch.isfinite(x).all():
        raise InputError("features contain NaN or inf values; clean them first.")
    return x


def _json_map(cmap: Mapping[int, int]) -> dict[str, int]:
    return {str(k): int(v) for k, v in sorted(cmap.items())}


# --------------------------------------------------------------------------------------------
# Specs and datasets
# --------------------------------------------------------------------------------------------


def parse_noise(spec: str | None, num_classes: int | None = None) -> tuple[str, float]:
    """Parse a noise spec into ``(kind, eta)``.

    Accepted (case-insensitive): ``"none"`` / ``"clean"`` / ``None`` -> ``("none", 0.0)``;
    ``"sym:ETA"`` (also ``symmetric``), ``"asym:ETA"`` (``asymmetric``), ``"pair:ETA"``
    (``pairflip``), ``"idn:ETA"`` (``instance``) with ``ETA`` a decimal in ``[0, 1)``;
    ``asym`` and ``pair`` need ``ETA < 0.5``, and with ``num_classes`` given ``sym`` needs
    ``ETA <= (K - 1) / K``. Anything else raises :class:`InputError` naming the accepted forms.
    """
    if spec is None:
        return "none", 0.0
    if not isinstance(spec, str):
        raise InputError(f"noise spec must be a string, got {spec!r}; use {_FORMS}.")
    text = spec.strip().lower()
    name, sep, rate = text.partition(":")
    kind = _ALIASES.get(name.strip())
    if kind is None:
        raise InputError(f"unknown noise {spec!r}; use {_FORMS}.")
    if kind == "none":
        if sep:
            raise InputError(f"noise {spec!r} takes no rate; use 'none', or {_FORMS}.")
        return "none", 0.0
    if not sep:
        raise InputError(f"noise {spec!r} needs a rate; use {_FORMS}.")
    try:
        eta = float(rate.strip())
    except ValueError:
        raise InputError(
            f"noise rate {rate.strip()!r} in {spec!r} is not a number; use {_FORMS}."
        ) from None
    try:
        eta = _check_eta(kind, eta, num_classes)
    except InputError as exc:
        raise InputError(f"noise {spec!r}: {exc} Accepted forms: {_FORMS}.") from None
    return kind, eta


def apply_noise(
    dataset: ArrayDataset, spec: str | None, seed: int, dataset_name: str | None = None
) -> tuple[ArrayDataset, NoisyLabels]:
    """A new dataset with noisy labels, and the :class:`NoisyLabels` record.

    The new dataset shares ``x`` (no copy), classes, statistics, name and any extra attributes
    (e.g. CIFAR-100's ``coarse_y``) with ``dataset``, has the noisy labels as ``y`` and the clean
    ones as ``clean_y`` (kept from ``dataset.clean_y`` if it already has one); ``dataset`` itself
    is not modified. ``asym`` takes its map from :func:`asymmetric_map` of ``dataset_name``
    (default ``dataset.name``; CIFAR-100 uses ``dataset.coarse_y``); ``idn`` uses the flattened
    inputs as features. ``"none"`` returns an unchanged copy and an identity record.
    """
    if not isinstance(dataset, ArrayDataset):
        raise InputError(
            f"apply_noise needs an ArrayDataset, got {type(dataset).__name__}; convert it with "
            "trustlab.data.as_array_dataset."
        )
    k = dataset.num_classes
    kind, eta = parse_noise(spec, k)
    y = dataset.y
    if kind == "none":
        clean = y.detach().cpu().numpy().astype(np.int64)
        _rngs(kind, seed, 0)  # validates the seed
        record = _record("none", 0.0, clean, clean.copy(), np.eye(k), seed, y.device)
    elif kind == "sym":
        record = symmetric(y, eta, k, seed)
    elif kind == "pair":
        record = pair_flip(y, eta, k, seed)
    elif kind == "asym":
        name = dataset_name or dataset.name
        cmap = asymmetric_map(name, getattr(dataset, "coarse_y", None), y)
        record = asymmetric(y, eta, cmap, k, seed)
        record.details["dataset"] = str(name)
    else:
        record = instance_dependent(y, eta, k, dataset.x.flatten(1), seed)
    out = ArrayDataset(
        dataset.x,
        record.labels.clone(),
        dataset.classes,
        dataset.mean,
        dataset.std,
        dataset.name,
        validate=False,
    )
    for key, value in vars(dataset).items():
        if key not in vars(out):
            setattr(out, key, value)
    out.clean_y = getattr(dataset, "clean_y", None)
    if not isinstance(out.clean_y, torch.Tensor):
        out.clean_y = y.clone()
    return out, record
