"""In-memory datasets and the one entry point, :func:`load_dataset`.

Contract (architecture section 3): images are float tensors in ``[0, 1]`` of shape
``(N, C, H, W)``, video ``(N, C, T, H, W)``; labels are ``int64`` class indices ``(N,)``.
Normalisation statistics travel with the dataset (``.mean``, ``.std``) and are applied *inside*
the model (:class:`trustlab.models.wrappers.Normalized`), never to the data.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch.utils.data import Dataset

from trustlab.errors import InputError
from trustlab.registry import DATASETS
from trustlab.utils.io import atomic_path
from trustlab.utils.paths import cache_dir

SPLITS = ("train", "test")


class ArrayDataset(Dataset):
    """A labelled dataset held as two tensors (what every trustlab loader returns).

    Args:
        x: float inputs in ``[0, 1]``, ``(N, C, H, W)`` or ``(N, C, T, H, W)`` (converted to
            float32).
        y: integer labels ``(N,)`` in ``[0, len(classes))`` (stored as ``int64``).
        classes: class names; default None (``"0" .. str(max(y))``).
        mean: per-channel mean of the *training* split (for ``Normalized``); default None (0.5 per
            channel).
        std: per-channel standard deviation of the training split; default None (0.5 per channel).
        name: dataset name, for records; default ``"array"``.
        validate: check shapes, ranges and NaNs now (raises :class:`InputError`); default True.

    Example:
        >>> data = ArrayDataset(torch.rand(8, 3, 32, 32), torch.arange(8) % 2)
        >>> data.num_classes, data.input_shape, len(data)
        (2, (3, 32, 32), 8)
    """

    def __init__(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        classes: Sequence[str] | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        name: str = "array",
        validate: bool = True,
    ) -> None:
        if not isinstance(x, torch.Tensor):
            x = torch.as_tensor(x)
        if not isinstance(y, torch.Tensor):
            y = torch.as_tensor(y)
        # float32 is the contract (numpy's float64 and uint8 included: uint8 must be scaled
        # by the caller, and validation reports values outside [0, 1])
        self.x = x if x.dtype == torch.float32 else x.float()
        if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
            raise InputError(
                f"dataset {name!r}: labels are {y.dtype}; labels must be integer class indices "
                "(e.g. y.long() after checking that they are whole numbers)."
            )
        self.y = y.long()
        if classes is None:
            k = int(self.y.max().item()) + 1 if self.y.numel() else 0
            classes = [str(i) for i in range(k)]
        self.classes = list(classes)
        channels = self.x.shape[1] if self.x.dim() >= 2 else 1
        self.mean = tuple(float(m) for m in mean) if mean is not None else (0.5,) * channels
        self.std = tuple(float(s) for s in std) if std is not None else (0.5,) * channels
        self.name = name
        if validate:
            self.validate()

    def validate(self) -> ArrayDataset:
        """Raise :class:`InputError` naming the first problem found; return ``self``."""
        x, y, k = self.x, self.y, len(self.classes)
        where = f"dataset {self.name!r}"
        if x.dim() not in (4, 5):
            raise InputError(
                f"{where}: inputs have shape {tuple(x.shape)}; expected (N, C, H, W) images or "
                "(N, C, T, H, W) video. Add the missing dimensions (e.g. x.unsqueeze(1))."
            )
        if y.dim() != 1 or y.shape[0] != x.shape[0]:
            raise InputError(
                f"{where}: labels have shape {tuple(y.shape)} for {x.shape[0]} inputs; expected "
                f"({x.shape[0]},) class indices."
            )
        if x.shape[0] == 0:
            raise InputError(f"{where} is empty: it needs at least one sample.")
        if not torch.isfinite(x).all():
            bad = int((~torch.isfinite(x)).flatten(1).any(1).sum())
            raise InputError(
                f"{where}: {bad} input(s) contain NaN or inf values. Clean or drop them first."
            )
        lo, hi = float(x.min()), float(x.max())
        if lo < 0.0 or hi > 1.0:
            raise InputError(
                f"{where}: input values span [{lo:.3g}, {hi:.3g}]; trustlab expects images in "
                "[0, 1]. Divide uint8 images by 255; keep mean/std normalisation inside the "
                "model (trustlab.models.Normalized)."
            )
        ymin, ymax = int(y.min()), int(y.max())
        if ymin < 0:
            raise InputError(f"{where}: labels include {ymin}; labels must be class indices >= 0.")
        if ymax >= k:
            raise InputError(
                f"{where}: labels span [{ymin}, {ymax}] but there are {k} classes; labels must "
                f"be integers in [0, {k - 1}]."
            )
        if len(self.mean) != x.shape[1] or len(self.std) != x.shape[1]:
            raise InputError(
                f"{where}: mean/std have {len(self.mean)}/{len(self.std)} entries for "
                f"{x.shape[1]} channels."
            )
        if any(s <= 0 for s in self.std):
            raise InputError(f"{where}: std must be positive, got {self.std}.")
        return self

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x.shape[1:])

    def __len__(self) -> int:
        return self.x.shape[0]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x[index], self.y[index]

    def subset(self, indices: torch.Tensor | Sequence[int]) -> ArrayDataset:
        """The samples at ``indices``, sharing classes and statistics."""
        idx = torch.as_tensor(indices, dtype=torch.long)
        out = ArrayDataset(
            self.x[idx], self.y[idx], self.classes, self.mean, self.std, self.name, validate=False
        )
        # extra attributes travel along: per-sample tensors (e.g. CIFAR-100's coarse_y) are
        # indexed, anything else (e.g. coarse_classes) is shared
        for key, value in vars(self).items():
            if key in vars(out):
                continue
            if isinstance(value, torch.Tensor) and value.dim() >= 1 and len(value) == len(self):
                value = value[idx]
            setattr(out, key, value)
        return out

    def stratified(self, n: int, seed: int = 0) -> ArrayDataset:
        """A class-stratified random subset of ``n`` samples (``n >= len(self)``: everything).

        Each class keeps its share of the dataset (largest-remainder rounding, so the counts add
        up to ``n``); which samples is drawn with ``seed``, and the result keeps the original
        order. The same ``n`` and ``seed`` give the same subset.

        Example::

            small = load_dataset("fashion-mnist", "train").stratified(10_000)
        """
        if n < 1:
            raise InputError(f"subset size must be >= 1, got {n}.")
        if n >= len(self):
            return self
        gen = torch.Generator().manual_seed(seed)
        counts = torch.bincount(self.y, minlength=self.num_classes)
        quota = counts.double() * n / len(self)
        take = quota.floor().long()
        short = n - int(take.sum())
        if short:  # largest remainders first, ties by class index
            order = torch.argsort(quota - take, descending=True, stable=True)
            take[order[:short]] += 1
        picked = []
        for c in torch.nonzero(counts).flatten().tolist():
            members = torch.nonzero(self.y == c).flatten()
            picked.append(members[torch.randperm(len(members), generator=gen)[: int(take[c])]])
        return self.subset(torch.sort(torch.cat(picked)).values)

    def __repr__(self) -> str:
        return (
            f"ArrayDataset(name={self.name!r}, n={len(self)}, shape={self.input_shape}, "
            f"classes={self.num_classes})"
        )


def as_array_dataset(data: Dataset, name: str | None = None) -> ArrayDataset:
    """Accept any ``Dataset`` yielding ``(x, y)`` and return a validated :class:`ArrayDataset`."""
    if isinstance(data, ArrayDataset):
        return data.validate()
    try:
        n = len(data)  # type: ignore[arg-type]
    except TypeError as exc:
        raise InputError("the dataset has no len(); pass a map-style torch Dataset.") from exc
    if n == 0:
        raise InputError(f"dataset {name or type(data).__name__!r} is empty.")
    label = name or type(data).__name__
    xs, ys = [], []
    for i in range(n):  # a one-time conversion of a user's dataset, not a training hot path
        item = data[i]
        if not isinstance(item, (tuple, list)) or len(item) < 2:
            raise InputError(
                f"dataset item {i} is a {type(item).__name__}; expected a pair (x, y)."
            )
        try:
            xi, yi = torch.as_tensor(item[0]), torch.as_tensor(item[1])
        except (TypeError, ValueError, RuntimeError) as exc:
            raise InputError(f"dataset {label!r} item {i} is not numeric: {exc}") from None
        if yi.numel() != 1 or yi.is_floating_point() or yi.dtype == torch.bool:
            raise InputError(
                f"dataset {label!r} item {i} has label {item[1]!r}; labels must be single "
                "integer class indices."
            )
        if xs and xi.shape != xs[0].shape:
            raise InputError(
                f"dataset {label!r} item {i} has shape {tuple(xi.shape)} but item 0 has "
                f"{tuple(xs[0].shape)}; resize the inputs to one shape."
            )
        xs.append(xi)
        ys.append(int(yi))
    x = torch.stack(xs).float()
    classes = getattr(data, "classes", None)
    return ArrayDataset(x, torch.tensor(ys), classes, name=label)


def load_dataset(
    name: str, split: str = "train", root: str | Path | None = None, download: bool = False
) -> ArrayDataset:
    """Load a registered dataset split.

    Built-in offline datasets (``digits``, ``shapes10``, ``fundus2``, ``moving-shapes``) are
    generated from bundled sources, seeded, and cached under ``$TRUSTLAB_HOME/cache``. File-based
    datasets (``mnist``, ``fashion-mnist``, ``cifar10``, ``cifar100``, ``svhn``) read ``root``
    and download only when ``download=True``. ``trustlab datasets`` lists them all.
    """
    entry = DATASETS.get(name)
    check_split(name, split)
    ds = entry.factory(split=split, root=root, download=download)
    return ds


def cached_tensors(
    key: str, build: Callable[[], dict[str, torch.Tensor]]
) -> dict[str, torch.Tensor]:
    """Return the tensors cached under ``$TRUSTLAB_HOME/cache/<key>.safetensors``.

    When the file is missing or unreadable, ``build()`` is called and its result is written
    atomically. ``key`` must change whenever the generator changes (include a version). A cache
    that cannot be written (a read-only ``$TRUSTLAB_CACHE``) is only read: what is missing is
    built in memory every time, with a warning naming the folder.
    """
    path = cache_dir("datasets", create=False) / f"{key}.safetensors"
    if path.exists():
        try:
            return load_file(str(path))
        except Exception:  # a corrupt cache entry is rebuilt, never trusted
            import contextlib

            with contextlib.suppress(OSError):  # a read-only cache: leave the file alone
                path.unlink(missing_ok=True)
    tensors = {k: v.contiguous() for k, v in build().items()}
    _write_cache(path, tensors)
    return tensors


def _write_cache(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    """Write a cache entry atomically; warn (once per folder) and go on when the cache folder
    cannot be written."""
    import warnings

    try:
        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp))
    except OSError as exc:
        if str(path.parent) not in _UNWRITABLE:
            _UNWRITABLE.add(str(path.parent))
            warnings.warn(
                f"cannot write the dataset cache {path.parent} ({exc.strerror or exc}): "
                "generated datasets are built in memory each time. Set TRUSTLAB_CACHE to a "
                "writable folder to keep them.",
                UserWarning,
                stacklevel=3,
            )


_UNWRITABLE: set[str] = set()  # cache folders already warned about


def _check_not_empty(path: Path, x: torch.Tensor, key: str) -> None:
    """A user's array file must hold at least one sample per split, named in the error."""
    if x.dim() == 0 or x.shape[0] == 0:
        raise InputError(
            f"{path}: array {key!r} holds no samples (shape {tuple(x.shape)}); store at least one "
            "(N, C, H, W) input per split."
        )


