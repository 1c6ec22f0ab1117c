"""Disjoint splits of a dataset among parties, for collaborative and federated learning.

Every scheme takes labels (a 1-D integer tensor / array / list, a dataset with ``.y`` or
``.targets``, or any map-style dataset yielding ``(x, y)``), the number of parties and a seed,
and returns ``list[torch.LongTensor]``: one sorted index tensor per party, pairwise disjoint,
each non-empty. The same arguments give the same split (one ``numpy.random.Generator`` seeded
with ``seed`` drives every draw).

Schemes (FDPDDL, Lyu et al., TDSC 2020, arXiv:2007.09370, evaluates "balanced", "imbalanced
shard sizes" and "imbalanced class distributions"; Dirichlet is the usual federated recipe):

* :func:`iid` - equal random shards.
* :func:`size_imbalanced` - random shards whose sizes grow across parties (default linear,
  party ``i`` gets a share proportional to ``i + 1``), or explicit sizes / fractions.
* :func:`class_imbalanced` - party ``i`` holds only some classes (default: from 1 class for the
  first party up to all classes for the last, linearly), each class shared among its holders.
* :func:`dirichlet` - per-class party proportions drawn from ``Dir(alpha)`` (Hsu et al. 2019,
  arXiv:1909.06335; Yurochkin et al. 2019; Li et al., NIID-Bench, ICDE 2022), redrawn until
  every party has ``min_size`` samples.

:func:`partition` dispatches on a scheme name (``"iid"``, ``"size"``, ``"class"``,
``"dirichlet"``) for configs and the CLI.
"""

from __future__ import annotations

import inspect
import math
import numbers
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from trustlab.errors import InputError
from trustlab.utils.validate import check_int

LabelsLike = Any  # Tensor | np.ndarray | Sequence[int] | dataset with .y / .targets | Dataset


# --------------------------------------------------------------------------------------------
# Input checks and helpers
# --------------------------------------------------------------------------------------------


def as_labels(labels: LabelsLike) -> np.ndarray:
    """Labels as a 1-D ``int64`` numpy array; raise :class:`InputError` on anything else."""
    arrays = (torch.Tensor, np.ndarray, list, tuple)
    if not isinstance(labels, arrays):
        if hasattr(labels, "y"):
            labels = labels.y
        elif hasattr(labels, "targets"):  # torchvision-style datasets
            labels = labels.targets
        elif hasattr(labels, "__len__") and hasattr(labels, "__getitem__"):
            # a plain map-style Dataset yielding (x, y): read each label once
            labels = [int(torch.as_tensor(labels[i][1]).item()) for i in range(len(labels))]
        else:
            raise InputError(
                f"cannot read labels from a {type(labels).__name__}; pass a 1-D integer "
                "tensor/array of labels or a dataset with a .y attribute."
            )
    if isinstance(labels, torch.Tensor):
        labels = labels.detach().cpu().numpy()
    arr = np.asarray(labels)
    if arr.ndim != 1:
        raise InputError(
            f"labels have shape {arr.shape}; expected a 1-D vector of class indices (N,). "
            "Pass dataset.y, or argmax one-hot labels first."
        )
    if arr.size == 0:
        raise InputError("labels are empty: there is nothing to partition.")
    if arr.dtype.kind not in "iu":
        raise InputError(
            f"labels have dtype {arr.dtype}; expected integer class indices. Convert them with "
            ".long() (or .astype(int)) first."
        )
    if arr.min() < 0:
        raise InputError(f"labels contain negative values (min {arr.min()}); expected >= 0.")
    return arr.astype(np.int64, copy=False)


def _setup(labels: LabelsLike, num_parties: Any, seed: Any) -> tuple[np.ndarray, int, Any]:
    y = as_labels(labels)
    n = check_int("num_parties", num_parties, 1)
    if n > y.shape[0]:
        raise InputError(
            f"num_parties={n} is more than the {y.shape[0]} samples; every party needs at least "
            "one sample. Use fewer parties or more data."
        )
    s = check_int("seed", seed, 0)
    return y, n, np.random.default_rng(s)


