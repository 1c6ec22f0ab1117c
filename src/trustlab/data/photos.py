"""Natural images that ship with scikit-image, cut for inpainting: ``photo-patches`` and
``lfw-faces``. Nothing is downloaded: both are built from files inside the scikit-image wheel
and cached under ``$TRUSTLAB_HOME/cache``.

- ``photo-patches``: 3x32x32 patches of six bundled colour photographs (:data:`PHOTOS`). Each
  photograph is scaled (anti-aliased) so that its shorter side is :data:`SHORT_SIDE` pixels;
  training patches are cut from its left three quarters and test patches from its right
  quarter, on a grid with stride :data:`STRIDE`, so no test pixel was ever seen in training
  (disjoint regions of the same photographs). The label is the photograph (6 classes).
- ``lfw-faces``: the 100 face images of scikit-image's ``lfw_subset`` (Labeled Faces in the
  Wild; its other 100 images are non-faces and are left out), 25x25 grey images cropped to their
  top-left 1x24x24 so that two stride-2 convolutions divide them; the first 80 are the training
  split, the last 20 the test split. One class, ``face``. A small stand-in for CelebA faces.
"""

from __future__ import annotations

import os

import numpy as np
import torch

from trustlab.data.datasets import ArrayDataset, cached_tensors, channel_stats, check_split
from trustlab.data.synthetic import bundled_image
from trustlab.registry import DATASETS

__all__ = ["PHOTOS", "SHORT_SIDE", "STRIDE", "lfw_faces", "make_photo_patches", "photo_patches"]

#: The colour photographs cut into ``photo-patches`` (all bundled with scikit-image).
PHOTOS = (
    "astronaut",
    "coffee",
    "chelsea",
    "rocket",
    "hubble_deep_field",
    "immunohistochemistry",
)
#: The shorter side of each photograph after scaling, in pixels.
SHORT_SIDE = 192
#: The patches' side and the grid's stride.
PATCH, STRIDE = 32, 4
#: The fraction of each photograph's columns (from the left) that the training patches use.
TRAIN_COLUMNS = 0.75
_VERSION = "v1"
_FACES_TRAIN = 80


def _scaled(name: str) -> torch.Tensor:
    from skimage.transform import resize

    img = bundled_image(name)  # (3, H, W) in [0, 1]
    h, w = img.shape[1:]
    f = SHORT_SIDE / min(h, w)
    size = (round(h * f), round(w * f))
    out = resize(img.numpy().transpose(1, 2, 0), size, order=1, anti_aliasing=True)
    return torch.from_numpy(np.ascontiguousarray(out.transpose(2, 0, 1))).float().clamp_(0, 1)


def _grid(region: torch.Tensor) -> torch.Tensor:
    """Every ``PATCH`` x ``PATCH`` patch of ``region (3, H, W)`` on the stride grid."""
    p = region.unfold(1, PATCH, STRIDE).unfold(2, PATCH, STRIDE)  # (3, nh, nw, P, P)
    return p.permute(1, 2, 0, 3, 4).reshape(-1, region.shape[0], PATCH, PATCH)


def make_photo_patches(split: str) -> dict[str, torch.Tensor]:
    """The ``photo-patches`` split as ``{"x": uint8 (N, 3, 32, 32), "y": int64 (N,)}``."""
    xs, ys = [], []
    for label, name in enumerate(PHOTOS):
        img = _scaled(name)
        cut = int(img.shape[2] * TRAIN_COLUMNS)
        region = img[:, :, :cut] if split == "train" else img[:, :, cut:]
        patches = _grid(region)
        xs.append(patches)
        ys.append(torch.full((len(patches),), label, dtype=torch.int64))
    x = torch.cat(xs).mul_(255).round_().to(torch.uint8)
    return {"x": x, "y": torch.cat(ys)}


def _dataset(name: str, split: str, build, classes) -> ArrayDataset:
    t = cached_tensors(f"{name}-{split}-{_VERSION}", lambda: build(split))

    def stats() -> dict[str, torch.Tensor]:
        train = cached_tensors(f"{name}-train-{_VERSION}", lambda: build("train"))["x"]
        mean, std = channel_stats(train.float().div(255))
        return {
            "mean": torch.tensor(mean, dtype=torch.float64),
            "std": torch.tensor(std, dtype=torch.float64),
        }

    st = cached_tensors(f"{name}-stats-{_VERSION}", stats)
    x = t["x"].float().div_(255)
    mean, std = st["mean"].tolist(), st["std"].tolist()
    return ArrayDataset(x, t["y"], list(classes), mean, std, name=name)


@DATASETS.register(
    "photo-patches",
    "3x32x32 patches of six scikit-image photographs; train and test from disjoint regions",
    shape=(3, PATCH, PATCH),
    num_classes=len(PHOTOS),
    source="built-in",
)
def photo_patches(
    split: str = "train", root: str | os.PathLike[str] | None = None, download: bool = False
) -> ArrayDataset:
    """``photo-patches`` (module docstring): 9,553 train / 2,009 test patches; classes
    :data:`PHOTOS`. ``root`` and ``download`` are ignored."""
    check_split("photo-patches", split)
    return _dataset("photo-patches", split, make_photo_patches, PHOTOS)


def _make_faces(split: str) -> dict[str, torch.Tensor]:
    import skimage.data

    faces = torch.from_numpy(np.asarray(skimage.data.lfw_subset()[:100], dtype=np.float32))
    faces = faces[:, None, :24, :24]
    faces = faces[:_FACES_TRAIN] if split == "train" else faces[_FACES_TRAIN:]
    x = faces.clamp(0, 1).mul_(255).round_().to(torch.uint8)
    return {"x": x, "y": torch.zeros(len(x), dtype=torch.int64)}


@DATASETS.register(
    "lfw-faces",
    "scikit-image's 100 LFW face crops, 1x24x24 grey; 80 train / 20 test (one class)",
    shape=(1, 24, 24),
    num_classes=1,
    source="built-in",
)
def lfw_faces(
    split: str = "train", root: str | os.PathLike[str] | None = None, download: bool = False
) -> ArrayDataset:
    """``lfw-faces`` (module docstring). ``root`` and ``download`` are ignored."""
    check_split("lfw-faces", split)
    return _dataset("lfw-faces", split, _make_faces, ("face",))
