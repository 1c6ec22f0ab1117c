"""Real datasets read from their original file formats, with opt-in, checksum-verified downloads.

Registered in :data:`trustlab.registry.DATASETS` (use :func:`trustlab.data.load_dataset`):

=================  ==========================================================  ===============
name               files (under the dataset folder)                            shape, classes
=================  ==========================================================  ===============
``mnist``          ``{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]``        1x28x28, 10
``fashion-mnist``  same names as MNIST                                         1x28x28, 10
``cifar10``        ``cifar-10-batches-py/{data_batch_1..5,test_batch,          3x32x32, 10
                   batches.meta}``
``cifar100``       ``cifar-100-python/{train,test,meta}``                      3x32x32, 100
``svhn``           ``{train,test}_32x32.mat``                                  3x32x32, 10
``image-folder``   ``<split>/<class_name>/*.{png,jpg,jpeg,bmp}``               any, any
=================  ==========================================================  ===============

Formats: MNIST / Fashion-MNIST IDX (LeCun et al., http://yann.lecun.com/exdb/mnist/; Xiao et al.
2017, arXiv:1708.07747), the CIFAR "python version" pickles (Krizhevsky 2009,
https://www.cs.toronto.edu/~kriz/cifar.html), SVHN format 2 (Netzer et al. 2011,
http://ufldl.stanford.edu/housenumbers/).

**Where files are looked for.** ``root`` when given, else ``$TRUSTLAB_DATA/<name>`` when the
environment variable ``TRUSTLAB_DATA`` is set, else ``./data/<name>`` (relative to the working
directory); see :func:`data_root`. Without ``root``, a dataset that an operating-system package
installs is also looked for, when its files are not in that folder, in the package's folder
(:data:`SYSTEM_DIRS`: Fashion-MNIST in ``/usr/share/datasets/fashion-mnist``, where Debian's
``dataset-fashion-mnist`` puts it). For CIFAR the extracted folder (``cifar-10-batches-py``) may
sit inside that folder or be that folder itself.

**Downloads** happen only with ``download=True`` (CLI ``--download``), from the addresses in
:data:`BASE_URLS`, each file checked against the published MD5 in :data:`RESOURCES`. MNIST comes
from the ``ossci-datasets`` S3 mirror that torchvision uses, because yann.lecun.com is often
unreachable or asks for a login. A file is written to a temporary name and renamed only once its
checksum matches, so a failed or interrupted download never leaves a partial file; tarballs are
extracted with member checks (no absolute paths, ``..``, links or devices) and
``tarfile``'s ``"data"`` filter. The downloaded archives are kept next to the extracted files.

Every reader returns a validated :class:`~trustlab.data.datasets.ArrayDataset`: float images in
``[0, 1]``, ``(N, C, H, W)``, ``int64`` labels, class names, and the per-channel mean/std of the
dataset's training split as published (for ``models.wrappers.Normalized``).
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import os
import pickle
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch

from trustlab.data.datasets import SPLITS, ArrayDataset, channel_stats, check_split
from trustlab.errors import InputError, MissingDataError
from trustlab.registry import DATASETS
from trustlab.utils.io import atomic_path

# --------------------------------------------------------------------------------------------
# Where the files come from: one table of files and published MD5 checksums, one of base URLs.
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Resource:
    """One downloadable file: its name, published MD5, the splits it serves, whether a tarball.

    Attributes:
        filename: the file's name; its URL is the dataset's base URL + ``filename``.
        md5: the published MD5 checksum the download is checked against.
        splits: the splits the file serves; default ``SPLITS`` (``("train", "test")``).
        archive: a tarball to extract (the CIFAR python versions); default False.

    Example:
        >>> RESOURCES["cifar10"][0].filename, RESOURCES["cifar10"][0].archive
        ('cifar-10-python.tar.gz', True)
    """

    filename: str
    md5: str
    splits: tuple[str, ...] = SPLITS
    archive: bool = False


#: dataset -> the files to download and their published MD5 checksums (the same values as
#: torchvision's dataset classes and the datasets' own pages).
RESOURCES: dict[str, tuple[Resource, ...]] = {
    "mnist": (
        Resource("train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873", ("train",)),
        Resource("train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432", ("train",)),
        Resource("t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3", ("test",)),
        Resource("t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c", ("test",)),
    ),
    "fashion-mnist": (
        Resource("train-images-idx3-ubyte.gz", "8d4fb7e6c68d591d4c3dfef9ec88bf0d", ("train",)),
        Resource("train-labels-idx1-ubyte.gz", "25c81989df183df01b3e8a0aad5dffbe", ("train",)),
        Resource("t10k-images-idx3-ubyte.gz", "bef4ecab320f06d8554ea6380940ec79", ("test",)),
        Resource("t10k-labels-idx1-ubyte.gz", "bb300cfdad3c16e7a12a480ee83cd310", ("test",)),
    ),
    "cifar10": (
        Resource("cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a", archive=True),
    ),
    "cifar100": (
        Resource("cifar-100-python.tar.gz", "eb9058c3a382ffc7106e4002c42a8d85", archive=True),
    ),
    "svhn": (
        Resource("train_32x32.mat", "e26dedcc434d2e4c54c9b2d4a06d8373", ("train",)),
        Resource("test_32x32.mat", "eb5a983be6a315427106f1b164d9cef3", ("test",)),
    ),
}

#: dataset -> base URL (a file's URL is base + filename). Override an entry (or pass
#: ``base_url=`` to :func:`download_dataset`) to use a mirror or a local ``file://`` folder.
#: MNIST: torchvision's S3 mirror, since yann.lecun.com is unreliable. The Fashion-MNIST and
#: SVHN hosts serve plain HTTP only; integrity rests on the MD5 check.
BASE_URLS: dict[str, str] = {
    "mnist": "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "fashion-mnist": "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    "cifar10": "https://www.cs.toronto.edu/~kriz/",
    "cifar100": "https://www.cs.toronto.edu/~kriz/",
    "svhn": "http://ufldl.stanford.edu/housenumbers/",
}

#: Published per-channel mean / std of each training split, images scaled to [0, 1].
STATS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "mnist": ((0.1307,), (0.3081,)),
    "fashion-mnist": ((0.2860,), (0.3530,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "svhn": ((0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970)),
}

FASHION_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip
DIGIT_CLASSES = tuple(str(i) for i in range(10))

Fetch = Callable[[str], IO[bytes]]
_CHUNK = 1 << 20


#: dataset -> folders where an operating-system package installs its files, searched in order
#: after the default folder (:func:`data_root`) when no ``root`` is given.
SYSTEM_DIRS: dict[str, tuple[str, ...]] = {
    "fashion-mnist": ("/usr/share/datasets/fashion-mnist",),
}

#: dataset -> the Debian package that fills its :data:`SYSTEM_DIRS` (named in the error).
SYSTEM_PACKAGES: dict[str, str] = {"fashion-mnist": "dataset-fashion-mnist"}


def system_dirs(name: str, root: str | os.PathLike[str] | None = None) -> list[Path]:
    """The system folders searched for dataset ``name`` after its default folder: those of
    :data:`SYSTEM_DIRS`, or none when ``root`` is given (an explicit folder is the only one)."""
    return [] if root is not None else [Path(p) for p in SYSTEM_DIRS.get(name, ())]


def data_root(name: str, root: str | os.PathLike[str] | None = None) -> Path:
    """The folder of dataset ``name``: ``root`` if given, else ``$TRUSTLAB_DATA/<name>`` when
    ``TRUSTLAB_DATA`` is set, else ``./data/<name>``."""
    if root is not None:
        return Path(root).expanduser()
    base = os.environ.get("TRUSTLAB_DATA")
    return (Path(base).expanduser() if base else Path("data")) / name


# --------------------------------------------------------------------------------------------
# Download, checksum, safe extraction
# --------------------------------------------------------------------------------------------


def md5sum(path: str | os.PathLike[str]) -> str:
    """Hex MD5 digest of a file, read in 1 MiB chunks."""
    digest = hashlib.md5()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def urlopen_fetch(url: str) -> IO[bytes]:
    """Default fetcher: ``urllib.request.urlopen`` with a 60 s timeout (``file://`` works too)."""
    request = urllib.request.Request(url, headers={"User-Agent": "trustlab"})
    return urllib.request.urlopen(request, timeout=60)  # noqa: S310 - https/http/file only


def download_url(
    url: str, dest: str | os.PathLike[str], md5: str | None, fetch: Fetch | None = None
) -> Path:
    """Download ``url`` to ``dest`` through a temporary file, verifying the MD5 on the way.

    The file appears at ``dest`` only when complete and (if ``md5`` is given) matching; on a
    mismatch the temporary file is deleted and :class:`InputError` names the file and both
    checksums. ``fetch(url)`` returns a readable binary stream (default :func:`urlopen_fetch`).
    """
    dest = Path(dest)
    if not url.lower().startswith(("https://", "http://", "file://")):
        raise InputError(f"refusing to download {url!r}: only http(s):// and file:// URLs work.")
    fetch = fetch or urlopen_fetch
    digest = hashlib.md5()
    try:
        with atomic_path(dest) as tmp:
            try:
                stream = fetch(url)
            except (urllib.error.URLError, OSError, ValueError) as exc:
                raise InputError(
                    f"could not download {url}: {exc}. Check the network connection, or "
                    f"download the file yourself and put it at {dest}."
                ) from exc
            with stream, open(tmp, "wb") as out:
                for block in iter(lambda: stream.read(_CHUNK), b""):
                    digest.update(block)
                    out.write(block)
            actual = digest.hexdigest()
            if md5 is not None and actual != md5.lower():
                raise InputError(
                    f"checksum mismatch for {dest.name} downloaded from {url}: expected MD5 "
                    f"{md5.lower()}, got {actual}. The file was deleted; retry the download "
                    "(the transfer may have been corrupted) or fetch it from another mirror."
                )
    except (OSError, http.client.HTTPException) as exc:  # errors while streaming, disk full
        raise InputError(f"could not download {url} to {dest}: {exc}.") from exc
    return dest


def _check_member(member: tarfile.TarInfo, dest: Path, archive: Path) -> None:
    name = member.name
    parts = Path(name).parts
    bad = None
    if name.startswith(("/", "\\")) or Path(name).is_absolute() or (parts and ":" in parts[0]):
        bad = "an absolute path"
    elif ".." in parts or ".." in name.replace("\\", "/").split("/"):
        bad = "a '..' path component"
    elif member.issym() or member.islnk():
        bad = f"a link (to {member.linkname!r})"
    elif not (member.isfile() or member.isdir()):
        bad = "a device, FIFO or other special file"
    elif not (dest / name).resolve().is_relative_to(dest):
        bad = "a path outside the destination"
    if bad:
        raise InputError(
            f"refusing to extract {archive.name}: member {name!r} is {bad}. The archive is not a "
            "genuine dataset archive; delete it and download it again."
        )


def safe_extract(archive: str | os.PathLike[str], dest: str | os.PathLike[str]) -> list[Path]:
    """Extract a tar archive under ``dest`` without path traversal; return the files written.

    Every member is checked first (regular files and folders only, relative paths without
    ``..``); then the archive is extracted into a temporary folder inside ``dest`` with
    ``tarfile``'s ``"data"`` filter (Python >= 3.11.4) and each file is moved into place, so an
    error leaves no half-extracted tree. Raises :class:`InputError` on a bad member or archive.
    """
    archive, dest = Path(archive), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    dest = dest.resolve()
    written: list[Path] = []
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = tar.getmembers()
            for member in members:
                _check_member(member, dest, archive)
            staging = Path(tempfile.mkdtemp(prefix=".extract-", dir=dest))
            try:
                if hasattr(tarfile, "data_filter"):
                    tar.extractall(staging, members=members, filter="data")
                else:  # pragma: no cover - Python < 3.11.4; members were checked above
                    tar.extractall(staging, members=members)  # noqa: S202
                for path in sorted(staging.rglob("*")):
                    if path.is_file() and not path.is_symlink():
                        target = dest / path.relative_to(staging)
                        target.parent.mkdir(parents=True, exist_ok=True)
                        os.replace(path, target)
                        written.append(target)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise InputError(
            f"could not extract {archive}: {exc}. Delete the archive and download it again."
        ) from exc
    return written


def download_dataset(
    name: str,
    root: str | os.PathLike[str] | None = None,
    splits: Sequence[str] = SPLITS,
    *,
    base_url: str | None = None,
    fetch: Fetch | None = None,
) -> list[Path]:
    """Download (and extract) the files of dataset ``name`` needed for ``splits`` into its folder.

    Files already present with the right checksum are kept; tarballs are extracted with
    :func:`safe_extract`. ``base_url`` overrides :data:`BASE_URLS` (a mirror or a ``file://``
    folder); ``fetch`` overrides the transport (see :func:`download_url`). Returns the paths of
    the downloaded files.
    """
    if name not in RESOURCES:
        raise InputError(
            f"dataset {name!r} has nothing to download; downloadable: {', '.join(RESOURCES)}."
        )
    folder = data_root(name, root)
    base = base_url if base_url is not None else BASE_URLS[name]
    if not base.endswith("/"):
        base += "/"
    paths = []
    for res in RESOURCES[name]:
        if not set(res.splits) & set(splits):
            continue
        dest = folder / res.filename
        if not (dest.is_file() and md5sum(dest) == res.md5):
            download_url(base + res.filename, dest, res.md5, fetch=fetch)
        if res.archive:
            safe_extract(dest, folder)
        paths.append(dest)
    return paths


def _missing_error(
    name: str, folder: Path, missing: Sequence[str], split: str, also: Sequence[Path] = ()
) -> MissingDataError:
    how = (
        "pass download=True (CLI --download) to fetch them"
        if name in RESOURCES
        else "this dataset cannot be downloaded"
    )
    where = ""
    if also:
        package = SYSTEM_PACKAGES.get(name)
        hint = f" (Debian's {package} package installs them there)" if package else ""
        where = f" Also looked in {', '.join(str(p) for p in also)}{hint}."
    return MissingDataError(
        f"dataset {name!r} ({split} split): missing {', '.join(missing)} in {folder.resolve()}."
        f"{where} To fix: {how}, or put the files there (or point root= / $TRUSTLAB_DATA at the "
        "folder that holds them)."
    )


# --------------------------------------------------------------------------------------------
# MNIST / Fashion-MNIST: IDX
# --------------------------------------------------------------------------------------------

#: IDX type codes (third byte of the magic number) -> big-endian numpy dtypes.
IDX_DTYPES: dict[int, str] = {
    0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8",
}  # fmt: skip
_GZIP_MAGIC = b"\x1f\x8b"


def _read_maybe_gzip(path: Path) -> bytes:
    raw = path.read_bytes()
    if raw[:2] != _GZIP_MAGIC:
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise InputError(
            f"{path} starts like a gzip file but cannot be decompressed ({exc}); it is truncated "
            "or corrupt. Delete it and download it again."
        ) from exc


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an IDX file (the MNIST format), gzip-compressed or not, into a native-endian array.

    Header (http://yann.lecun.com/exdb/mnist/): two zero bytes, a type code (0x08 ubyte,
    0x09 byte, 0x0B int16, 0x0C int32, 0x0D float32, 0x0E float64), the number of dimensions,
    then one big-endian uint32 per dimension; the data follows in big-endian C order.
    Compression is detected by the gzip magic bytes, not by the file name. Raises
    :class:`InputError` when the header is malformed or the size does not match it.
    """
    path = Path(path)
    data = _read_maybe_gzip(path)

    def bad(why: str) -> InputError:
        return InputError(
            f"{path} is not a valid IDX file: {why}. Delete it and download it again "
            "(download=True) or replace it with the original file."
        )

    if len(data) < 4:
        raise bad(f"only {len(data)} bytes, shorter than the 4-byte magic number")
    if data[0] != 0 or data[1] != 0:
        raise bad(f"magic number starts with {data[:2].hex()}, expected 0000")
    code, ndim = data[2], data[3]
    if code not in IDX_DTYPES:
        raise bad(f"unknown type code 0x{code:02x} (known: 08, 09, 0b, 0c, 0d, 0e)")
    if ndim == 0:
        raise bad("zero dimensions")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise bad(f"header declares {ndim} dimensions but the file ends after {len(data)} bytes")
    dims = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(IDX_DTYPES[code])
    expected = header + int(np.prod(dims, dtype=object)) * dtype.itemsize
    if len(data) != expected:
        raise bad(
            f"dimensions {dims} of {dtype.name} need {expected} bytes, the file has {len(data)}"
        )
    arr = np.frombuffer(data, dtype=dtype, offset=header).reshape(dims)
    return arr.astype(dtype.newbyteorder("="))


def _idx_pair(
    name: str, split: str, root: str | os.PathLike[str] | None, download: bool
) -> tuple[np.ndarray, np.ndarray]:
    """The split's images and labels: from the default folder, else from the first system folder
    (:func:`system_dirs`) holding both files, else downloaded into the default folder when
    ``download``."""
    check_split(name, split)
    folder = data_root(name, root)
    system = system_dirs(name, root)
    prefix = "train" if split == "train" else "t10k"
    wanted = (f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte")

    def find(where: Path) -> tuple[list[Path], list[str]]:
        found, missing = [], []
        for stem in wanted:
            hit = next((where / n for n in (stem, stem + ".gz") if (where / n).is_file()), None)
            if hit is None:
                missing.append(f"{stem}[.gz]")
            else:
                found.append(hit)
        return found, missing

    found, missing = find(folder)
    for where in system if missing else ():
        there, lacking = find(where)
        if not lacking:  # both files from one folder, never a mix
            found, missing = there, lacking
            break
    if missing and download:
        download_dataset(name, folder, (split,))
        found, missing = find(folder)
    if missing:
        raise _missing_error(name, folder, missing, split, also=system)
    images, labels = (read_idx(p) for p in found)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise InputError(
            f"{found[0]}: expected uint8 images of shape (N, H, W), got {images.dtype} "
            f"{images.shape}. Check that the image and label files are not swapped."
        )
    if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
        raise InputError(
            f"{found[1]}: expected {images.shape[0]} labels (one per image in {found[0].name}), "
            f"got shape {labels.shape}. The files come from different splits or are corrupt."
        )
    return images, labels


def _to_images(arr: np.ndarray) -> torch.Tensor:
    """uint8 (N, C, H, W) -> float32 in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(arr)).float().div_(255.0)