def _load_user_arrays(path: Path, split: str) -> tuple[torch.Tensor, torch.Tensor, list | None]:
    import json
    import zipfile

    import numpy as np
    from safetensors import safe_open

    xk, yk = f"x_{split}", f"y_{split}"
    classes = None
    wanted = "x_train, y_train, x_test, y_test (optional: classes)"
    if path.suffix == ".npz":
        fix = "Save them with numpy.savez(path, x_train=..., y_train=..., x_test=..., y_test=...)."
        try:
            loaded = np.load(path, allow_pickle=False)  # never unpickle a user's file
        except EOFError:  # numpy's answer to a 0-byte file
            raise InputError(
                f"{path} is empty (0 bytes); expected arrays {wanted}. {fix}"
            ) from None
        except (ValueError, OSError, zipfile.BadZipFile) as exc:
            raise InputError(f"{path} is not a plain-array .npz file ({exc}). {fix}") from None
        if not isinstance(loaded, np.lib.npyio.NpzFile):  # one .npy array named .npz
            raise InputError(f"{path} holds one array, not the arrays {wanted}. {fix}")
        try:
            with loaded as z:
                if xk not in z or yk not in z:
                    held = ", ".join(sorted(z.files)) if z.files else "no arrays"
                    raise InputError(
                        f"{path} holds {held}; expected arrays {xk!r} and {yk!r} (all of: "
                        f"{wanted}). {fix}"
                    )
                x, y = torch.from_numpy(z[xk]), torch.from_numpy(z[yk])
                classes = [str(c) for c in z["classes"]] if "classes" in z else None
        except InputError:
            raise
        except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
            raise InputError(f"{path} is not a plain-array .npz file ({exc}). {fix}") from None
        _check_not_empty(path, x, xk)
        return x, y, classes
    try:
        with safe_open(str(path), framework="pt") as fh:
            keys = set(fh.keys())
            if xk not in keys or yk not in keys:
                raise InputError(f"{path} holds {sorted(keys)}; expected {xk!r} and {yk!r}.")
            x, y = fh.get_tensor(xk), fh.get_tensor(yk)
            raw = (fh.metadata() or {}).get("classes")
            classes = json.loads(raw) if raw else None
    except InputError:
        raise
    except Exception as exc:
        raise InputError(
            f"{path} is not a safetensors file ({exc}). Save your arrays with "
            "safetensors.torch.save_file or numpy.savez."
        ) from None
    _check_not_empty(path, x, xk)
    return x, y, classes