def _finish(parts: Sequence[np.ndarray], scheme: str, hint: str) -> list[torch.Tensor]:
    empty = [i for i, p in enumerate(parts) if len(p) == 0]
    if empty:
        raise InputError(f"{scheme} partition left parties {empty} without samples; {hint}")
    return [torch.from_numpy(np.sort(np.asarray(p, dtype=np.int64))) for p in parts]


def _apportion(total: int, weights: np.ndarray) -> np.ndarray:
    """Integer counts summing to ``total``, proportional to ``weights`` (largest remainder)."""
    exact = total * weights / weights.sum()
    counts = np.floor(exact).astype(np.int64)
    short = total - int(counts.sum())
    if short > 0:
        order = np.argsort(-(exact - counts), kind="stable")
        counts[order[:short]] += 1
    return counts


def _split_by_counts(perm: np.ndarray, counts: Sequence[int]) -> list[np.ndarray]:
    return np.split(perm[: int(np.sum(counts))], np.cumsum(counts)[:-1])


def party_class_counts(
    labels: LabelsLike, parts: Sequence[torch.Tensor], num_classes: int | None = None
) -> torch.Tensor:
    """``(num_parties, num_classes)`` table of how many samples of each class each party holds."""
    y = torch.from_numpy(as_labels(labels))
    k = int(num_classes) if num_classes is not None else int(y.max()) + 1
    return torch.stack([torch.bincount(y[p], minlength=k) for p in parts])


# --------------------------------------------------------------------------------------------
# Schemes
# --------------------------------------------------------------------------------------------


def iid(
    labels: LabelsLike, num_parties: int, seed: int, size: int | None = None
) -> list[torch.Tensor]:
    """Equal random shards (FDPDDL's balanced setting).

    With ``size=None`` all samples are dealt out and shard sizes differ by at most one;
    with ``size`` every party gets exactly ``size`` samples (``size * num_parties <= N``) and
    the rest is left out.
    """
    y, n, rng = _setup(labels, num_parties, seed)
    perm = rng.permutation(y.shape[0])
    if size is None:
        parts = np.array_split(perm, n)
    else:
        size = check_int("size", size, 1)
        if size * n > y.shape[0]:
            raise InputError(
                f"size={size} per party x {n} parties = {size * n} samples, but there are only "
                f"{y.shape[0]}; use size <= {y.shape[0] // n}."
            )
        parts = _split_by_counts(perm, [size] * n)
    return _finish(parts, "iid", "use fewer parties.")


PROGRESSIONS: dict[str, Callable[[int], np.ndarray]] = {
    "linear": lambda n: np.arange(1, n + 1, dtype=np.float64),
    "geometric": lambda n: 2.0 ** np.arange(n, dtype=np.float64),
}


def size_imbalanced(
    labels: LabelsLike,
    num_parties: int,
    seed: int,
    sizes: Sequence[int] | Sequence[float] | None = None,
    progression: str = "linear",
    total: int | None = None,
) -> list[torch.Tensor]:
    """Random shards of different sizes (FDPDDL's imbalanced-shard-size setting).

    Args:
        sizes: ``None`` (default) for the ``progression``; a sequence of ints = exact sample
            counts per party (sum ``<= N``); a sequence of floats = fractions of ``N`` per party
            (positive, sum ``<= 1``; when they sum to 1 every sample is dealt out).
        progression: shares when ``sizes`` is None: ``"linear"`` (default), party ``i`` gets a
            share proportional to ``i + 1`` (1:2:...:n); ``"geometric"``, proportional to
            ``2 ** i``. (The FDPDDL authors' code draws ``U(0.1, 0.9)`` weights instead; pass
            explicit ``sizes`` to match a given draw.)
        total: how many samples the progression deals out (default all ``N``), e.g. FDPDDL-style
            experiments that spread a fixed budget of examples among the parties. (With a budget
            too small for the shares, a party rounded down to 0 takes 1 from the largest.)
    """
    y, n, rng = _setup(labels, num_parties, seed)
    N = y.shape[0]
    if sizes is not None:
        vals = list(sizes)
        if len(vals) != n:
            raise InputError(f"sizes has {len(vals)} entries for {n} parties; give one per party.")
        if all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in vals):
            counts = np.asarray(vals, dtype=np.int64)
            if counts.min() < 1 or counts.sum() > N:
                raise InputError(
                    f"sizes {vals} must be >= 1 each and sum to at most N={N} (they sum to "
                    f"{int(counts.sum())})."
                )
        else:
            frac = np.asarray(vals, dtype=np.float64)
            if not np.all(np.isfinite(frac)) or frac.min() <= 0 or frac.sum() > 1 + 1e-9:
                raise InputError(
                    f"fractions {vals} must be positive and sum to at most 1 (sum "
                    f"{frac.sum():.4g}); pass integers for absolute sizes."
                )
            if math.isclose(frac.sum(), 1.0, abs_tol=1e-9):
                counts = _apportion(N, frac)
            else:
                counts = np.floor(frac * N).astype(np.int64)
    else:
        if progression not in PROGRESSIONS:
            raise InputError(
                f"unknown progression {progression!r}; use one of {sorted(PROGRESSIONS)}."
            )
        budget = N if total is None else check_int("total", total, n)
        if budget > N:
            raise InputError(f"total={budget} is more than the {N} samples; use total <= {N}.")
        counts = _apportion(budget, PROGRESSIONS[progression](n))
        for i in np.flatnonzero(counts == 0):  # tiny budgets: no party is left empty
            counts[np.argmax(counts)] -= 1
            counts[i] = 1
    parts = _split_by_counts(rng.permutation(N), counts)
    return _finish(parts, "size-imbalanced", "increase the sizes / fractions or the data.")