def _idx_dataset(
    name: str,
    classes: Sequence[str],
    split: str,
    root: str | os.PathLike[str] | None,
    download: bool,
) -> ArrayDataset:
    images, labels = _idx_pair(name, split, root, download)
    mean, std = STATS[name]
    return ArrayDataset(
        _to_images(images[:, None]),
        torch.from_numpy(labels.astype(np.int64)),
        classes,
        mean,
        std,
        name=name,
    )


@DATASETS.register(
    "mnist",
    "MNIST handwritten digits, 1x28x28, 10 classes (IDX files; download=True fetches)",
    paper="LeCun, Bottou, Bengio, Haffner. Gradient-Based Learning Applied to Document "
    "Recognition. Proceedings of the IEEE, 1998.",
    source="file",
    shape=(1, 28, 28),
    num_classes=10,
)
def load_mnist(
    split: str = "train", root: str | os.PathLike[str] | None = None, download: bool = False
) -> ArrayDataset:
    """MNIST (LeCun et al. 1998): 60,000 train / 10,000 test digits from the IDX files.

    Mean/std (0.1307,) / (0.3081,). Default folder: see :func:`data_root`.
    """
    return _idx_dataset("mnist", DIGIT_CLASSES, split, root, download)


@DATASETS.register(
    "fashion-mnist",
    "Fashion-MNIST (Zalando), 1x28x28, 10 classes (IDX files; download=True fetches, or from "
    "Debian's dataset-fashion-mnist package)",
    paper="Xiao, Rasul, Vollgraf. Fashion-MNIST: a Novel Image Dataset for Benchmarking Machine "
    "Learning Algorithms. arXiv:1708.07747, 2017.",
    source="file",
    shape=(1, 28, 28),
    num_classes=10,
)
def load_fashion_mnist(
    split: str = "train", root: str | os.PathLike[str] | None = None, download: bool = False
) -> ArrayDataset:
    """Fashion-MNIST (Xiao et al. 2017, arXiv:1708.07747), same IDX layout as MNIST.

    Mean/std (0.2860,) / (0.3530,). Files are looked for in ``root`` when given; else in the
    default folder (:func:`data_root`), then in ``/usr/share/datasets/fashion-mnist``, where
    Debian's ``dataset-fashion-mnist`` package installs the gzipped IDX files
    (:data:`SYSTEM_DIRS`); ``download=True`` fetches them into the default folder only when
    neither has them.
    """
    return _idx_dataset("fashion-mnist", FASHION_CLASSES, split, root, download)


