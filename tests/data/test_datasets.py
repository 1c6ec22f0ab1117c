"""ArrayDataset validation, user-supplied array files, generic datasets, batching and sharding."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from trustlab.data import ArrayDataset, as_array_dataset, load_dataset
from trustlab.data.loader import epoch_indices, iterate_batches, num_batches
from trustlab.errors import InputError


def good(n: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.rand(n, 1, 4, 4), torch.arange(n) % 2


def test_array_dataset_basics() -> None:
    x, y = good()
    ds = ArrayDataset(x, y, ["a", "b"], name="t")
    assert len(ds) == 8 and ds.num_classes == 2 and ds.input_shape == (1, 4, 4)
    xi, yi = ds[3]
    assert torch.equal(xi, x[3]) and int(yi) == 1
    sub = ds.subset([0, 2])
    assert len(sub) == 2 and sub.classes == ["a", "b"]
    assert ArrayDataset(x, y).classes == ["0", "1"]


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda x, y: (x.clone().index_fill_(0, torch.tensor([1]), float("nan")), y), "NaN"),
        (lambda x, y: (x, y + 5), "labels span"),
        (lambda x, y: (x, -y), "labels include -1"),
        (lambda x, y: (x * 255, y), r"\[0, 1\]"),
        (lambda x, y: (x[:, 0], y), "expected"),
        (lambda x, y: (x, y[:3]), "labels have shape"),
        (lambda x, y: (x[:0], y[:0]), "empty"),
    ],
)
def test_array_dataset_rejects_bad_input(mutate, message: str) -> None:
    x, y = mutate(*good())
    with pytest.raises(InputError, match=message):
        ArrayDataset(x, y, ["a", "b"])


def test_generic_dataset_is_converted() -> None:
    x, y = good()

    class Plain(torch.utils.data.Dataset):
        classes = ["a", "b"]

        def __len__(self):
            return 8

        def __getitem__(self, i):
            return x[i].numpy(), int(y[i])

    ds = as_array_dataset(Plain())
    assert torch.allclose(ds.x, x) and torch.equal(ds.y, y) and ds.classes == ["a", "b"]

    class Bad(Plain):
        def __getitem__(self, i):
            return x[i]

    with pytest.raises(InputError, match="pair"):
        as_array_dataset(Bad())


def test_unknown_names_and_splits() -> None:
    with pytest.raises(InputError, match="unknown dataset 'cifar11'"):
        load_dataset("cifar11")
    with pytest.raises(InputError, match="split"):
        load_dataset("tensors", "validation")


@pytest.mark.parametrize("fmt", ["npz", "safetensors"])
def test_user_array_file(tmp_path, fmt: str) -> None:
    xtr = (torch.rand(10, 3, 4, 4) * 255).to(torch.uint8)
    ytr = torch.arange(10) % 3
    xte, yte = torch.rand(4, 3, 4, 4), torch.tensor([0, 1, 2, 0])
    path = tmp_path / f"mine.{fmt}"
    if fmt == "npz":
        np.savez(
            path,
            x_train=xtr.numpy(),
            y_train=ytr.numpy(),
            x_test=xte.numpy(),
            y_test=yte.numpy(),
            classes=np.array(["r", "g", "b"]),
        )
    else:
        save_file({"x_train": xtr, "y_train": ytr, "x_test": xte, "y_test": yte}, str(path))
    train = load_dataset("tensors", "train", root=path)
    test = load_dataset("tensors", "test", root=path)
    assert torch.allclose(train.x, xtr.float() / 255) and torch.equal(train.y, ytr)
    assert train.num_classes == test.num_classes == 3 and train.mean == test.mean
    if fmt == "npz":
        assert train.classes == ["r", "g", "b"]


def test_user_array_file_errors(tmp_path) -> None:
    path = tmp_path / "bad.safetensors"
    save_file(
        {
            "x_train": torch.full((4, 1, 2, 2), float("nan")),
            "y_train": torch.zeros(4).long(),
            "x_test": torch.rand(2, 1, 2, 2),
            "y_test": torch.tensor([0, 7]),
        },
        str(path),
    )
    with pytest.raises(InputError, match="NaN"):
        load_dataset("tensors", "train", root=path)
    with pytest.raises(InputError, match="training input"):  # the test split needs train stats
        load_dataset("tensors", "test", root=path)
    ok = tmp_path / "labels.safetensors"
    save_file(
        {
            "x_train": torch.rand(4, 1, 2, 2),
            "y_train": torch.tensor([0, 1, 0, 1]),
            "x_test": torch.rand(2, 1, 2, 2),
            "y_test": torch.tensor([0, 7]),
        },
        str(ok),
    )
    with pytest.raises(InputError, match="labels span"):
        load_dataset("tensors", "test", root=ok)
    floats = tmp_path / "float-labels.npz"
    np.savez(
        floats,
        x_train=np.random.random((4, 1, 2, 2)),
        y_train=np.array([0.0, 1.5, 0, 1]),
        x_test=np.random.random((2, 1, 2, 2)),
        y_test=np.array([0, 1]),
    )
    with pytest.raises(InputError, match="integer class indices"):
        load_dataset("tensors", "train", root=floats)
    with pytest.raises(InputError, match="does not exist"):
        load_dataset("tensors", "train", root=tmp_path / "missing.npz")
    with pytest.raises(InputError, match="data-root"):
        load_dataset("tensors", "train")
    (tmp_path / "p.npz").write_bytes(b"\x80\x04not an npz")
    with pytest.raises(InputError):
        load_dataset("tensors", "train", root=tmp_path / "p.npz")


def test_epoch_indices_are_seeded_and_sharded() -> None:
    a, b = epoch_indices(10, True, 3), epoch_indices(10, True, 3)
    assert torch.equal(a, b) and sorted(a.tolist()) == list(range(10))
    assert not torch.equal(a, epoch_indices(10, True, 4))
    shards = [epoch_indices(10, True, 3, rank=r, world_size=3) for r in range(3)]
    assert {s.numel() for s in shards} == {4}
    assert set(torch.cat(shards).tolist()) == set(range(10))
    assert torch.equal(epoch_indices(5, False, 0), torch.arange(5))


def test_iterate_batches() -> None:
    x, y = good(10)
    ds = ArrayDataset(x, y)
    batches = list(iterate_batches(ds, 4))
    assert [b[0].shape[0] for b in batches] == [4, 4, 2] == [4, 4, 2][: num_batches(10, 4)]
    assert len(list(iterate_batches(ds, 4, drop_last=True))) == 2 == num_batches(10, 4, True)
    order = torch.tensor([9, 0])
    ((bx, by),) = list(iterate_batches(ds, 4, order))
    assert torch.equal(bx, x[[9, 0]]) and torch.equal(by, y[[9, 0]])


def test_subset_carries_per_sample_extras() -> None:
    x, y = good(6)
    ds = ArrayDataset(x, y)
    ds.coarse_y = torch.arange(6) * 10
    ds.coarse_classes = ["u", "v"]
    sub = ds.subset([5, 1])
    assert sub.coarse_y.tolist() == [50, 10] and sub.coarse_classes == ["u", "v"]


def test_float64_inputs_become_float32_and_float_labels_are_refused() -> None:
    ds = ArrayDataset(np.random.default_rng(0).random((4, 1, 2, 2)), np.array([0, 1, 0, 1]))
    assert ds.x.dtype == torch.float32
    with pytest.raises(InputError, match="integer class indices"):
        ArrayDataset(torch.rand(2, 1, 2, 2), torch.tensor([0.5, 1.7]))
    with pytest.raises(InputError, match="integer class indices"):
        ArrayDataset(torch.rand(2, 1, 2, 2), torch.tensor([float("nan"), 1.0]))


@pytest.mark.parametrize(
    ("item", "pattern"),
    [
        (lambda i: (torch.rand(1, 2, 2), float("nan")), "integer class indices"),
        (lambda i: (torch.rand(1, 2, 2), 1.7), "integer class indices"),
        (lambda i: (torch.rand(1, 2, 2), "cat"), "not numeric|integer"),
        (lambda i: (torch.rand(1, 2 + i, 2), 0), "one shape"),
    ],
)
def test_generic_dataset_bad_items(item, pattern: str) -> None:
    class Plain(torch.utils.data.Dataset):
        def __len__(self):
            return 3

        def __getitem__(self, i):
            return item(i)

    with pytest.raises(InputError, match=pattern):
        as_array_dataset(Plain())


def test_tiny_data_shards_for_many_ranks() -> None:
    shards = [epoch_indices(1, True, 0, rank=r, world_size=4) for r in range(4)]
    assert [s.tolist() for s in shards] == [[0], [0], [0], [0]]
    shards = [epoch_indices(3, False, 0, rank=r, world_size=8) for r in range(8)]
    assert all(s.numel() == 1 for s in shards)


def test_stratified_subset_keeps_class_shares_and_is_seeded() -> None:
    from trustlab.data import ArrayDataset

    y = torch.tensor([0] * 50 + [1] * 30 + [2] * 20)
    data = ArrayDataset(torch.rand(100, 1, 4, 4), y, ("a", "b", "c"), (0.5,), (0.5,))
    small = data.stratified(10, seed=3)
    assert len(small) == 10
    assert torch.bincount(small.y, minlength=3).tolist() == [5, 3, 2]
    again = data.stratified(10, seed=3)
    assert torch.equal(small.x, again.x)
    assert not torch.equal(small.x, data.stratified(10, seed=4).x)
    # largest remainder: 7 of (50, 30, 20) -> quotas 3.5, 2.1, 1.4 -> 3 + 2 + 1, then +1 to class 0
    assert torch.bincount(data.stratified(7).y, minlength=3).tolist() == [4, 2, 1]
    # rows are real rows of the original, in their original order, without repeats
    rows = [int(torch.nonzero((data.x == r).all(dim=(1, 2, 3))).flatten()[0]) for r in small.x]
    assert rows == sorted(set(rows))
    assert data.stratified(100) is data and data.stratified(500) is data
    with pytest.raises(InputError, match="subset size"):
        data.stratified(0)


def test_preset_train_and_test_size_take_a_fixed_subset() -> None:
    from trustlab.experiments.base import Preset

    pre = Preset("p", "digits", "mlp", seeds=1, options={"train_size": 100, "test_size": 50})
    train, test = pre.load("train"), pre.load("test")
    assert (len(train), len(test)) == (100, 50)
    assert torch.equal(train.x, pre.load("train").x)
    assert len(Preset("p", "digits", "mlp", seeds=1).load("test")) == 360