def _default_classes_per_party(n: int, k: int) -> list[int]:
    if n == 1:
        return [k]
    return [int(round(1 + i * (k - 1) / (n - 1))) for i in range(n)]


def class_imbalanced(
    labels: LabelsLike,
    num_parties: int,
    seed: int,
    classes_per_party: int | Sequence[int] | None = None,
) -> list[torch.Tensor]:
    """Each party holds only a subset of the classes (FDPDDL's imbalanced-class setting).

    ``classes_per_party``: an int (the same for every party), one int per party, or ``None``
    (default) for a linear progression from 1 class (first party) to all ``K`` classes (last
    party), e.g. 1, 4, 7, 10 for 4 parties and 10 classes.

    Assignment: the ``K`` classes present in ``labels`` are shuffled (seeded) into a ring and
    dealt round-robin, party ``i`` taking the next ``c_i`` classes, so that every class is held
    by someone whenever ``sum(c_i) >= K``. Each class's samples are shuffled and split into
    near-equal parts among the parties holding it. Samples of classes nobody holds are left
    out. Raises :class:`InputError` if a party ends up empty (a class with fewer samples than
    holders).
    """
    y, n, rng = _setup(labels, num_parties, seed)
    present = np.unique(y)
    k = present.shape[0]
    if classes_per_party is None:
        cpp = _default_classes_per_party(n, k)
    elif isinstance(classes_per_party, numbers.Integral):
        cpp = [check_int("classes_per_party", classes_per_party, 1)] * n
    else:
        cpp = [check_int("classes_per_party entries", c, 1) for c in classes_per_party]
        if len(cpp) != n:
            raise InputError(
                f"classes_per_party has {len(cpp)} entries for {n} parties; give one per party."
            )
    if max(cpp) > k:
        raise InputError(
            f"classes_per_party asks for {max(cpp)} classes but the labels contain only {k}; "
            f"use at most {k}."
        )
    ring = rng.permutation(present)
    holders: dict[int, list[int]] = {int(c): [] for c in present}
    start = 0
    for party, c in enumerate(cpp):
        for j in range(c):
            holders[int(ring[(start + j) % k])].append(party)
        start = (start + c) % k
    parts: list[list[np.ndarray]] = [[] for _ in range(n)]
    for cls in present:
        owners = holders[int(cls)]
        if not owners:
            continue
        idx = rng.permutation(np.flatnonzero(y == cls))
        for owner, chunk in zip(owners, np.array_split(idx, len(owners)), strict=True):
            parts[owner].append(chunk)
    merged = [np.concatenate(p) if p else np.empty(0, np.int64) for p in parts]
    return _finish(
        merged, "class-imbalanced", "some class has fewer samples than parties holding it."
    )