# --------------------------------------------------------------------------------------------
# CIFAR-10 / CIFAR-100: python pickles, read with a restricted unpickler
# --------------------------------------------------------------------------------------------


def _numpy_globals() -> dict[tuple[str, str], Any]:
    try:  # numpy >= 2 keeps its internals in numpy._core
        from numpy._core import multiarray, numeric
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core import multiarray, numeric  # type: ignore[no-redef]
    allowed: dict[tuple[str, str], Any] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
    }
    for core in ("numpy.core", "numpy._core"):  # pickles name 1.x or 2.x paths; both map here
        allowed[(f"{core}.multiarray", "_reconstruct")] = multiarray._reconstruct
        allowed[(f"{core}.multiarray", "scalar")] = multiarray.scalar
        allowed[(f"{core}.numeric", "_frombuffer")] = numeric._frombuffer
    return allowed


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler for the CIFAR files that can build numpy arrays and nothing else.

    Why: the CIFAR "python version" *is* a pickle, and unpickling runs whatever callable the file
    names - a crafted file could execute arbitrary code. This is the only place in trustlab where
    a pickle is read, and :meth:`find_class` allows only numpy array reconstruction
    (``ndarray``, ``dtype``, ``_reconstruct``, ``scalar``, ``_frombuffer``, under numpy 1.x
    ``numpy.core`` and 2.x ``numpy._core`` paths); any other global raises :class:`InputError`
    before it is called.

    Args:
        file: a binary file object, as for :class:`pickle.Unpickler` (whose keyword arguments it
            takes too).

    Example:
        >>> import io
        >>> RestrictedUnpickler(io.BytesIO(pickle.dumps({"labels": [1, 2]}))).load()
        {'labels': [1, 2]}
    """

    _ALLOWED: dict[tuple[str, str], Any] | None = None

    def find_class(self, module: str, name: str) -> Any:
        if RestrictedUnpickler._ALLOWED is None:
            RestrictedUnpickler._ALLOWED = _numpy_globals()
        obj = RestrictedUnpickler._ALLOWED.get((module, name))
        if obj is None:
            raise InputError(
                f"refusing to unpickle {module}.{name}: a CIFAR file contains only numpy arrays, "
                "lists and strings, so this file is not a genuine CIFAR batch (it may be crafted "
                "to run code). Delete it and download the dataset again."
            )
        return obj


def load_cifar_pickle(path: str | os.PathLike[str]) -> dict[bytes, Any]:
    """Read one CIFAR batch / meta file (a Python-2 pickle) with :class:`RestrictedUnpickler`.

    Keys come back as ``bytes`` (``encoding="bytes"``, as the files are Python-2 pickles).
    """
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            obj = RestrictedUnpickler(fh, encoding="bytes").load()
    except InputError:
        raise
    except Exception as exc:  # truncated file, wrong format, ...: the message says which file
        raise InputError(
            f"{path} is not a readable CIFAR pickle ({type(exc).__name__}: {exc}). Delete it and "
            "download the dataset again."
        ) from exc
    if not isinstance(obj, dict):
        raise InputError(f"{path}: expected a dict in the CIFAR pickle, got {type(obj).__name__}.")
    return obj


def _field(d: dict[bytes, Any], key: bytes, path: Path) -> Any:
    for k in (key, key.decode()):
        if k in d:
            return d[k]
    raise InputError(
        f"{path}: the CIFAR pickle has no {key.decode()!r} entry (keys: "
        f"{sorted(str(k) for k in d)}). The file is not a CIFAR python-version batch."
    )


def _names(values: Any) -> list[str]:
    return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in values]


def _cifar_batch(path: Path, label_keys: Sequence[bytes]) -> tuple[np.ndarray, list[np.ndarray]]:
    d = load_cifar_pickle(path)
    data = np.asarray(_field(d, b"data", path))
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise InputError(
            f"{path}: 'data' is {data.dtype} {data.shape}; expected uint8 (N, 3072) rows of "
            "1024 red, 1024 green, 1024 blue values."
        )
    labels = []
    for key in label_keys:
        lab = np.asarray(_field(d, key, path), dtype=np.int64).reshape(-1)
        if lab.shape[0] != data.shape[0]:
            raise InputError(f"{path}: {lab.shape[0]} {key.decode()} for {data.shape[0]} images.")
        labels.append(lab)
    return data.reshape(-1, 3, 32, 32), labels


def _cifar_files(
    name: str,
    sub: str,
    needed: Sequence[str],
    split: str,
    root: str | os.PathLike[str] | None,
    download: bool,
) -> Path:
    """The folder holding ``needed``: ``<root>/<sub>`` or ``<root>`` itself; downloads if asked."""
    folder = data_root(name, root)

    def locate() -> Path | None:
        for cand in (folder / sub, folder):
            if all((cand / f).is_file() for f in needed):
                return cand
        return None

    found = locate()
    if found is None and download:
        download_dataset(name, folder, (split,))
        found = locate()
    if found is None:
        missing = [f"{sub}/{f}" for f in needed if not (folder / sub / f).is_file()]
        raise _missing_error(name, folder, missing, split)
    return found


@DATASETS.register(
    "cifar10",
    "CIFAR-10, 3x32x32, 10 classes (python-version pickles)",
    paper="Krizhevsky. Learning Multiple Layers of Features from Tiny Images. Technical report, "
    "University of Toronto, 2009.",
    source="file",
    shape=(3, 32, 32),
    num_classes=10,
)
def load_cifar10(
    split: str = "train", root: str | os.PathLike[str] | None = None, download: bool = False
) -> ArrayDataset:
    """CIFAR-10 (Krizhevsky 2009): 50,000 train (``data_batch_1..5``) / 10,000 test images.

    Class names from ``batches.meta``. Mean/std (0.4914, 0.4822, 0.4465) /
    (0.2470, 0.2435, 0.2616). Default folder: see :func:`data_root`.
    """
    check_split("cifar10", split)
    batches = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    folder = _cifar_files(
        "cifar10", "cifar-10-batches-py", [*batches, "batches.meta"], split, root, download
    )
    parts = [_cifar_batch(folder / b, (b"labels",)) for b in batches]
    x = np.concatenate([p[0] for p in parts])
    y = np.concatenate([p[1][0] for p in parts])
    meta_path = folder / "batches.meta"
    classes = _names(_field(load_cifar_pickle(meta_path), b"label_names", meta_path))
    mean, std = STATS["cifar10"]
    return ArrayDataset(_to_images(x), torch.from_numpy(y), classes, mean, std, name="cifar10")


@DATASETS.register(
    "cifar100",
    "CIFAR-100, 3x32x32, 100 fine classes (+ coarse_y superclasses)",
    paper="Krizhevsky. Learning Multiple Layers of Features from Tiny Images. Technical report, "
    "University of Toronto, 2009.",
    source="file",
    shape=(3, 32, 32),
    num_classes=100,
)
def load_cifar100(
    split: str = "train", root: str | os.PathLike[str] | None = None, download: bool = False
) -> ArrayDataset:
    """CIFAR-100 (Krizhevsky 2009): 50,000 train / 10,000 test images, 100 fine labels.

    ``.y`` holds the fine labels; the 20 superclasses travel as ``.coarse_y`` (int64) and
    ``.coarse_classes`` (the true superclass membership, for asymmetric label noise). Mean/std
    (0.5071, 0.4865, 0.4409) / (0.2673, 0.2564, 0.2762). Default folder: see :func:`data_root`.
    """
    check_split("cifar100", split)
    folder = _cifar_files("cifar100", "cifar-100-python", [split, "meta"], split, root, download)
    x, (fine, coarse) = _cifar_batch(folder / split, (b"fine_labels", b"coarse_labels"))
    meta = load_cifar_pickle(folder / "meta")
    classes = _names(_field(meta, b"fine_label_names", folder / "meta"))
    coarse_classes = _names(_field(meta, b"coarse_label_names", folder / "meta"))
    mean, std = STATS["cifar100"]
    ds = ArrayDataset(_to_images(x), torch.from_numpy(fine), classes, mean, std, name="cifar100")
    if coarse.size and (coarse.min() < 0 or coarse.max() >= len(coarse_classes)):
        raise InputError(
            f"{folder / split}: coarse labels span [{coarse.min()}, {coarse.max()}] but meta "
            f"names {len(coarse_classes)} superclasses. The files are from different versions."
        )
    ds.coarse_y = torch.from_numpy(coarse)
    ds.coarse_classes = coarse_classes
    return ds


# --------------------------------------------------------------------------------------------
# SVHN: MATLAB .mat
# --------------------------------------------------------------------------------------------


@DATASETS.register(
    "svhn",
    "SVHN cropped digits, 3x32x32, 10 classes (.mat files)",
    paper="Netzer, Wang, Coates, Bissacco, Wu, Ng. Reading Digits in Natural Images with "
    "Unsupervised Feature Learning. NIPS Workshop on Deep Learning and Unsupervised Feature "
    "Learning, 2011.",
    source="file",
    shape=(3, 32, 32),
    num_classes=10,
)
def load_svhn(
    split: str = "train", root: str | os.PathLike[str] | None = None, download: bool = False
) -> ArrayDataset:
    """SVHN format 2 (Netzer et al. 2011): 73,257 train / 26,032 test 32x32 digits.

    ``X`` is stored (32, 32, 3, N) and ``y`` (N, 1) with label 10 for digit 0, mapped to 0.
    Mean/std (0.4377, 0.4438, 0.4728) / (0.1980, 0.2010, 0.1970). The ``extra`` set is not read.
    """
    import scipy.io

    check_split("svhn", split)
    folder = data_root("svhn", root)
    fname = f"{split}_32x32.mat"
    path = folder / fname
    if not path.is_file() and download:
        download_dataset("svhn", folder, (split,))
    if not path.is_file():
        raise _missing_error("svhn", folder, [fname], split)
    try:
        mat = scipy.io.loadmat(str(path), variable_names=("X", "y"))
    except Exception as exc:
        raise InputError(
            f"{path} is not a readable SVHN .mat file ({type(exc).__name__}: {exc}). Delete it "
            "and download it again."
        ) from exc
    if "X" not in mat or "y" not in mat:
        raise InputError(f"{path}: expected variables 'X' and 'y', found {sorted(mat)}.")
    images, labels = np.asarray(mat["X"]), np.asarray(mat["y"]).reshape(-1).astype(np.int64)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[2] != 3:
        raise InputError(
            f"{path}: X is {images.dtype} {images.shape}; expected uint8 (H, W, 3, N)."
        )
    if labels.shape[0] != images.shape[3]:
        raise InputError(f"{path}: {labels.shape[0]} labels for {images.shape[3]} images.")
    labels[labels == 10] = 0
    mean, std = STATS["svhn"]
    x = _to_images(images.transpose(3, 2, 0, 1))
    return ArrayDataset(x, torch.from_numpy(labels), DIGIT_CLASSES, mean, std, name="svhn")


# --------------------------------------------------------------------------------------------
# Image folders
# --------------------------------------------------------------------------------------------

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp")


def _read_image(path: Path) -> np.ndarray:
    """Float (H, W, 1 or 3) in [0, 1]; RGBA / gray+alpha composited over white."""
    from skimage import io as skio
    from skimage.color import rgba2rgb
    from skimage.util import img_as_float32

    try:
        with warnings.catch_warnings():  # imageio's legacy plugins warn while probing bad files
            warnings.simplefilter("ignore", DeprecationWarning)
            img = skio.imread(str(path))
    except Exception as exc:
        raise InputError(
            f"cannot read image {path} ({type(exc).__name__}: {exc}); remove or replace it."
        ) from exc
    img = np.asarray(img)
    if img.dtype == np.bool_:
        img = img.astype(np.float32)
    elif img.dtype.kind == "f":
        img = np.clip(img.astype(np.float32), 0.0, 1.0)
    else:
        img = img_as_float32(img)
    if img.ndim == 2:
        img = img[:, :, None]
    if img.ndim != 3 or img.shape[2] not in (1, 2, 3, 4):
        raise InputError(f"image {path} has shape {img.shape}; expected gray, RGB or RGBA.")
    if img.shape[2] == 4:
        img = rgba2rgb(img, background=(1.0, 1.0, 1.0)).astype(np.float32)
    elif img.shape[2] == 2:  # gray + alpha
        alpha = img[:, :, 1:2]
        img = img[:, :, :1] * alpha + (1.0 - alpha)
    return img


def read_image(path: str | os.PathLike[str]) -> torch.Tensor:
    """One image file (PNG, JPEG, ...) as a float tensor ``(C, H, W)`` in ``[0, 1]`` (C = 1 or
    3; alpha composited over white)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"image file {path} does not exist.")
    return torch.from_numpy(np.ascontiguousarray(_read_image(path).transpose(2, 0, 1)))


