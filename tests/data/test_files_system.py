"""Fashion-MNIST from an operating-system package's folder (Debian's ``dataset-fashion-mnist``):
searched after the default folder when no ``root`` is given, never instead of it."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from trustlab.data import files
from trustlab.data.datasets import load_dataset
from trustlab.errors import MissingDataError

DEBIAN = Path("/usr/share/datasets/fashion-mnist")


def write_idx_gz(path: Path, arr: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, arr.ndim]) + b"".join(struct.pack(">I", d) for d in arr.shape)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(header + arr.astype(np.uint8).tobytes()))


def write_split(folder: Path, prefix: str, n: int, fill: int) -> np.ndarray:
    """Tiny gzipped IDX images (all pixels ``fill``) and labels ``0..n-1 mod 10``."""
    labels = np.arange(n) % 10
    write_idx_gz(folder / f"{prefix}-images-idx3-ubyte.gz", np.full((n, 28, 28), fill))
    write_idx_gz(folder / f"{prefix}-labels-idx1-ubyte.gz", labels)
    return labels


@pytest.fixture
def folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """(default folder, system folder): ``$TRUSTLAB_DATA`` and ``SYSTEM_DIRS`` in tmp_path."""
    monkeypatch.setenv("TRUSTLAB_DATA", str(tmp_path / "data"))
    system = tmp_path / "usr-share" / "fashion-mnist"
    monkeypatch.setitem(files.SYSTEM_DIRS, "fashion-mnist", (str(system),))
    return tmp_path / "data" / "fashion-mnist", system


def test_system_folder_is_the_fallback(folders: tuple[Path, Path]) -> None:
    _, system = folders
    labels = write_split(system, "train", 7, 255)
    write_split(system, "t10k", 3, 0)
    train = load_dataset("fashion-mnist", "train")
    assert train.x.shape == (7, 1, 28, 28) and float(train.x.min()) == 1.0
    assert train.y.tolist() == labels.tolist() and train.classes[0] == "T-shirt/top"
    assert len(load_dataset("fashion-mnist", "test")) == 3


def test_default_folder_comes_first(folders: tuple[Path, Path]) -> None:
    default, system = folders
    write_split(system, "train", 7, 255)
    write_split(default, "train", 4, 0)
    ds = load_dataset("fashion-mnist", "train")
    assert len(ds) == 4 and float(ds.x.max()) == 0.0


def test_half_a_pair_in_the_default_folder_takes_both_from_the_system(
    folders: tuple[Path, Path],
) -> None:
    default, system = folders
    write_split(system, "train", 7, 255)
    write_idx_gz(default / "train-labels-idx1-ubyte.gz", np.zeros(4))
    assert len(load_dataset("fashion-mnist", "train")) == 7


def test_found_in_the_system_folder_nothing_is_downloaded(
    folders: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, system = folders
    write_split(system, "train", 5, 9)

    def no_download(*args: object, **kwargs: object) -> None:
        raise AssertionError("downloaded although the system folder holds the files")

    monkeypatch.setattr(files, "download_dataset", no_download)
    assert len(load_dataset("fashion-mnist", "train", download=True)) == 5


def test_an_explicit_root_is_the_only_folder(folders: tuple[Path, Path], tmp_path: Path) -> None:
    _, system = folders
    write_split(system, "train", 7, 255)
    with pytest.raises(MissingDataError) as err:
        load_dataset("fashion-mnist", "train", root=tmp_path / "mine")
    assert str(system) not in str(err.value)


def test_missing_everywhere_names_every_folder(folders: tuple[Path, Path]) -> None:
    default, system = folders
    with pytest.raises(MissingDataError) as err:
        load_dataset("fashion-mnist", "train")
    msg = str(err.value)
    assert str(default.resolve()) in msg and str(system) in msg
    assert "dataset-fashion-mnist" in msg and "train-images-idx3-ubyte[.gz]" in msg


def test_mnist_has_no_system_folder(folders: tuple[Path, Path]) -> None:
    _, system = folders
    write_split(system, "train", 7, 255)
    with pytest.raises(MissingDataError) as err:
        load_dataset("mnist", "train")
    assert "Also looked in" not in str(err.value)


@pytest.mark.skipif(not DEBIAN.is_dir(), reason="Debian's dataset-fashion-mnist is not installed")
def test_debian_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRUSTLAB_DATA", str(tmp_path))  # nothing in the default folder
    train, test = load_dataset("fashion-mnist", "train"), load_dataset("fashion-mnist", "test")
    assert (len(train), len(test)) == (60000, 10000)
    assert train.x.shape[1:] == test.x.shape[1:] == (1, 28, 28)
    assert train.num_classes == 10 and len(train.classes) == 10
    assert sorted(train.y.unique().tolist()) == list(range(10))