@DATASETS.register(
    "tensors",
    "your own arrays: --data-root FILE.safetensors|.npz with x_train, y_train, x_test, y_test",
    source="file",
)
def _tensors_dataset(
    split: str, root: str | Path | None = None, download: bool = False
) -> ArrayDataset:
    """A user's dataset from one file of arrays (``x_train`` ``(N, C, H, W)`` floats in [0, 1] or
    uint8, ``y_train`` int labels, same for ``test``; optional ``classes``). Validated: NaNs,
    labels out of range, wrong shapes and values outside [0, 1] are errors."""
    if root is None:
        raise InputError(
            "dataset 'tensors' needs --data-root pointing to a .safetensors or .npz "
            "file with x_train, y_train, x_test, y_test."
        )
    path = Path(root)
    if path.is_dir():
        raise InputError(
            f"{path} is a folder; dataset 'tensors' takes one file of arrays: --data-root "
            "FILE.npz or FILE.safetensors with x_train, y_train, x_test, y_test."
        )
    if not path.is_file():
        raise InputError(f"dataset file {path} does not exist.")
    raw_x, y, classes = _load_user_arrays(path, split)
    x = raw_x.float() / 255.0 if raw_x.dtype == torch.uint8 else raw_x
    if y.is_floating_point() or y.dtype == torch.bool:
        raise InputError(f"{path}: labels y_{split} are {y.dtype}; store integer class indices.")
    train_x, train_y = (raw_x, y) if split == "train" else _load_user_arrays(path, "train")[:2]
    if classes is None:  # the class count comes from the training labels
        classes = [str(i) for i in range(int(train_y.max()) + 1 if train_y.numel() else 0)]
    ds = ArrayDataset(x, y, classes, name=f"tensors:{path.name}", validate=False)
    if not torch.isfinite(train_x.float()).all():
        bad = int((~torch.isfinite(train_x.float())).flatten(1).any(1).sum())
        raise InputError(
            f"{path}: {bad} training input(s) contain NaN or inf values. Clean or drop them first."
        )
    ds.mean, ds.std = channel_stats(train_x)
    return ds.validate()


