"""Checkpoints: safetensors only, metadata in header and sidecar, atomic, clear refusals."""

from __future__ import annotations

import json
import pickle

import pytest
import torch
from torch import nn

from trustlab.errors import CheckpointError
from trustlab.train import checkpoint as ck


def test_round_trip_with_meta(tmp_path) -> None:
    t = {"a": torch.arange(6.0).view(2, 3), "b": torch.tensor([1, 2], dtype=torch.int64)}
    path = ck.save_checkpoint(tmp_path / "x.safetensors", t, {"epoch": 3, "note": "hi"})
    tensors, meta = ck.load_checkpoint(path)
    assert torch.equal(tensors["a"], t["a"]) and torch.equal(tensors["b"], t["b"])
    assert meta["epoch"] == 3 and meta["format"] == ck.FORMAT
    assert json.loads(ck.sidecar_path(path).read_text()) == meta
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.json", "x.safetensors"]


def test_shared_and_strided_tensors_are_saved(tmp_path) -> None:
    base = torch.arange(12.0).view(3, 4)
    path = ck.save_checkpoint(tmp_path / "s", {"w": base, "wt": base.t(), "same": base}, {})
    tensors, _ = ck.load_checkpoint(path)
    assert path.suffix == ".safetensors"
    assert torch.equal(tensors["wt"], base.t())


def test_model_round_trip_into_given_model(tmp_path) -> None:
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))
    m[1].running_mean += 1
    path = ck.save_model(m, tmp_path / "m.safetensors")
    m2 = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))
    ck.load_model(path, model=m2)
    for (k, v), (k2, v2) in zip(m.state_dict().items(), m2.state_dict().items(), strict=True):
        assert k == k2 and torch.equal(v, v2)
    with pytest.raises(CheckpointError, match="does not fit"):
        ck.load_model(path, model=nn.Linear(4, 3))
    with pytest.raises(CheckpointError, match="no model spec"):
        ck.load_model(path)


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"garbage",
        pickle.dumps({"w": 1}),
        b"PK\x03\x04zipfile-like-torch-save" * 4,
        (10**12).to_bytes(8, "little") + b"{}",
    ],
)
def test_refuses_non_safetensors(tmp_path, content: bytes) -> None:
    path = tmp_path / "model.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match="safetensors"):
        ck.load_checkpoint(path)


def test_pickle_is_never_executed(tmp_path) -> None:
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    path = tmp_path / "evil.safetensors"
    path.write_bytes(pickle.dumps(Evil()))
    with pytest.raises(CheckpointError):
        ck.load_model(path, model=nn.Linear(1, 1))
    assert not marker.exists()


