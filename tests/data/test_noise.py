"""Label-noise models: exact per-class counts, targets, transition matrices, seeds, maps, specs."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from trustlab.data.datasets import ArrayDataset
from trustlab.data.noise import (
    CIFAR10_MAP,
    MNIST_MAP,
    SHAPES10_MAP,
    SHAPES10_PAIRS,
    NoisyLabels,
    apply_noise,
    asymmetric,
    asymmetric_map,
    instance_dependent,
    pair_flip,
    parse_noise,
    superclass_map,
    symmetric,
)
from trustlab.data.synthetic import SHAPES
from trustlab.errors import InputError

# unequal class sizes, so that a count taken from the wrong class shows
SIZES = [37, 100, 64, 81, 50, 123, 45, 10, 99, 91]
LABELS = torch.repeat_interleave(torch.arange(10), torch.tensor(SIZES))[
    torch.randperm(sum(SIZES), generator=torch.Generator().manual_seed(0))
]


def class_counts(labels: torch.Tensor, k: int = 10) -> np.ndarray:
    return torch.bincount(labels, minlength=k).numpy()


def flips_per_class(r: NoisyLabels, k: int = 10) -> np.ndarray:
    return torch.bincount(r.clean[r.flipped], minlength=k).numpy()


def check_record(r: NoisyLabels, clean: torch.Tensor, k: int = 10) -> None:
    """Invariants every record satisfies, recomputed independently of the implementation."""
    n = clean.numel()
    assert r.labels.dtype == torch.int64 and r.labels.shape == (n,)
    assert r.flipped.dtype == torch.bool and r.flipped.shape == (n,)
    assert torch.equal(r.clean, clean)
    assert torch.equal(r.flipped, r.labels != clean)
    assert r.labels.min() >= 0 and r.labels.max() < k
    assert r.rate == pytest.approx(r.flipped.double().mean().item())
    assert r.transition.dtype == torch.float64 and r.transition.shape == (k, k)
    assert torch.allclose(r.transition.sum(1), torch.ones(k, dtype=torch.float64))
    assert (r.transition >= 0).all()
    counts = torch.zeros(k, k, dtype=torch.float64)
    counts.index_put_((clean, r.labels), torch.ones(n, dtype=torch.float64), accumulate=True)
    present = counts.sum(1) > 0
    expected = torch.zeros_like(counts)
    expected[present] = counts[present] / counts[present].sum(1, keepdim=True)
    assert torch.allclose(r.realised_transition, expected)
    d = r.to_dict()
    json.dumps(d, allow_nan=False)
    assert d["num_flipped"] == int(r.flipped.sum()) and d["rate"] == r.rate


# ------------------------------------------------------------------------------ symmetric


@pytest.mark.parametrize("eta", [0.0, 0.2, 0.4, 0.8, 0.9])
def test_symmetric_exact_counts_never_itself(eta: float) -> None:
    r = symmetric(LABELS, eta, 10, seed=1)
    check_record(r, LABELS)
    expected = [math.floor(eta * n + 1e-9) for n in SIZES]
    assert flips_per_class(r).tolist() == expected
    assert (r.labels[r.flipped] != r.clean[r.flipped]).all()
    assert r.rate == pytest.approx(sum(expected) / sum(SIZES))
    assert r.kind == "sym" and r.eta == eta and r.seed == 1
    designed = torch.full((10, 10), eta / 9, dtype=torch.float64)
    designed.fill_diagonal_(1 - eta)
    assert torch.allclose(r.transition, designed)
    rd = r.to_dict()
    assert rd["per_class_rate"] == pytest.approx(
        [e / n for e, n in zip(expected, SIZES, strict=True)]
    )


def test_floor_reads_eta_as_written() -> None:
    # 0.29 * 100 is 28.999999999999996 in binary floating point; the spec means 29
    y = torch.arange(1000) % 10
    for fn in (symmetric, pair_flip):
        assert flips_per_class(fn(y, 0.29, 10, 0)).tolist() == [29] * 10
    assert flips_per_class(asymmetric(y, 0.29, {1: 2}, 10, 0))[1] == 29


def test_symmetric_targets_uniform_over_other_classes() -> None:
    y = torch.zeros(20_000, dtype=torch.long)
    r = symmetric(y, 0.75, 4, seed=3)
    targets = torch.bincount(r.labels[r.flipped], minlength=4).numpy()
    assert targets[0] == 0 and targets.sum() == 15_000
    assert np.all(np.abs(targets[1:] - 5000) < 300)  # ~5 sigma of a multinomial


def test_symmetric_eta_bound_depends_on_k() -> None:
    y = torch.tensor([0, 1] * 10)
    assert symmetric(y, 0.5, 2, 0).rate == 0.5  # (K-1)/K is allowed: uniform labels
    with pytest.raises(InputError, match=r"\(K-1\)/K"):
        symmetric(y, 0.6, 2, 0)


@settings(max_examples=40, deadline=None)
@given(
    sizes=st.lists(st.integers(0, 40), min_size=2, max_size=6),
    eta=st.floats(0.0, 0.49),
    seed=st.integers(0, 2**31),
)
def test_exact_counts_property(sizes: list[int], eta: float, seed: int) -> None:
    k = len(sizes)
    if sum(sizes) == 0:
        sizes = [1] + sizes[1:]
    y = torch.repeat_interleave(torch.arange(k), torch.tensor(sizes))
    expected = [math.floor(eta * n) for n in sizes]
    for r in (symmetric(y, eta, k, seed), pair_flip(y, eta, k, seed)):
        check_record(r, y, k)
        got = flips_per_class(r, k).tolist()
        # eta read as its shortest decimal can differ from the binary product by one flip,
        # either way (0.29 * 100 floors to 28 in binary, 29 in decimal; 0.3333333333333333 * 3
        # floors to 1 in binary, 0 in decimal)
        assert all(abs(g - e) <= 1 for g, e in zip(got, expected, strict=True))


# ------------------------------------------------------------------------------ seeds


@pytest.mark.parametrize(
    "make",
    [
        lambda s: symmetric(LABELS, 0.4, 10, s),
        lambda s: asymmetric(LABELS, 0.4, CIFAR10_MAP, 10, s),
        lambda s: pair_flip(LABELS, 0.3, 10, s),
        lambda s: instance_dependent(LABELS, 0.3, 10, torch.rand(len(LABELS), 8), s),
    ],
    ids=["sym", "asym", "pair", "idn"],
)
def test_reproducible_by_seed(make) -> None:
    torch.manual_seed(0)  # the features of idn must not change between the two calls
    a = make(5)
    torch.manual_seed(0)
    b = make(5)
    torch.manual_seed(0)
    c = make(6)
    assert torch.equal(a.labels, b.labels) and torch.equal(a.transition, b.transition)
    assert not torch.equal(a.labels, c.labels)


def test_labels_as_list_array_or_tensor() -> None:
    y = LABELS
    a = symmetric(y, 0.4, 10, 2)
    b = symmetric(y.numpy(), 0.4, 10, 2)
    c = symmetric(y.tolist(), 0.4, 10, 2)
    assert torch.equal(a.labels, b.labels) and torch.equal(a.labels, c.labels)


# ------------------------------------------------------------------------------ asymmetric


def test_asymmetric_exact_counts_from_clean_labels() -> None:
    eta = 0.4
    r = asymmetric(LABELS, eta, CIFAR10_MAP, 10, seed=0)
    check_record(r, LABELS)
    flips = flips_per_class(r)
    for c in range(10):
        expected = math.floor(eta * SIZES[c]) if c in CIFAR10_MAP else 0
        assert flips[c] == expected
    # each flip goes to the mapped class of its CLEAN label (cat <-> dog: no double flips)
    assert torch.equal(
        r.labels[r.flipped], torch.tensor([CIFAR10_MAP[int(c)] for c in r.clean[r.flipped]])
    )
    unmapped = torch.tensor([int(c) not in CIFAR10_MAP for c in LABELS])
    assert torch.equal(r.labels[unmapped], LABELS[unmapped])
    # the swap: clean cats labelled dog and clean dogs labelled cat, counted per clean class
    cat, dog = 3, 5
    cats_as_dogs = (r.clean == cat) & (r.labels == dog)
    dogs_as_cats = (r.clean == dog) & (r.labels == cat)
    assert int(cats_as_dogs.sum()) == math.floor(eta * SIZES[cat])
    assert int(dogs_as_cats.sum()) == math.floor(eta * SIZES[dog])
    designed = torch.eye(10, dtype=torch.float64)
    for s, t in CIFAR10_MAP.items():
        designed[s, s], designed[s, t] = 1 - eta, eta
    assert torch.allclose(r.transition, designed)
    assert r.to_dict()["class_map"] == {str(k): v for k, v in sorted(CIFAR10_MAP.items())}


def test_asymmetric_map_errors() -> None:
    with pytest.raises(InputError, match="itself"):
        asymmetric(LABELS, 0.2, {1: 1}, 10, 0)
    with pytest.raises(InputError, match="num_classes"):
        asymmetric(torch.tensor([0, 1, 2]), 0.2, CIFAR10_MAP, 5, 0)
    with pytest.raises(InputError, match="dict"):
        asymmetric(LABELS, 0.2, [(1, 2)], 10, 0)


def test_fixed_maps() -> None:
    assert asymmetric_map("mnist") == asymmetric_map("digits") == MNIST_MAP
    assert MNIST_MAP == {7: 1, 2: 7, 5: 6, 6: 5, 3: 8}
    assert asymmetric_map("CIFAR10") == {9: 1, 2: 0, 3: 5, 5: 3, 4: 7}
    assert asymmetric_map("cifar10") is not CIFAR10_MAP  # a copy: callers may edit it
    fashion = asymmetric_map("fashion-mnist")  # T-shirt->Shirt, Pullover<->Coat, ->Sneaker
    names = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker")
    names += ("Bag", "Ankle boot")
    assert {names[a]: names[b] for a, b in fashion.items()} == {
        "T-shirt/top": "Shirt",
        "Pullover": "Coat",
        "Coat": "Pullover",
        "Sandal": "Sneaker",
        "Ankle boot": "Sneaker",
    }
    with pytest.raises(InputError, match="cifar10") as exc:
        asymmetric_map("svhn-like")
    assert "shapes10" in str(exc.value) and "sym:ETA" in str(exc.value)


def test_shapes10_map_uses_real_class_names() -> None:
    assert len(SHAPES10_PAIRS) == 5
    for src, dst in SHAPES10_PAIRS:
        assert src in SHAPES and dst in SHAPES and src != dst
    assert asymmetric_map("shapes10") == SHAPES10_MAP
    expected = {
        SHAPES.index("ellipse"): SHAPES.index("circle"),
        SHAPES.index("circle"): SHAPES.index("ellipse"),
        SHAPES.index("ring"): SHAPES.index("crescent"),
        SHAPES.index("star"): SHAPES.index("cross"),
        SHAPES.index("arrow"): SHAPES.index("triangle"),
    }
    assert dict(SHAPES10_MAP) == expected


# a non-consecutive superclass assignment of 12 fine classes to 3 superclasses (+ a singleton)
FINE_TO_COARSE = [2, 0, 1, 0, 2, 1, 1, 0, 2, 3, 0, 1]
SUPERCLASS_MAP = {
    1: 3, 3: 7, 7: 10, 10: 1,  # superclass 0: fine 1, 3, 7, 10
    2: 5, 5: 6, 6: 11, 11: 2,  # superclass 1: fine 2, 5, 6, 11
    0: 4, 4: 8, 8: 0,  # superclass 2: fine 0, 4, 8; fine 9 is alone in superclass 3
}  # fmt: skip


def test_cifar100_map_from_true_superclasses() -> None:
    order = torch.randperm(60, generator=torch.Generator().manual_seed(1))
    fine = torch.arange(12).repeat(5)[order]
    coarse = torch.tensor(FINE_TO_COARSE)[fine]
    assert asymmetric_map("cifar100", coarse_labels=coarse, fine_labels=fine) == SUPERCLASS_MAP
    assert superclass_map(FINE_TO_COARSE) == SUPERCLASS_MAP  # fine -> coarse by fine id
    assert superclass_map(dict(enumerate(FINE_TO_COARSE))) == SUPERCLASS_MAP
    consecutive = {c: (c // 4) * 4 + (c + 1) % 4 for c in range(12)}
    assert consecutive != dict(SUPERCLASS_MAP)
    r = asymmetric(fine, 0.4, SUPERCLASS_MAP, 12, seed=0)
    check_record(r, fine, 12)
    assert (r.clean[r.flipped] != 9).all()  # the singleton superclass maps nothing
    assert torch.equal(
        r.labels[r.flipped], torch.tensor([SUPERCLASS_MAP[int(c)] for c in r.clean[r.flipped]])
    )


def test_cifar100_map_errors() -> None:
    with pytest.raises(InputError, match="coarse_y"):
        asymmetric_map("cifar100")
    with pytest.raises(InputError, match="more than one superclass"):
        superclass_map(torch.tensor([0, 1, 1]), fine_labels=torch.tensor([5, 5, 6]))
    with pytest.raises(InputError, match="length"):
        superclass_map(torch.tensor([0, 1, 1]), fine_labels=torch.tensor([5, 6]))


# ------------------------------------------------------------------------------ pair flip


def test_pair_flip() -> None:
    eta = 0.45
    r = pair_flip(LABELS, eta, 10, seed=4)
    check_record(r, LABELS)
    assert flips_per_class(r).tolist() == [math.floor(eta * n) for n in SIZES]
    assert torch.equal(r.labels[r.flipped], (r.clean[r.flipped] + 1) % 10)
    designed = (1 - eta) * torch.eye(10, dtype=torch.float64)
    designed += eta * torch.roll(torch.eye(10, dtype=torch.float64), 1, dims=1)
    assert torch.allclose(r.transition, designed)
    assert r.transition[9, 0] == eta


# ------------------------------------------------------------------------------ IDN


def test_instance_dependent_rate_near_eta() -> None:
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 10, (5000,), generator=g)
    x = torch.rand(5000, 3, 8, 8, generator=g)  # flattened inside
    r = instance_dependent(y, 0.3, 10, x, seed=0)
    check_record(r, y)
    assert abs(r.rate - 0.3) < 0.03
    expected_rate = float(1 - (r.transition.diagonal() * torch.bincount(y) / 5000).sum())
    assert abs(expected_rate - 0.3) < 0.01  # the truncated normal's mean
    assert (r.realised_transition - r.transition).abs().sum(1).max() < 0.15
    assert r.to_dict()["std"] == 0.1


def test_instance_dependent_never_flips_to_itself() -> None:
    # std 0: every sample flips with probability 0.9; a draw that could return the clean
    # class would give a rate near 0.9 * 9/10 instead
    y = torch.arange(4000) % 10
    x = torch.randn(4000, 16, generator=torch.Generator().manual_seed(1))
    r = instance_dependent(y, 0.9, 10, x, seed=0, std=0.0)
    assert abs(r.rate - 0.9) < 0.02
    assert torch.allclose(r.transition.diagonal(), torch.full((10,), 0.1, dtype=torch.float64))


def test_instance_dependent_depends_on_features() -> None:
    y = torch.zeros(2000, dtype=torch.long)
    x = torch.zeros(2000, 4)
    x[1000:, 0] = 50.0  # two groups of inputs, one clean class: different wrong classes
    r = instance_dependent(y, 0.5, 5, x, seed=2, std=0.0)
    first = torch.bincount(r.labels[:1000][r.flipped[:1000]], minlength=5)
    second = torch.bincount(r.labels[1000:][r.flipped[1000:]], minlength=5)
    assert first[0] == second[0] == 0
    assert (first.float() / first.sum() - second.float() / second.sum()).abs().sum() > 0.5


def test_instance_dependent_zero_and_errors() -> None:
    y = torch.arange(100) % 10
    x = torch.rand(100, 5)
    assert instance_dependent(y, 0.0, 10, x, 0).rate == 0.0
    with pytest.raises(InputError, match="features"):
        instance_dependent(y, 0.3, 10, torch.rand(99, 5), 0)
    with pytest.raises(InputError, match="NaN"):
        instance_dependent(y, 0.3, 10, torch.full((100, 5), float("nan")), 0)
    with pytest.raises(InputError, match="std"):
        instance_dependent(y, 0.3, 10, x, 0, std=-0.1)


# ------------------------------------------------------------------------------ input checks


@pytest.mark.parametrize(
    ("labels", "k", "match"),
    [
        (torch.tensor([0, 1, 10]), 10, r"span \[0, 10\]"),
        (torch.tensor([0, -1]), 10, "span"),
        (torch.tensor([0.0, 1.0]), 10, "integer"),
        (torch.zeros(2, 2, dtype=torch.long), 10, "1-D"),
        (torch.tensor([], dtype=torch.long), 10, "non-empty"),
        ("0123", 10, "str"),
        (torch.tensor([0, 0]), 1, "num_classes"),
    ],
)
def test_bad_labels(labels, k: int, match: str) -> None:
    with pytest.raises(InputError, match=match):
        symmetric(labels, 0.2, k, 0)


@pytest.mark.parametrize("eta", [-0.1, 1.0, float("nan"), True, "0.2"])
def test_bad_eta(eta) -> None:
    with pytest.raises(InputError, match="eta"):
        symmetric(LABELS, eta, 10, 0)


def test_bad_seed_and_asym_eta() -> None:
    with pytest.raises(InputError, match="seed"):
        symmetric(LABELS, 0.2, 10, -1)
    with pytest.raises(InputError, match="0.5"):
        asymmetric(LABELS, 0.5, CIFAR10_MAP, 10, 0)
    with pytest.raises(InputError, match="0.5"):
        pair_flip(LABELS, 0.6, 10, 0)


# ------------------------------------------------------------------------------ parse_noise


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("sym:0.4", ("sym", 0.4)),
        (" Symmetric : 0.8 ", ("sym", 0.8)),
        ("asym:0.4", ("asym", 0.4)),
        ("pair:0.45", ("pair", 0.45)),
        ("idn:0.3", ("idn", 0.3)),
        ("none", ("none", 0.0)),
        ("clean", ("none", 0.0)),
        (None, ("none", 0.0)),
        ("sym:0", ("sym", 0.0)),
    ],
)
def test_parse_noise(spec, expected) -> None:
    assert parse_noise(spec) == expected


@pytest.mark.parametrize(
    "spec",
    ["sym", "sym:", "sym:abc", "sym:1.0", "sym:-0.1", "sym:nan", "gauss:0.2", "none:0.2",
     "asym:0.5", "pair:0.6", "idn:1", "", 0.4],
)  # fmt: skip
def test_parse_noise_errors(spec) -> None:
    with pytest.raises(InputError, match="sym:ETA"):
        parse_noise(spec)


def test_parse_noise_sym_bound_with_k() -> None:
    assert parse_noise("sym:0.9", num_classes=10) == ("sym", 0.9)
    with pytest.raises(InputError, match=r"\(K-1\)/K"):
        parse_noise("sym:0.6", num_classes=2)


# ------------------------------------------------------------------------------ apply_noise


def make_dataset(name: str = "cifar10", n: int = 200, k: int = 10) -> ArrayDataset:
    g = torch.Generator().manual_seed(0)
    ds = ArrayDataset(
        torch.rand(n, 3, 4, 4, generator=g),
        torch.arange(n) % k,
        [f"c{i}" for i in range(k)],
        name=name,
    )
    return ds


def test_apply_noise_returns_new_dataset() -> None:
    ds = make_dataset()
    ds.coarse_y = ds.y // 2
    before = ds.y.clone()
    out, rec = apply_noise(ds, "sym:0.4", seed=0)
    assert out is not ds and out.x is ds.x
    assert torch.equal(ds.y, before)  # the input is untouched
    assert torch.equal(out.y, rec.labels) and out.y is not rec.labels
    assert torch.equal(out.clean_y, before) and torch.equal(rec.clean, before)
    assert torch.equal(out.coarse_y, ds.coarse_y)
    assert (out.name, out.classes, out.mean, out.std) == (ds.name, ds.classes, ds.mean, ds.std)
    assert rec.kind == "sym" and rec.rate == pytest.approx(0.4)
    out.validate()
    # subsets of the noisy dataset keep the clean labels aligned
    sub = out.subset([3, 1])
    assert torch.equal(sub.clean_y, before[[3, 1]])


def test_apply_noise_asym_map_from_name() -> None:
    ds = make_dataset("digits")
    _, rec = apply_noise(ds, "asym:0.2", seed=0)
    assert set(rec.clean[rec.flipped].tolist()) == set(MNIST_MAP)
    _, rec = apply_noise(ds, "asym:0.2", seed=0, dataset_name="cifar10")
    assert set(rec.clean[rec.flipped].tolist()) == set(CIFAR10_MAP)
    assert rec.to_dict()["dataset"] == "cifar10"
    with pytest.raises(InputError, match="no asymmetric noise map"):
        apply_noise(make_dataset("tensors:mine.npz"), "asym:0.2", seed=0)


def test_apply_noise_cifar100_uses_coarse_y() -> None:
    ds = make_dataset("cifar100", n=120, k=12)
    ds.coarse_y = torch.tensor(FINE_TO_COARSE)[ds.y]
    out, rec = apply_noise(ds, "asym:0.4", seed=1)
    assert torch.equal(
        rec.labels[rec.flipped],
        torch.tensor([SUPERCLASS_MAP[int(c)] for c in rec.clean[rec.flipped]]),
    )
    del ds.coarse_y
    with pytest.raises(InputError, match="coarse"):
        apply_noise(ds, "asym:0.4", seed=1)


def test_apply_noise_none_pair_idn() -> None:
    ds = make_dataset()
    out, rec = apply_noise(ds, "none", seed=0)
    assert torch.equal(out.y, ds.y) and rec.rate == 0.0 and rec.kind == "none"
    assert torch.equal(rec.transition, torch.eye(10, dtype=torch.float64))
    _, rec = apply_noise(ds, "pair:0.2", seed=0)
    assert rec.kind == "pair" and rec.rate == pytest.approx(0.2)
    out, rec = apply_noise(ds, "idn:0.3", seed=0)
    assert rec.kind == "idn" and 0.1 < rec.rate < 0.5
    assert torch.equal(out.y, rec.labels)
    with pytest.raises(InputError, match="sym:ETA"):
        apply_noise(ds, "sym:0.95", seed=0)  # above (K-1)/K = 0.9
    with pytest.raises(InputError, match="ArrayDataset"):
        apply_noise([(torch.zeros(1), 0)], "sym:0.2", seed=0)