def dirichlet(
    labels: LabelsLike,
    num_parties: int,
    alpha: float,
    seed: int,
    min_size: int = 10,
    balance: bool = True,
    max_tries: int = 1000,
) -> list[torch.Tensor]:
    """Label-skewed split: per-class party proportions ``p_c ~ Dir(alpha * 1_n)``.

    For each class, the class's shuffled samples are cut among the parties according to
    ``p_c``; small ``alpha`` (e.g. 0.1) gives each party few dominant classes, large ``alpha``
    (e.g. 100) approaches an iid split. As in the reference implementation (Yurochkin et al.
    2019; Li et al., NIID-Bench 2022), with ``balance=True`` a party that already holds more
    than ``N / n`` samples gets no further share, and the whole draw is repeated until every
    party has at least ``min_size`` samples (default 10), at most ``max_tries`` times.
    Every sample is assigned.
    """
    y, n, rng = _setup(labels, num_parties, seed)
    a = float(alpha)
    if not math.isfinite(a) or a <= 0:
        raise InputError(f"alpha must be a positive number, got {alpha!r} (e.g. 0.1 or 0.5).")
    min_size = check_int("min_size", min_size, 1)
    N = y.shape[0]
    if min_size * n > N:
        raise InputError(
            f"min_size={min_size} x {n} parties needs {min_size * n} samples but there are {N}; "
            f"use min_size <= {N // n}."
        )
    by_class = [np.flatnonzero(y == c) for c in np.unique(y)]
    for _ in range(check_int("max_tries", max_tries, 1)):
        sizes = np.zeros(n, dtype=np.int64)
        parts: list[list[np.ndarray]] = [[] for _ in range(n)]
        for members in by_class:
            idx = rng.permutation(members)
            p = rng.dirichlet(np.full(n, a))
            if balance:
                p = p * (sizes < N / n)
            total = p.sum()
            p = p / total if total > 0 and np.isfinite(total) else np.full(n, 1.0 / n)
            cuts = (np.cumsum(p) * idx.shape[0]).astype(np.int64)[:-1]
            for party, chunk in enumerate(np.split(idx, cuts)):
                parts[party].append(chunk)
                sizes[party] += chunk.shape[0]
        if sizes.min() >= min_size:
            merged = [np.concatenate(p) for p in parts]
            return _finish(merged, "dirichlet", "lower min_size.")
    raise InputError(
        f"dirichlet partition: no draw in {max_tries} tries gave every one of {n} parties "
        f"min_size={min_size} samples (alpha={a}); lower min_size, raise alpha or use fewer "
        "parties."
    )


# --------------------------------------------------------------------------------------------
# Dispatcher
# --------------------------------------------------------------------------------------------

SCHEMES: dict[str, Callable[..., list[torch.Tensor]]] = {
    "iid": iid,
    "size": size_imbalanced,
    "class": class_imbalanced,
    "dirichlet": dirichlet,
}


def partition(
    labels: LabelsLike, num_parties: int, scheme: str, seed: int, **kw: Any
) -> list[torch.Tensor]:
    """Split among ``num_parties`` with the named ``scheme``: ``"iid"`` (:func:`iid`),
    ``"size"`` (:func:`size_imbalanced`), ``"class"`` (:func:`class_imbalanced`) or
    ``"dirichlet"`` (:func:`dirichlet`, needs ``alpha=``); ``kw`` go to the scheme."""
    key = str(scheme).lower()
    if key not in SCHEMES:
        raise InputError(f"unknown partition scheme {scheme!r}; use one of {sorted(SCHEMES)}.")
    fn = SCHEMES[key]
    params = inspect.signature(fn).parameters
    allowed = [p for p in params if p not in ("labels", "num_parties", "seed")]
    unknown = sorted(set(kw) - set(allowed))
    if unknown:
        raise InputError(
            f"partition scheme {key!r} does not take {unknown}; its options are {allowed}."
        )
    missing = [p for p in allowed if params[p].default is inspect.Parameter.empty and p not in kw]
    if missing:
        raise InputError(f"partition scheme {key!r} needs {missing} (e.g. alpha=0.5).")
    return fn(labels, num_parties, seed=seed, **kw)


__all__ = [
    "PROGRESSIONS",
    "SCHEMES",
    "as_labels",
    "class_imbalanced",
    "dirichlet",
    "iid",
    "partition",
    "party_class_counts",
    "size_imbalanced",
]
