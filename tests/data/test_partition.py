"""Party partitions: disjointness, coverage, sizes, determinism, class statistics, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trustlab.data.datasets import ArrayDataset
from trustlab.data.partition import (
    as_labels,
    class_imbalanced,
    dirichlet,
    iid,
    partition,
    party_class_counts,
    size_imbalanced,
)
from trustlab.errors import InputError

LABELS = torch.arange(1000) % 10  # 100 samples per class


def assert_valid(parts: list[torch.Tensor], n: int) -> torch.Tensor:
    """Disjoint, non-empty, sorted int64 index tensors within range; returns their union."""
    assert all(p.dtype == torch.int64 and p.dim() == 1 and p.numel() > 0 for p in parts)
    assert all(torch.equal(p, p.sort().values) for p in parts)
    allidx = torch.cat(parts)
    assert allidx.unique().numel() == allidx.numel(), "parties overlap"
    assert allidx.min() >= 0 and allidx.max() < n
    return allidx


def same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


# ------------------------------------------------------------------------------ iid


def test_iid_covers_everything_equal_sizes() -> None:
    parts = iid(torch.arange(103) % 7, 4, seed=0)
    allidx = assert_valid(parts, 103)
    assert allidx.numel() == 103
    assert sorted(p.numel() for p in parts) == [25, 26, 26, 26]


def test_iid_fixed_size_and_determinism() -> None:
    parts = iid(LABELS, 5, seed=3, size=40)
    assert_valid(parts, 1000)
    assert [p.numel() for p in parts] == [40] * 5
    assert same(parts, iid(LABELS, 5, seed=3, size=40))
    assert not same(parts, iid(LABELS, 5, seed=4, size=40))
    # roughly class-balanced: every party sees most classes
    counts = party_class_counts(LABELS, iid(LABELS, 4, seed=0))
    assert counts.sum() == 1000 and (counts > 0).all()
    with pytest.raises(InputError, match="size=300 per party x 4 parties"):
        iid(LABELS, 4, seed=0, size=300)


# ------------------------------------------------------------------------------ size


def test_size_default_linear_progression() -> None:
    parts = size_imbalanced(LABELS, 4, seed=0)
    assert_valid(parts, 1000)
    assert [p.numel() for p in parts] == [100, 200, 300, 400]  # 1:2:3:4
    geo = size_imbalanced(LABELS, 3, seed=0, progression="geometric", total=700)
    assert [p.numel() for p in geo] == [100, 200, 400]
    assert_valid(geo, 1000)
    tiny = size_imbalanced(torch.zeros(5, dtype=torch.long), 4, seed=0)  # 0.5 rounds to 0
    assert [p.numel() for p in tiny] == [1, 1, 1, 2]


def test_size_explicit_sizes_and_fractions() -> None:
    parts = size_imbalanced(LABELS, 3, seed=1, sizes=[10, 50, 7])
    assert [p.numel() for p in parts] == [10, 50, 7]
    fr = size_imbalanced(LABELS, 3, seed=1, sizes=[0.5, 0.3, 0.2])
    assert [p.numel() for p in fr] == [500, 300, 200]
    assert torch.cat(fr).numel() == 1000
    partial = size_imbalanced(LABELS, 2, seed=1, sizes=[0.25, 0.1])
    assert [p.numel() for p in partial] == [250, 100]
    uneven = size_imbalanced(torch.zeros(10, dtype=torch.long), 3, seed=0, sizes=[1 / 3] * 3)
    assert sum(p.numel() for p in uneven) == 10
    assert same(parts, size_imbalanced(LABELS, 3, seed=1, sizes=[10, 50, 7]))


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"sizes": [10, 20]}, "2 entries for 3 parties"),
        ({"sizes": [10, 0, 5]}, "must be >= 1 each"),
        ({"sizes": [500, 500, 1]}, "sum to at most N=1000"),
        ({"sizes": [0.5, 0.5, 0.5]}, "sum to at most 1"),
        ({"sizes": [0.5, -0.1, 0.1]}, "must be positive"),
        ({"progression": "cubic"}, "unknown progression 'cubic'"),
        ({"total": 2000}, "total=2000 is more than"),
    ],
)
def test_size_errors(kw: dict, match: str) -> None:
    with pytest.raises(InputError, match=match):
        size_imbalanced(LABELS, 3, seed=0, **kw)


# ------------------------------------------------------------------------------ class


def test_class_default_progression_and_membership() -> None:
    parts = class_imbalanced(LABELS, 4, seed=0)
    allidx = assert_valid(parts, 1000)
    counts = party_class_counts(LABELS, parts)
    held = (counts > 0).sum(1).tolist()
    assert held == [1, 4, 7, 10]  # linear from 1 class to all 10
    assert allidx.numel() == 1000  # 22 class slots >= 10 classes: every class is held
    # each class is split evenly among the parties that hold it
    for c in range(10):
        nonzero = counts[:, c][counts[:, c] > 0]
        assert nonzero.sum() == 100 and nonzero.max() - nonzero.min() <= 1
    assert same(parts, class_imbalanced(LABELS, 4, seed=0))
    assert not same(parts, class_imbalanced(LABELS, 4, seed=1))


def test_class_parties_hold_only_their_classes() -> None:
    y = torch.arange(600) % 6
    parts = class_imbalanced(y, 3, seed=5, classes_per_party=2)
    assert_valid(parts, 600)
    seen = [set(y[p].tolist()) for p in parts]
    assert all(len(s) == 2 for s in seen)
    assert set().union(*seen) == set(range(6))  # round-robin: disjoint class sets here
    assert sum(p.numel() for p in parts) == 600
    explicit = class_imbalanced(y, 3, seed=5, classes_per_party=[1, 1, 1])
    assert [len(set(y[p].tolist())) for p in explicit] == [1, 1, 1]
    assert sum(p.numel() for p in explicit) == 300  # three classes are held by nobody


def test_class_errors() -> None:
    with pytest.raises(InputError, match="only 10"):
        class_imbalanced(LABELS, 3, seed=0, classes_per_party=11)
    with pytest.raises(InputError, match="2 entries for 3 parties"):
        class_imbalanced(LABELS, 3, seed=0, classes_per_party=[1, 2])
    with pytest.raises(InputError, match="without samples"):  # class of 1 sample, 3 holders
        class_imbalanced(torch.tensor([0, 1, 1, 1, 1]), 3, seed=0, classes_per_party=[1, 1, 1])


# ------------------------------------------------------------------------------ dirichlet


def _mean_entropy(counts: torch.Tensor) -> float:
    p = counts.float() / counts.sum(1, keepdim=True)
    return float(-(p * p.clamp_min(1e-12).log()).sum(1).mean())


def test_dirichlet_small_alpha_is_skewed_large_alpha_near_iid() -> None:
    y = torch.arange(2000) % 10
    skewed = dirichlet(y, 5, alpha=0.1, seed=0)
    flat = dirichlet(y, 5, alpha=1000.0, seed=0)
    for parts in (skewed, flat):
        assert assert_valid(parts, 2000).numel() == 2000  # every sample assigned
        assert min(p.numel() for p in parts) >= 10
    h_skewed = _mean_entropy(party_class_counts(y, skewed))
    h_flat = _mean_entropy(party_class_counts(y, flat))
    assert h_flat > 0.98 * np.log(10)  # near-uniform class mix
    assert h_skewed < 0.7 * np.log(10)  # a few dominant classes per party
    assert same(skewed, dirichlet(y, 5, alpha=0.1, seed=0))
    assert not same(skewed, dirichlet(y, 5, alpha=0.1, seed=1))


def test_dirichlet_min_size_and_errors() -> None:
    parts = dirichlet(LABELS, 8, alpha=0.05, seed=2, min_size=50)
    assert min(p.numel() for p in parts) >= 50
    with pytest.raises(InputError, match="min_size=200 x 8 parties"):
        dirichlet(LABELS, 8, alpha=0.5, seed=0, min_size=200)
    with pytest.raises(InputError, match="alpha must be a positive"):
        dirichlet(LABELS, 3, alpha=0.0, seed=0)
    with pytest.raises(InputError, match="no draw in 2 tries"):
        dirichlet(LABELS, 10, alpha=0.001, seed=0, min_size=100, balance=False, max_tries=2)


# ------------------------------------------------------------------------------ dispatcher, inputs


def test_partition_dispatches() -> None:
    assert same(partition(LABELS, 4, "iid", 7), iid(LABELS, 4, 7))
    assert same(partition(LABELS, 4, "size", 7), size_imbalanced(LABELS, 4, 7))
    assert same(partition(LABELS, 4, "CLASS", 7), class_imbalanced(LABELS, 4, 7))
    assert same(partition(LABELS, 4, "dirichlet", 7, alpha=0.3), dirichlet(LABELS, 4, 0.3, seed=7))


@pytest.mark.parametrize(
    ("args", "kw", "match"),
    [
        ((LABELS, 3, "shards", 0), {}, "unknown partition scheme 'shards'"),
        ((LABELS, 0, "iid", 0), {}, "num_parties must be an integer >= 1"),
        ((LABELS, 2.5, "iid", 0), {}, "num_parties must be an integer"),
        ((torch.arange(5), 6, "iid", 0), {}, "num_parties=6 is more than the 5 samples"),
        ((LABELS, 3, "iid", -1), {}, "seed must be an integer >= 0"),
        ((LABELS, 3, "dirichlet", 0), {}, r"needs \['alpha'\]"),
        ((LABELS, 3, "iid", 0), {"alpha": 1.0}, r"does not take \['alpha'\]"),
        ((LABELS.float(), 3, "iid", 0), {}, "expected integer class indices"),
        ((LABELS.view(10, 100), 3, "iid", 0), {}, "expected a 1-D vector"),
        ((torch.tensor([], dtype=torch.long), 1, "iid", 0), {}, "labels are empty"),
        ((torch.tensor([0, -1, 2]), 1, "iid", 0), {}, "negative"),
        ((object(), 2, "iid", 0), {}, "cannot read labels from a object"),
    ],
)
def test_partition_errors(args: tuple, kw: dict, match: str) -> None:
    with pytest.raises(InputError, match=match):
        partition(*args, **kw)


def test_accepts_arrays_lists_and_datasets() -> None:
    y = (np.arange(60) % 3).astype(np.int32)
    ds = ArrayDataset(torch.zeros(60, 1, 2, 2), torch.from_numpy(y).long())

    class Plain(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return 60

        def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
            return torch.zeros(1), int(y[i])

    ref = iid(y, 3, seed=1)
    for src in (y.tolist(), torch.from_numpy(y), ds, Plain()):
        assert same(iid(src, 3, seed=1), ref)
    assert as_labels(ds).dtype == np.int64


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    y=st.lists(st.integers(0, 5), min_size=1, max_size=80),
    n=st.integers(1, 8),
    scheme=st.sampled_from(["iid", "size", "class", "dirichlet"]),
    seed=st.integers(0, 2**32),
)
def test_property_disjoint_nonempty_deterministic(y: list[int], n: int, scheme: str, seed: int):
    labels = torch.tensor(y)
    kw = {"alpha": 0.5, "min_size": 1, "max_tries": 20} if scheme == "dirichlet" else {}
    try:
        parts = partition(labels, n, scheme, seed, **kw)
    except InputError:
        return  # too few samples for this many parties / classes: a clear error is fine
    assert len(parts) == n
    allidx = assert_valid(parts, len(y))
    if scheme in ("iid", "size", "dirichlet"):
        assert allidx.numel() == len(y)  # these schemes deal out every sample by default
    assert same(parts, partition(labels, n, scheme, seed, **kw))