def test_missing_file(tmp_path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        ck.load_checkpoint(tmp_path / "nope.safetensors")


def test_failed_write_keeps_previous(tmp_path, monkeypatch) -> None:
    path = ck.save_checkpoint(tmp_path / "c.safetensors", {"a": torch.ones(2)}, {"v": 1})

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(ck, "save_file", boom)
    with pytest.raises(OSError):
        ck.save_checkpoint(path, {"a": torch.zeros(2)}, {"v": 2})
    tensors, meta = ck.load_checkpoint(path)
    assert meta["v"] == 1 and torch.equal(tensors["a"], torch.ones(2))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.json", "c.safetensors"]


def test_zoo_model_rebuilds_from_file_alone(tmp_path) -> None:
    from trustlab.models import Normalized, create_model

    torch.manual_seed(0)
    model = Normalized(create_model("resnet20", 4, 1, 16), [0.4], [0.2]).eval()
    path = ck.save_model(model, tmp_path / "m.safetensors")
    again = ck.load_model(path).eval()
    x = torch.rand(3, 1, 16, 16)
    assert isinstance(again, Normalized)
    assert torch.equal(model(x), again(x))
    assert ck.read_checkpoint_meta(path)["model_spec"]["name"] == "resnet20"


@pytest.mark.parametrize(
    "meta",
    [
        "{broken",
        "[1, 2]",
        '{"model_spec": {"name": "resnet20", "bogus": 1}}',
        '{"model_spec": [1]}',
        '{"model_spec": {"name": "nope", "num_classes": 2, "in_channels": 1, "image_size": 8}}',
    ],
)
def test_malformed_metadata_is_a_checkpoint_error(tmp_path, meta: str) -> None:
    from safetensors.torch import save_file

    path = tmp_path / "m.safetensors"
    save_file({"w": torch.zeros(1)}, str(path), metadata={"trustlab": meta})
    with pytest.raises(CheckpointError):
        ck.load_model(path)


def test_trainer_checkpoint_loads_as_a_model(tmp_path) -> None:
    from trustlab.data import ArrayDataset
    from trustlab.models import Normalized, create_model
    from trustlab.train import fit

    data = ArrayDataset(torch.rand(8, 1, 8, 8), torch.arange(8) % 2)
    torch.manual_seed(0)
    model = Normalized(create_model("mlp", 2, 1, 8), [0.5], [0.25])
    fit(model, data, epochs=1, checkpoint_dir=tmp_path, device="cpu", progress=False)
    again = ck.load_model(tmp_path / "last.safetensors").eval()
    x = torch.rand(2, 1, 8, 8)
    assert torch.equal(model.eval()(x), again(x))


def test_stale_temp_files_are_cleaned(tmp_path) -> None:
    (tmp_path / ".c.safetensors.abc123.tmp").write_bytes(b"half")
    (tmp_path / ".c.json.def456.tmp").write_text("{")
    ck.save_checkpoint(tmp_path / "c.safetensors", {"a": torch.ones(1)}, {})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.json", "c.safetensors"]


def _saved(tmp_path) -> bytes:
    path = ck.save_checkpoint(tmp_path / "ok.safetensors", {"w": torch.ones(64, 64)}, {"e": 1})
    return path.read_bytes()


@pytest.mark.parametrize("cut", ["data", "header"])
def test_damaged_safetensors_get_advice_for_damaged_files(tmp_path, cut: str) -> None:
    raw = _saved(tmp_path)
    n = int.from_bytes(raw[:8], "little")
    path = tmp_path / "cut.safetensors"
    path.write_bytes(raw[: 8 + n + 100] if cut == "data" else raw[: 8 + n // 2])
    with pytest.raises(CheckpointError) as err:
        ck.load_model(path, model=nn.Linear(64, 64))
    message = str(err.value)
    assert "damaged or truncated safetensors file" in message and "copy it again" in message
    assert "torch.load" not in message and "pickle" not in message


@pytest.mark.parametrize(
    ("content", "kind"),
    [
        (pickle.dumps({"w": 1}), "a pickle file"),
        (b"", "is empty"),
        (b"garbage!garbage!", "not a safetensors file"),
    ],
    ids=["pickle", "empty", "garbage"],
)
def test_non_safetensors_are_told_apart(tmp_path, content: bytes, kind: str) -> None:
    path = tmp_path / "model.bin"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=kind):
        ck.load_checkpoint(path)


def test_zip_archives_are_told_apart(tmp_path) -> None:
    import numpy as np

    torch.save({"w": torch.ones(2)}, tmp_path / "model.pt")
    with pytest.raises(CheckpointError, match=r"torch\.save file.*torch\.load"):
        ck.load_checkpoint(tmp_path / "model.pt")
    np.savez(tmp_path / "arrays.npz", w=np.ones(2))
    with pytest.raises(CheckpointError, match="NumPy .npz archive") as err:
        ck.load_checkpoint(tmp_path / "arrays.npz")
    assert "torch.load" not in str(err.value)


def test_class_count_mismatch_names_the_key_and_both_shapes(tmp_path) -> None:
    from trustlab.models import create_model

    path = ck.save_model(create_model("mlp", 10, 1, 8), tmp_path / "m.safetensors")
    with pytest.raises(CheckpointError) as err:
        ck.load_model(path, model=create_model("mlp", 5, 1, 8))
    message = str(err.value)
    assert "classifier.weight: the file holds (10, 256), the model (5, 256)" in message, message
    assert "classifier.bias: the file holds (10,), the model (5,)" in message
    with pytest.raises(CheckpointError, match=r"the file lacks .*; the model has no "):
        ck.load_model(path, model=nn.Sequential(nn.Linear(64, 10)))