def _class_names(root: Path) -> list[str]:
    names: set[str] = set()
    for split in SPLITS:
        folder = root / split
        if folder.is_dir():
            names.update(
                p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")
            )
    return sorted(names)


def _list_images(folder: Path, classes: Sequence[str]) -> tuple[list[Path], list[int]]:
    files: list[Path] = []
    labels: list[int] = []
    for k, cls in enumerate(classes):
        cdir = folder / cls
        if not cdir.is_dir():
            continue
        found = sorted(
            p
            for p in cdir.iterdir()
            if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")
        )
        files += found
        labels += [k] * len(found)
    return files, labels


def _read_split(
    base: Path,
    split: str,
    classes: Sequence[str],
    size: tuple[int, int] | None,
    channels: int | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Images of ``base/split`` as float (N, C, H, W) and their labels."""
    from skimage.color import rgb2gray
    from skimage.transform import resize

    files, labels = _list_images(base / split, classes)
    if not files:
        pattern = f"{split}/<class_name>/*{{{','.join(IMAGE_EXTENSIONS)}}}"
        raise _missing_error("image-folder", base, [pattern], split)
    images = [_read_image(p) for p in files]
    size = size if size is not None else images[0].shape[:2]
    if channels is None:
        channels = 1 if all(img.shape[2] == 1 for img in images) else 3
    out = np.empty((len(images), channels, *size), dtype=np.float32)
    for i, img in enumerate(images):
        if img.shape[:2] != tuple(size):
            img = resize(img, size, order=1, anti_aliasing=True, preserve_range=True)
        if channels == 3 and img.shape[2] == 1:
            img = np.repeat(img, 3, axis=2)
        elif channels == 1 and img.shape[2] == 3:
            img = rgb2gray(img)[:, :, None]
        out[i] = img.transpose(2, 0, 1)
    return torch.from_numpy(out).clamp_(0.0, 1.0), torch.tensor(labels, dtype=torch.long)


def load_image_folder(
    root: str | os.PathLike[str] | None,
    split: str = "train",
    image_size: int | tuple[int, int] | None = None,
) -> ArrayDataset:
    """Read ``root/<split>/<class_name>/*.{png,jpg,jpeg,bmp}`` into an :class:`ArrayDataset`.

    Classes are the sorted names of the class folders under ``root/train`` and ``root/test``
    together, so both splits share one label numbering (a split may lack some classes). Images
    are resized (``skimage.transform.resize``, bilinear, anti-aliased) to ``image_size`` (an int
    for square, or ``(H, W)``; default: the size of the first training image, i.e. the first file
    of the first class). The result has 1 channel only if every training image is grayscale, else
    3 (gray replicated, RGBA composited over white). A non-train split takes size and channels
    from ``root/train`` when it exists, and mean/std are always those of ``root/train`` (of the
    split itself when there is no train folder). ``root=None`` means
    ``$TRUSTLAB_DATA/image-folder`` or ``./data/image-folder``.
    """
    check_split("image-folder", split)
    base = data_root("image-folder", root)
    if isinstance(image_size, int):
        image_size = (image_size, image_size)
    if image_size is not None:
        image_size = tuple(int(v) for v in image_size)
        if len(image_size) != 2 or min(image_size) < 1:
            raise InputError(f"image_size must be a positive int or (H, W), got {image_size!r}.")
    if not (base / split).is_dir():
        raise _missing_error("image-folder", base, [f"{split}/<class_name>/*.png|jpg|bmp"], split)
    classes = _class_names(base)
    ref = None
    if split != "train" and (base / "train").is_dir():
        ref, _ = _read_split(base, "train", classes, image_size, None)
        x, y = _read_split(base, split, classes, tuple(ref.shape[2:]), ref.shape[1])
    else:
        x, y = _read_split(base, split, classes, image_size, None)
    ref = x if ref is None else ref
    mean, std = channel_stats(ref)
    return ArrayDataset(x, y, classes, mean, std, name="image-folder")


@DATASETS.register(
    "image-folder", "your own images: root/<split>/<class_name>/*.png|jpg|bmp", source="file"
)
def _image_folder_factory(
    split: str = "train", root: str | os.PathLike[str] | None = None, download: bool = False
) -> ArrayDataset:
    """Registry factory for :func:`load_image_folder`; ``download`` is ignored."""
    return load_image_folder(root, split)


__all__ = [
    "BASE_URLS",
    "RESOURCES",
    "STATS",
    "Resource",
    "RestrictedUnpickler",
    "SYSTEM_DIRS",
    "SYSTEM_PACKAGES",
    "data_root",
    "download_dataset",
    "download_url",
    "load_cifar10",
    "load_cifar100",
    "load_cifar_pickle",
    "load_fashion_mnist",
    "load_image_folder",
    "load_mnist",
    "load_svhn",
    "md5sum",
    "read_idx",
    "safe_extract",
    "system_dirs",
    "urlopen_fetch",
]
