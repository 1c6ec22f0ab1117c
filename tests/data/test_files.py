"""Real-data readers: tiny files written in each exact on-disk format, read back through
``load_dataset``; malformed files, crafted pickles, downloads and tarball extraction."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import struct
import tarfile
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
from skimage import io as skio

from trustlab.data import files
from trustlab.data.datasets import load_dataset
from trustlab.errors import InputError, MissingDataError
from trustlab.registry import DATASETS

RNG = np.random.default_rng(0)

# ------------------------------------------------------------------------------ writers


def idx_bytes(arr: np.ndarray) -> bytes:
    codes = {np.dtype("u1"): 0x08, np.dtype("i1"): 0x09, np.dtype("i2"): 0x0B,
             np.dtype("i4"): 0x0C, np.dtype("f4"): 0x0D, np.dtype("f8"): 0x0E}  # fmt: skip
    code = codes[arr.dtype.newbyteorder("=")]
    header = bytes([0, 0, code, arr.ndim]) + b"".join(struct.pack(">I", d) for d in arr.shape)
    return header + arr.astype(arr.dtype.newbyteorder(">")).tobytes()


def write_idx(path: Path, arr: np.ndarray, gz: bool) -> Path:
    data = idx_bytes(arr)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def write_mnist(folder: Path, n_train: int = 6, n_test: int = 4, gz: bool = True) -> dict:
    out = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        imgs = RNG.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        ext = ".gz" if gz else ""
        write_idx(folder / f"{prefix}-images-idx3-ubyte{ext}", imgs, gz)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte{ext}", labels, gz)
        out[prefix] = (imgs, labels)
    return out


class Py2Pickler(pickle._Pickler):
    """Writes str/bytes with the Python-2 ``str`` opcodes (BINSTRING), as the CIFAR originals
    were written by cPickle; ``pickle.load(..., encoding="bytes")`` reads them as bytes."""

    dispatch = pickle._Pickler.dispatch.copy()

    def save_py2_str(self, obj: str | bytes) -> None:
        data = obj if isinstance(obj, bytes) else obj.encode("latin-1")
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(obj)

    dispatch[bytes] = save_py2_str
    dispatch[str] = save_py2_str


def py2_pickle(obj: object, numpy1_paths: bool = False) -> bytes:
    buf = io.BytesIO()
    Py2Pickler(buf, protocol=2).dump(obj)
    data = buf.getvalue()
    if numpy1_paths:  # the originals name numpy 1.x's module path
        data = data.replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")
    return data


def write_cifar10(folder: Path, per_batch: int = 2, numpy1_paths: bool = False) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    names = ["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5",
             "test_batch"]  # fmt: skip
    out = {}
    for i, name in enumerate(names):
        data = RNG.integers(0, 256, size=(per_batch, 3072), dtype=np.uint8)
        labels = [(i + j) % 10 for j in range(per_batch)]
        batch = {b"batch_label": b"batch", b"labels": labels, b"data": data,
                 b"filenames": [b"f%d.png" % j for j in range(per_batch)]}  # fmt: skip
        (folder / name).write_bytes(py2_pickle(batch, numpy1_paths))
        out[name] = (data, labels)
    meta = {b"num_cases_per_batch": 10000, b"label_names": [b"c%d" % k for k in range(10)],
            b"num_vis": 3072}  # fmt: skip
    (folder / "batches.meta").write_bytes(py2_pickle(meta, numpy1_paths))
    return out


def write_cifar100(folder: Path, n: int = 5) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for split in ("train", "test"):
        data = RNG.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        fine = [int(v) for v in RNG.integers(0, 100, n)]
        coarse = [f // 5 for f in fine]
        d = {b"filenames": [b"x"] * n, b"batch_label": b"b", b"fine_labels": fine,
             b"coarse_labels": coarse, b"data": data}  # fmt: skip
        (folder / split).write_bytes(py2_pickle(d))
        out[split] = (data, fine, coarse)
    meta = {b"fine_label_names": [b"fine%d" % k for k in range(100)],
            b"coarse_label_names": [b"coarse%d" % k for k in range(20)]}  # fmt: skip
    (folder / "meta").write_bytes(py2_pickle(meta))
    return out


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


# ------------------------------------------------------------------------------ IDX


@pytest.mark.parametrize("dtype", ["u1", "i1", "i2", "i4", "f4", "f8"])
@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_roundtrip(tmp_path: Path, dtype: str, gz: bool) -> None:
    arr = (RNG.standard_normal((3, 4, 5)) * 50).astype(dtype)
    out = files.read_idx(write_idx(tmp_path / "a.idx", arr, gz))
    assert out.dtype == np.dtype(dtype) and out.dtype.isnative
    assert out.shape == (3, 4, 5)
    np.testing.assert_array_equal(out, arr)


def test_read_idx_detects_gzip_by_magic_not_name(tmp_path: Path) -> None:
    arr = np.arange(12, dtype=np.uint8).reshape(3, 4)
    np.testing.assert_array_equal(files.read_idx(write_idx(tmp_path / "x.gz", arr, False)), arr)
    np.testing.assert_array_equal(files.read_idx(write_idx(tmp_path / "y.idx", arr, True)), arr)


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"\x00\x00", "shorter than the 4-byte magic"),
        (b"\x01\x00\x08\x01" + struct.pack(">I", 1) + b"\x00", "magic number starts with 0100"),
        (b"\x00\x00\x07\x01" + struct.pack(">I", 1) + b"\x00", "unknown type code 0x07"),
        (b"\x00\x00\x08\x00", "zero dimensions"),
        (b"\x00\x00\x08\x02" + struct.pack(">I", 2), "declares 2 dimensions"),
        (
            b"\x00\x00\x08\x01" + struct.pack(">I", 5) + b"\x00\x00",
            "need 13 bytes, the file has 10",
        ),
        (b"\x00\x00\x08\x01" + struct.pack(">I", 1) + b"\x00\x00", "need 9 bytes, the file has 10"),
        (b"\x00\x00\x0b\x01" + struct.pack(">I", 2) + b"\x00\x00\x00", "int16 need 12 bytes"),
    ],
)
def test_read_idx_rejects_malformed(tmp_path: Path, data: bytes, why: str) -> None:
    path = tmp_path / "bad-idx3-ubyte"
    path.write_bytes(data)
    with pytest.raises(InputError, match="not a valid IDX file") as err:
        files.read_idx(path)
    assert why in str(err.value) and str(path) in str(err.value)


def test_read_idx_rejects_corrupt_gzip(tmp_path: Path) -> None:
    path = tmp_path / "t.gz"
    path.write_bytes(gzip.compress(idx_bytes(np.zeros((4, 4), np.uint8)))[:-6])
    with pytest.raises(InputError, match="cannot be decompressed"):
        files.read_idx(path)


@pytest.mark.parametrize("gz", [True, False])
def test_mnist_reads_back(tmp_path: Path, gz: bool) -> None:
    ref = write_mnist(tmp_path, gz=gz)
    for split, prefix in (("train", "train"), ("test", "t10k")):
        ds = load_dataset("mnist", split, root=tmp_path)
        imgs, labels = ref[prefix]
        assert ds.x.shape == (len(labels), 1, 28, 28) and ds.x.dtype == torch.float32
        assert ds.y.dtype == torch.int64
        torch.testing.assert_close(ds.x[:, 0], torch.from_numpy(imgs).float() / 255)
        assert ds.y.tolist() == labels.tolist()
        assert ds.classes == [str(i) for i in range(10)]
        assert ds.mean == (0.1307,) and ds.std == (0.3081,)
        assert ds.name == "mnist"


def test_fashion_mnist_classes_and_stats(tmp_path: Path) -> None:
    write_mnist(tmp_path)
    ds = load_dataset("fashion-mnist", "train", root=tmp_path)
    assert ds.classes[0] == "T-shirt/top" and ds.classes[9] == "Ankle boot"
    assert ds.mean == (0.2860,) and ds.std == (0.3530,)


def test_mnist_label_count_mismatch(tmp_path: Path) -> None:
    write_mnist(tmp_path)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.zeros(3, np.uint8), True)
    with pytest.raises(InputError, match="expected 6 labels"):
        load_dataset("mnist", "train", root=tmp_path)


def test_missing_files_one_clear_error(tmp_path: Path) -> None:
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(idx_bytes(np.zeros(2, np.uint8)))
    with pytest.raises(MissingDataError) as err:
        load_dataset("mnist", "train", root=tmp_path)
    msg = str(err.value)
    assert isinstance(err.value, InputError) and isinstance(err.value, FileNotFoundError)
    assert str(tmp_path.resolve()) in msg
    assert "train-images-idx3-ubyte[.gz]" in msg and "train-labels" not in msg
    assert "download=True" in msg and "--download" in msg


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("cifar10", ["cifar-10-batches-py/data_batch_1", "cifar-10-batches-py/batches.meta"]),
        ("cifar100", ["cifar-100-python/train", "cifar-100-python/meta"]),
        ("svhn", ["train_32x32.mat"]),
        ("image-folder", ["train/<class_name>/"]),
    ],
)
def test_missing_files_other_datasets(tmp_path: Path, name: str, expected: list[str]) -> None:
    with pytest.raises(MissingDataError) as err:
        load_dataset(name, "train", root=tmp_path / "nowhere")
    for item in expected:
        assert item in str(err.value)


def test_default_root_env_and_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TRUSTLAB_DATA", raising=False)
    monkeypatch.chdir(tmp_path)
    assert files.data_root("mnist") == Path("data") / "mnist"
    write_mnist(tmp_path / "data" / "mnist")
    assert len(load_dataset("mnist", "test")) == 4
    monkeypatch.setenv("TRUSTLAB_DATA", str(tmp_path / "elsewhere"))
    assert files.data_root("svhn") == tmp_path / "elsewhere" / "svhn"
    write_mnist(tmp_path / "elsewhere" / "mnist", n_test=3)
    assert len(load_dataset("mnist", "test")) == 3
    assert files.data_root("svhn", tmp_path) == tmp_path


def test_bad_split_direct_call(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="unknown split 'val'"):
        files.load_mnist("val", root=tmp_path)


# ------------------------------------------------------------------------------ CIFAR


@pytest.mark.parametrize("numpy1_paths", [False, True])
def test_cifar10_reads_back(tmp_path: Path, numpy1_paths: bool) -> None:
    ref = write_cifar10(tmp_path / "cifar-10-batches-py", numpy1_paths=numpy1_paths)
    train = load_dataset("cifar10", "train", root=tmp_path)
    assert train.x.shape == (10, 3, 32, 32) and train.y.dtype == torch.int64
    data = np.concatenate([ref[f"data_batch_{i}"][0] for i in range(1, 6)])
    labels = sum((ref[f"data_batch_{i}"][1] for i in range(1, 6)), [])
    assert train.y.tolist() == labels
    # channel-major rows: the first 1024 values are the red plane, row by row
    assert train.x[3, 0, 0, 5].item() == pytest.approx(data[3, 5] / 255)
    assert train.x[3, 1, 2, 0].item() == pytest.approx(data[3, 1024 + 64] / 255)
    assert train.x[7, 2, 31, 31].item() == pytest.approx(data[7, 3071] / 255)
    assert train.classes == [f"c{k}" for k in range(10)]
    assert train.mean == (0.4914, 0.4822, 0.4465) and train.std == (0.2470, 0.2435, 0.2616)
    test = load_dataset("cifar10", "test", root=tmp_path)
    torch.testing.assert_close(
        test.x, torch.from_numpy(ref["test_batch"][0]).float().view(-1, 3, 32, 32) / 255
    )


def test_cifar10_root_may_be_the_batches_folder(tmp_path: Path) -> None:
    write_cifar10(tmp_path)
    assert len(load_dataset("cifar10", "test", root=tmp_path)) == 2


def test_cifar100_fine_and_coarse(tmp_path: Path) -> None:
    ref = write_cifar100(tmp_path / "cifar-100-python")
    ds = load_dataset("cifar100", "test", root=tmp_path)
    data, fine, coarse = ref["test"]
    assert ds.y.tolist() == fine and len(ds.classes) == 100 and ds.classes[7] == "fine7"
    assert ds.coarse_y.dtype == torch.int64 and ds.coarse_y.tolist() == coarse
    assert ds.coarse_classes == [f"coarse{k}" for k in range(20)]
    torch.testing.assert_close(ds.x.flatten(1), torch.from_numpy(data).float() / 255)
    assert ds.mean == (0.5071, 0.4865, 0.4409)


class Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # noqa: ANN204 - the classic pickle exploit
        return (os.system, (f"touch {self.marker}",))


def test_crafted_pickle_is_refused_without_running(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar10(folder)
    payload = {b"data": np.zeros((1, 3072), np.uint8), b"labels": [Evil(marker)]}
    (folder / "test_batch").write_bytes(py2_pickle(payload))
    with pytest.raises(InputError, match=r"refusing to unpickle (posix|nt|os)\.system"):
        load_dataset("cifar10", "test", root=tmp_path)
    assert not marker.exists()
    # the file really names os.system (a plain pickle.load would run it)
    assert b"system\n" in (folder / "test_batch").read_bytes()


@pytest.mark.parametrize(
    "payload",
    [
        b"cbuiltins\neval\n(S'1+1'\ntR.",
        b"c__builtin__\neval\n(S'1+1'\ntR.",
        b"csubprocess\nPopen\n(S'true'\ntR.",
        b"cnumpy\nload\n(S'x'\ntR.",
    ],
)
def test_restricted_unpickler_refuses_other_globals(tmp_path: Path, payload: bytes) -> None:
    path = tmp_path / "batch"
    path.write_bytes(payload)
    with pytest.raises(InputError, match="refusing to unpickle"):
        files.load_cifar_pickle(path)


def test_cifar_wrong_content(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar10(folder)
    (folder / "test_batch").write_bytes(py2_pickle({b"data": np.zeros((2, 10), np.uint8)}))
    with pytest.raises(InputError, match=r"expected uint8 \(N, 3072\)"):
        load_dataset("cifar10", "test", root=tmp_path)
    (folder / "test_batch").write_bytes(b"not a pickle at all")
    with pytest.raises(InputError, match="not a readable CIFAR pickle"):
        load_dataset("cifar10", "test", root=tmp_path)


# ------------------------------------------------------------------------------ SVHN


def test_svhn_reads_back(tmp_path: Path) -> None:
    n = 7
    x = RNG.integers(0, 256, size=(32, 32, 3, n), dtype=np.uint8)
    y = np.array([[10], [1], [2], [10], [9], [5], [3]], dtype=np.uint8)
    scipy.io.savemat(tmp_path / "test_32x32.mat", {"X": x, "y": y})
    ds = load_dataset("svhn", "test", root=tmp_path)
    assert ds.x.shape == (n, 3, 32, 32)
    assert ds.y.tolist() == [0, 1, 2, 0, 9, 5, 3]
    assert ds.x[4, 1, 3, 6].item() == pytest.approx(x[3, 6, 1, 4] / 255)
    assert ds.classes == [str(i) for i in range(10)]
    assert ds.mean == (0.4377, 0.4438, 0.4728)


def test_svhn_unreadable(tmp_path: Path) -> None:
    (tmp_path / "train_32x32.mat").write_bytes(b"garbage" * 20)
    with pytest.raises(InputError, match="not a readable SVHN .mat file"):
        load_dataset("svhn", "train", root=tmp_path)


# ------------------------------------------------------------------------------ image folders


def _save(path: Path, img: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    skio.imsave(str(path), img, check_contrast=False)


def test_image_folder_gray(tmp_path: Path) -> None:
    a = RNG.integers(0, 256, size=(8, 8), dtype=np.uint8)
    _save(tmp_path / "train" / "zebra" / "1.png", a)
    _save(tmp_path / "train" / "apple" / "2.png", a)
    _save(tmp_path / "train" / "apple" / "1.bmp", np.full((16, 16), 255, np.uint8))
    (tmp_path / "train" / "apple" / "notes.txt").write_text("ignored")
    ds = load_dataset("image-folder", "train", root=tmp_path)
    assert ds.classes == ["apple", "zebra"]
    assert ds.y.tolist() == [0, 0, 1]  # sorted classes, sorted files (1.bmp, 2.png)
    assert ds.x.shape == (3, 1, 16, 16)  # size of the first image (apple/1.bmp)
    assert torch.all(ds.x[0] == 1.0)
    assert ds.x.min() >= 0.0 and ds.x.max() <= 1.0


def test_image_folder_mixed_rgb_rgba_and_size(tmp_path: Path) -> None:
    rgb = RNG.integers(0, 256, size=(10, 12, 3), dtype=np.uint8)
    rgba = np.zeros((10, 12, 4), np.uint8)
    rgba[..., 0] = 255
    rgba[..., 3] = 255
    rgba[0, 0, 3] = 0  # fully transparent pixel -> white background
    _save(tmp_path / "train" / "a" / "x.png", rgb)
    _save(tmp_path / "train" / "b" / "y.png", rgba)
    _save(tmp_path / "train" / "b" / "z.png", np.zeros((10, 12), np.uint8))  # gray
    ds = files.load_image_folder(tmp_path, "train")
    assert ds.x.shape == (3, 3, 10, 12)
    torch.testing.assert_close(ds.x[0], torch.from_numpy(rgb).permute(2, 0, 1).float() / 255)
    assert ds.x[1, :, 1, 1].tolist() == [1.0, 0.0, 0.0]
    assert ds.x[1, :, 0, 0].tolist() == [1.0, 1.0, 1.0]
    assert torch.all(ds.x[2] == 0)
    small = files.load_image_folder(tmp_path, "train", image_size=(5, 6))
    assert small.x.shape == (3, 3, 5, 6)
    assert files.load_image_folder(tmp_path, "train", image_size=4).x.shape[-2:] == (4, 4)
    with pytest.raises(InputError, match="image_size"):
        files.load_image_folder(tmp_path, "train", image_size=(0, 3))


def test_image_folder_test_split_follows_train(tmp_path: Path) -> None:
    _save(tmp_path / "train" / "cat" / "1.png", np.full((8, 8, 3), 51, np.uint8))
    _save(tmp_path / "train" / "dog" / "1.png", np.full((8, 8, 3), 204, np.uint8))
    _save(tmp_path / "test" / "dog" / "1.jpg", np.full((20, 20), 128, np.uint8))
    test = load_dataset("image-folder", "test", root=tmp_path)
    assert test.classes == ["cat", "dog"] and test.y.tolist() == [1]
    assert test.x.shape == (1, 3, 8, 8)  # train's size and channels
    assert test.mean == pytest.approx((0.5, 0.5, 0.5), abs=1e-6)  # train statistics
    assert test.std == pytest.approx((0.3, 0.3, 0.3), abs=1e-6)


def test_image_folder_corrupt_image(tmp_path: Path) -> None:
    bad = tmp_path / "train" / "a" / "broken.png"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"\x89PNG not really")
    with pytest.raises(InputError, match="cannot read image"):
        files.load_image_folder(tmp_path, "train")


def test_image_folder_empty_split(tmp_path: Path) -> None:
    (tmp_path / "train" / "a").mkdir(parents=True)
    with pytest.raises(MissingDataError, match="cannot be downloaded"):
        files.load_image_folder(tmp_path, "train")


# ------------------------------------------------------------------------------ downloads


def test_checksum_table() -> None:
    assert set(files.RESOURCES) == set(files.BASE_URLS) == set(files.STATS)
    for name, resources in files.RESOURCES.items():
        assert name in DATASETS
        for res in resources:
            assert len(res.md5) == 32 and int(res.md5, 16) >= 0
            assert set(res.splits) <= {"train", "test"}
    assert files.BASE_URLS["mnist"].startswith("https://ossci-datasets.s3.amazonaws.com/")


def test_download_url_file_scheme_ok(tmp_path: Path) -> None:
    src = tmp_path / "src" / "blob.bin"
    src.parent.mkdir()
    src.write_bytes(b"trustlab" * 1000)
    dest = tmp_path / "out" / "blob.bin"
    got = files.download_url(src.as_uri(), dest, md5(src.read_bytes()))
    assert got == dest and dest.read_bytes() == src.read_bytes()
    assert os.listdir(dest.parent) == ["blob.bin"]


def test_download_url_checksum_mismatch(tmp_path: Path) -> None:
    src = tmp_path / "blob.bin"
    src.write_bytes(b"tampered")
    dest = tmp_path / "out" / "blob.bin"
    with pytest.raises(InputError) as err:
        files.download_url(src.as_uri(), dest, "0" * 32)
    msg = str(err.value)
    assert "blob.bin" in msg and "0" * 32 in msg and md5(b"tampered") in msg
    assert not dest.exists() and os.listdir(dest.parent) == []  # no partial or temp file


def test_download_url_injected_fetch_and_errors(tmp_path: Path) -> None:
    got = files.download_url(
        "https://example.invalid/x", tmp_path / "x", md5(b"abc"), fetch=lambda u: io.BytesIO(b"abc")
    )
    assert got.read_bytes() == b"abc"

    def offline(url: str) -> io.BytesIO:
        raise urllib.error.URLError("no network")

    with pytest.raises(InputError, match="could not download .*no network"):
        files.download_url("https://example.invalid/y", tmp_path / "y", None, fetch=offline)
    assert not (tmp_path / "y").exists()
    with pytest.raises(InputError, match="only http"):
        files.download_url("ftp://example.invalid/z", tmp_path / "z", None)


def test_load_dataset_download_mnist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mirror = tmp_path / "mirror"
    ref = write_mnist(mirror, gz=True)
    table = tuple(
        files.Resource(r.filename, md5((mirror / r.filename).read_bytes()), r.splits)
        for r in files.RESOURCES["mnist"]
    )
    monkeypatch.setitem(files.RESOURCES, "mnist", table)
    monkeypatch.setitem(files.BASE_URLS, "mnist", mirror.as_uri() + "/")
    root = tmp_path / "data"
    with pytest.raises(MissingDataError):
        load_dataset("mnist", "test", root=root)  # download=False never fetches
    ds = load_dataset("mnist", "test", root=root, download=True)
    assert ds.y.tolist() == ref["t10k"][1].tolist()
    assert sorted(os.listdir(root)) == ["t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]
    # a bad checksum in the table: InputError, nothing left behind
    monkeypatch.setitem(
        files.RESOURCES,
        "mnist",
        tuple(files.Resource(r.filename, "f" * 32, r.splits) for r in table),
    )
    root2 = tmp_path / "data2"
    with pytest.raises(InputError, match="checksum mismatch for train-images-idx3-ubyte.gz"):
        load_dataset("mnist", "train", root=root2, download=True)
    assert os.listdir(root2) == []


def _tar(path: Path, entries: dict[str, bytes]) -> bytes:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in entries.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path.read_bytes()


def test_load_dataset_download_cifar10_tarball(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    staged = tmp_path / "staged"
    ref = write_cifar10(staged / "cifar-10-batches-py")
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    entries = {
        f"cifar-10-batches-py/{p.name}": p.read_bytes()
        for p in sorted((staged / "cifar-10-batches-py").iterdir())
    }
    blob = _tar(mirror / "cifar-10-python.tar.gz", entries)
    monkeypatch.setitem(
        files.RESOURCES,
        "cifar10",
        (files.Resource("cifar-10-python.tar.gz", md5(blob), archive=True),),
    )
    monkeypatch.setitem(files.BASE_URLS, "cifar10", mirror.as_uri())  # no trailing slash
    root = tmp_path / "data"
    ds = load_dataset("cifar10", "test", root=root, download=True)
    assert ds.y.tolist() == ref["test_batch"][1]
    assert (root / "cifar-10-python.tar.gz").is_file()  # archive kept
    assert not [p for p in root.iterdir() if p.name.startswith(".")]  # no staging left


@pytest.mark.parametrize(
    ("member", "why"),
    [("../evil.txt", "'..'"), ("ok/../../evil.txt", "'..'"), ("/tmp/evil.txt", "absolute")],
)
def test_safe_extract_refuses_traversal(tmp_path: Path, member: str, why: str) -> None:
    archive = tmp_path / "a.tar.gz"
    _tar(archive, {"good.txt": b"fine", member: b"evil"})
    dest = tmp_path / "dest"
    with pytest.raises(InputError, match=f"refusing to extract a.tar.gz: member .* is.*{why}"):
        files.safe_extract(archive, dest)
    assert not (tmp_path / "evil.txt").exists()
    assert list(dest.iterdir()) == []  # nothing extracted at all


def test_safe_extract_refuses_links_and_extracts_plain(tmp_path: Path) -> None:
    archive = tmp_path / "l.tar"
    with tarfile.open(archive, "w") as tar:
        info = tarfile.TarInfo("link")
        info.type = tarfile.SYMTYPE
        info.linkname = "/etc/passwd"
        tar.addfile(info)
    with pytest.raises(InputError, match="is a link"):
        files.safe_extract(archive, tmp_path / "d1")
    good = tmp_path / "g.tar.gz"
    _tar(good, {"top/a.bin": b"A", "top/sub/b.bin": b"B"})
    written = files.safe_extract(good, tmp_path / "d2")
    assert sorted(p.relative_to(tmp_path / "d2").as_posix() for p in written) == [
        "top/a.bin",
        "top/sub/b.bin",
    ]
    assert (tmp_path / "d2" / "top" / "sub" / "b.bin").read_bytes() == b"B"
    (tmp_path / "notatar.tar").write_bytes(b"plain text")
    with pytest.raises(InputError, match="could not extract"):
        files.safe_extract(tmp_path / "notatar.tar", tmp_path / "d3")