def channel_stats(x: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and population std over every other dimension, in float64.

    ``uint8`` data (values 0..255 meaning 0..1) is summarised exactly from a histogram; float
    data in ``[0, 1]`` directly. The std is floored at 1e-3 so a constant channel cannot make
    ``Normalized`` divide by zero. The one implementation used by every dataset.
    """
    if x.dim() < 2 or x.shape[0] == 0:
        raise InputError("channel statistics need a non-empty (N, C, ...) tensor.")
    means, stds = [], []
    for c in range(x.shape[1]):  # a loop over channels, not samples
        xc = x[:, c]
        if xc.dtype == torch.uint8:
            counts = torch.bincount(xc.reshape(-1), minlength=256).double()
            values = torch.arange(256, dtype=torch.float64) / 255.0
            m = (counts * values).sum() / counts.sum()
            v = (counts * (values - m) ** 2).sum() / counts.sum()
        else:
            xd = xc.double()
            m, v = xd.mean(), xd.var(unbiased=False)
        means.append(float(m))
        stds.append(max(float(v.sqrt()), 1e-3))
    return tuple(means), tuple(stds)


def check_split(name: str, split: str) -> None:
    """Raise :class:`InputError` unless ``split`` is one of :data:`SPLITS`."""
    if split not in SPLITS:
        raise InputError(f"unknown split {split!r} for dataset {name!r}; use one of {SPLITS}.")
