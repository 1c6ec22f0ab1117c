"""Built-in offline datasets: ``digits``, ``shapes10``, ``fundus2`` and ``moving-shapes``.

Every set is built from sources bundled with scikit-learn and scikit-image (nothing is
downloaded), seeded with a fixed per-dataset seed so that it is the same benchmark on every
machine, generated vectorised over the batch, and cached per ``(name, split, version)`` with
:func:`trustlab.data.datasets.cached_tensors`. Generated images are stored as ``uint8`` and returned
as ``float32`` in ``[0, 1]``; ``mean``/``std`` are the per-channel statistics of the *train* split
for both splits.

- ``digits``: the UCI optical-recognition digits bundled with scikit-learn (Alpaydin & Kaynak
  1998; 1,797 8x8 images, values 0..16) upsampled bilinearly to 1x16x16; a fixed stratified
  80/20 split.
- ``shapes10``: 3x32x32 images of ten outline-distinct shapes (random position, size, rotation,
  colour) on textures cropped from scikit-image's bundled photographs; 10,000 train / 2,000 test.
  Colour and texture are independent of the class, so only the outline tells the class: a
  logistic regression on raw pixels stays at chance (~10%) while a CIFAR ResNet-20 reaches
  ~95-98% in 5 epochs.
  Each image's background photograph is recorded (``.texture``, an index into
  :data:`TEXTURE_SOURCES`): a natural attribute for semantic backdoors and covert tasks.
- ``fundus2``: 3x32x32 patches of scikit-image's bundled fundus photograph
  (``skimage.data.retina``, from Häggström, "Medical gallery of Mikael Häggström 2014",
  WikiJournal of Medicine 1(2), doi:10.15347/wjm/2014.008, CC0); class 1 carries 1-3 synthetic
  microaneurysm-like lesions (small dark-red round spots, Gaussian profile); class-independent
  grey shadows defeat intensity thresholds. Train and test patches come from disjoint blocks of
  the image; 4,000 train / 1,000 test, balanced.
- ``moving-shapes``: clips ``(3, 8, 32, 32)`` of a shape moving on a toroidal (wrap-around) frame
  over a static texture; 12 classes ``shape-direction`` (after Moving MNIST, Srivastava et al.,
  ICML 2015). Every frame's shape position is uniform over the frame whatever the direction, so
  the class needs time; 2,400 train / 600 test.

Shapes are drawn from signed distance functions (Quilez, "2D distance functions",
iquilezles.org) with a one-pixel anti-aliased edge. :func:`bundled_image` and
:func:`render_shapes` are public for reuse (backdoor triggers, reflection sources).
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from trustlab.data.datasets import ArrayDataset, cached_tensors, channel_stats, check_split
from trustlab.errors import InputError
from trustlab.registry import DATASETS

__all__ = [
    "BUNDLED_IMAGES",
    "DIRECTIONS",
    "MOVING_CLASSES",
    "MOVING_SHAPES",
    "SHAPES",
    "TEXTURE_SOURCES",
    "bundled_image",
    "make_digits",
    "make_fundus2",
    "make_moving_shapes",
    "make_shapes10",
    "render_shapes",
]

#: Bump a dataset's version whenever its generator changes: it is part of the cache key.
#: shapes10 v2: the cache also holds each image's texture source (the images are those of v1).
VERSIONS = {"digits": "v1", "shapes10": "v2", "fundus2": "v1", "moving-shapes": "v1"}
#: Fixed per-dataset seeds: the built-in sets are fixed benchmarks.
SEEDS = {
    "digits": 20_240_601,
    "shapes10": 31_415_926,
    "fundus2": 27_182_818,
    "moving-shapes": 16_180_339,
}
SIZES = {
    "shapes10": {"train": 10_000, "test": 2_000},
    "fundus2": {"train": 4_000, "test": 1_000},
    "moving-shapes": {"train": 2_400, "test": 600},
}

#: scikit-image photographs that ship inside the wheel (no pooch download needed).
BUNDLED_IMAGES = (
    "astronaut",
    "brick",
    "camera",
    "cat",
    "cell",
    "chelsea",
    "clock",
    "coffee",
    "coins",
    "colorwheel",
    "grass",
    "gravel",
    "horse",
    "hubble_deep_field",
    "immunohistochemistry",
    "logo",
    "microaneurysms",
    "moon",
    "page",
    "retina",
    "rocket",
    "text",
)
#: Photographs whose crops make the backgrounds of ``shapes10`` and ``moving-shapes``.
TEXTURE_SOURCES = (
    "astronaut",
    "coffee",
    "chelsea",
    "rocket",
    "hubble_deep_field",
    "brick",
    "grass",
    "gravel",
    "camera",
    "moon",
    "immunohistochemistry",
    "coins",
    "cell",
)

SHAPES = (
    "circle",
    "square",
    "triangle",
    "star",
    "cross",
    "ring",
    "crescent",
    "heart",
    "arrow",
    "ellipse",
)
MOVING_SHAPES = ("circle", "square", "triangle")
#: Unit steps in image coordinates (x to the right, y downwards).
DIRECTIONS = {"right": (1.0, 0.0), "left": (-1.0, 0.0), "up": (0.0, -1.0), "down": (0.0, 1.0)}


# --------------------------------------------------------------------------------------------
# bundled photographs
# --------------------------------------------------------------------------------------------


def _bundled_array(name: str) -> np.ndarray:
    import skimage.data

    img = np.asarray(getattr(skimage.data, name)())
    if img.dtype == bool:
        img = img.astype(np.float32)
    elif img.dtype == np.uint8:
        img = img.astype(np.float32) / 255.0
    else:
        img = img.astype(np.float32)
        img = (img - img.min()) / max(float(img.max() - img.min()), 1e-12)
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    img = img[:, :, :3]
    return np.ascontiguousarray(img.transpose(2, 0, 1))


def bundled_image(name: str) -> torch.Tensor:
    """A photograph bundled with scikit-image as a float tensor ``(3, H, W)`` in ``[0, 1]``.

    Grey images are repeated over three channels and an alpha channel is dropped. Nothing is
    downloaded: only the images in :data:`BUNDLED_IMAGES` (shipped inside the scikit-image wheel)
    are offered. Each call reads the file again and returns a fresh tensor.
    """
    key = str(name).lower()
    if key not in BUNDLED_IMAGES:
        raise InputError(
            f"unknown bundled image {name!r}; use one of {', '.join(BUNDLED_IMAGES)} "
            "(the photographs shipped with scikit-image)."
        )
    return torch.from_numpy(_bundled_array(key))


# --------------------------------------------------------------------------------------------
# shape rendering
# --------------------------------------------------------------------------------------------


def _regular(k: int, radius: float, phase: float = -math.pi / 2) -> list[tuple[float, float]]:
    t = phase + 2 * math.pi * np.arange(k) / k
    return [(radius * math.cos(a), radius * math.sin(a)) for a in t]


def _star(points: int, outer: float, inner: float) -> list[tuple[float, float]]:
    t = -math.pi / 2 + math.pi * np.arange(2 * points) / points
    r = np.where(np.arange(2 * points) % 2 == 0, outer, inner)
    return [(float(ri * math.cos(a)), float(ri * math.sin(a))) for ri, a in zip(r, t, strict=True)]


def _heart(k: int = 24) -> list[tuple[float, float]]:
    t = np.linspace(0, 2 * math.pi, k, endpoint=False)
    x = 16 * np.sin(t) ** 3
    y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
    x, y = x / 17.0, (y + 2.5) / 17.0  # centred, circumradius ~1
    return list(zip(x.tolist(), y.tolist(), strict=True))


# Polygon outlines in units of the shape's circumradius (x right, y down).
_POLYGONS: dict[str, list[tuple[float, float]]] = {
    "square": [(-0.7, -0.7), (0.7, -0.7), (0.7, 0.7), (-0.7, 0.7)],
    "triangle": _regular(3, 1.0),
    "star": _star(5, 1.0, 0.42),
    "cross": [
        (-0.3, -1.0),
        (0.3, -1.0),
        (0.3, -0.3),
        (1.0, -0.3),
        (1.0, 0.3),
        (0.3, 0.3),
        (0.3, 1.0),
        (-0.3, 1.0),
        (-0.3, 0.3),
        (-1.0, 0.3),
        (-1.0, -0.3),
        (-0.3, -0.3),
    ],
    "heart": _heart(),
    "arrow": [
        (-1.0, -0.22),
        (0.2, -0.22),
        (0.2, -0.62),
        (1.0, 0.0),
        (0.2, 0.62),
        (0.2, 0.22),
        (-1.0, 0.22),
    ],
}


def _polygon_sdf(
    px: torch.Tensor, py: torch.Tensor, verts: Sequence[tuple[float, float]]
) -> torch.Tensor:
    """Signed distance to a closed polygon (negative inside); Quilez, "2D distance functions"."""
    d2 = torch.full_like(px, float("inf"))
    inside = torch.zeros_like(px, dtype=torch.bool)
    k = len(verts)
    for i in range(k):
        ax, ay = verts[i]
        bx, by = verts[i - 1]
        ex, ey = bx - ax, by - ay
        wx, wy = px - ax, py - ay
        t = ((wx * ex + wy * ey) / (ex * ex + ey * ey)).clamp(0.0, 1.0)
        d2 = torch.minimum(d2, (wx - ex * t) ** 2 + (wy - ey * t) ** 2)
        c1, c2, c3 = py >= ay, py < by, ex * wy > ey * wx
        inside ^= (c1 & c2 & c3) | (~c1 & ~c2 & ~c3)
    return torch.where(inside, -1.0, 1.0) * d2.sqrt()


def _shape_sdf(shape: str, px: torch.Tensor, py: torch.Tensor) -> torch.Tensor:
    r = torch.sqrt(px * px + py * py)
    if shape == "circle":
        return r - 0.85
    if shape == "ring":
        return (r - 0.68).abs() - 0.24
    if shape == "crescent":
        return torch.maximum(r - 0.9, 0.72 - torch.sqrt((px - 0.45) ** 2 + py * py))
    if shape == "ellipse":  # semi-axes 1 and 0.45; first-order distance k0 (k0 - 1) / k1
        k0 = torch.sqrt(px**2 + (py / 0.45) ** 2)
        k1 = torch.sqrt(px**2 + (py / 0.45**2) ** 2).clamp_min(1e-6)
        return k0 * (k0 - 1) / k1
    return _polygon_sdf(px, py, _POLYGONS[shape])


def render_shapes(
    shapes: Sequence[str] | torch.Tensor,
    centers: torch.Tensor,
    radii: torch.Tensor,
    angles: torch.Tensor,
    size: int | tuple[int, int] = 32,
    wrap: bool = False,
) -> torch.Tensor:
    """Anti-aliased coverage masks of shapes, ``(N, H, W)`` in ``[0, 1]``.

    Args:
        shapes: ``N`` names from :data:`SHAPES`, or ``N`` integer indices into it.
        centers: ``(N, 2)`` centres ``(x, y)`` in pixels (pixel ``j`` spans ``[j, j + 1)``).
        radii: ``(N,)`` circumradii in pixels.
        angles: ``(N,)`` rotations in radians (clockwise on screen, as y points down).
        size: output side ``H = W`` or ``(H, W)``; default 32.
        wrap: measure positions on a torus (a shape leaving one edge re-enters at the other).

    Edges are one pixel wide ramps of the signed distance field (``clamp(0.5 - d, 0, 1)``), so the
    masks are smooth in all parameters. Computed on the device of ``centers``.
    """
    h, w = (size, size) if isinstance(size, int) else size
    if isinstance(shapes, torch.Tensor):
        idx = shapes.to(device="cpu", dtype=torch.long)
    else:
        unknown = sorted({s for s in shapes if s not in SHAPES})
        if unknown:
            raise InputError(f"unknown shape(s) {unknown}; use names from {SHAPES}.")
        idx = torch.tensor([SHAPES.index(s) for s in shapes], dtype=torch.long)
    n = idx.shape[0]
    if centers.shape != (n, 2) or radii.shape != (n,) or angles.shape != (n,):
        raise InputError(
            f"render_shapes: got {n} shapes, centers {tuple(centers.shape)}, radii "
            f"{tuple(radii.shape)}, angles {tuple(angles.shape)}; expected (N, 2), (N,), (N,)."
        )
    if n and (int(idx.min()) < 0 or int(idx.max()) >= len(SHAPES)):
        raise InputError(f"shape indices must lie in [0, {len(SHAPES) - 1}].")
    dev = centers.device
    centers, radii, angles = centers.float(), radii.float().to(dev), angles.float().to(dev)
    gx = (torch.arange(w, device=dev, dtype=torch.float32) + 0.5).view(1, 1, w)
    gy = (torch.arange(h, device=dev, dtype=torch.float32) + 0.5).view(1, h, 1)
    out = torch.zeros(n, h, w, device=dev)
    for k in torch.unique(idx).tolist():
        sel = (idx == k).nonzero().squeeze(1).to(dev)
        dx = gx - centers[sel, 0].view(-1, 1, 1)
        dy = gy - centers[sel, 1].view(-1, 1, 1)
        if wrap:
            dx = torch.remainder(dx + w / 2, w) - w / 2
            dy = torch.remainder(dy + h / 2, h) - h / 2
        rad = radii[sel].view(-1, 1, 1)
        cos, sin = torch.cos(angles[sel]).view(-1, 1, 1), torch.sin(angles[sel]).view(-1, 1, 1)
        px = (cos * dx + sin * dy) / rad  # rotate the frame by -angle, then scale to unit size
        py = (-sin * dx + cos * dy) / rad
        sdf = _shape_sdf(SHAPES[k], px.expand(-1, h, w), py.expand(-1, h, w)) * rad
        out[sel] = (0.5 - sdf).clamp(0.0, 1.0)
    return out


# --------------------------------------------------------------------------------------------
# shared generator pieces
# --------------------------------------------------------------------------------------------


def _texture_pool(sources: Sequence[str] = TEXTURE_SOURCES) -> list[torch.Tensor]:
    """The texture sources as ``(1, 3, H, W)`` tensors."""
    return [bundled_image(name)[None] for name in sources]


def _texture_crops(
    rng: np.random.Generator, n: int, size: int, pool: list[torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` random ``size x size`` crops of the texture photographs, ``(n, 3, size, size)``, and
    the index into ``pool`` of each crop's source, int64 ``(n,)``.

    Each crop takes a random source, zoom (0.75 to 3 source pixels per output pixel, log-uniform),
    position and horizontal / vertical flips, sampled bilinearly (one ``grid_sample`` per source).
    A quarter of the crops are turned grey and the channels of the others are randomly permuted,
    so that colour carries no information about the source.
    """
    src = torch.from_numpy(rng.integers(0, len(pool), n))
    step = torch.from_numpy(np.exp(rng.uniform(math.log(0.75), math.log(3.0), n))).float()
    span = step * (size - 1) + 2
    hs = torch.tensor([im.shape[2] for im in pool], dtype=torch.float32)[src]
    ws = torch.tensor([im.shape[3] for im in pool], dtype=torch.float32)[src]
    x0 = torch.from_numpy(rng.uniform(0, 1, n)).float() * (ws - span)
    y0 = torch.from_numpy(rng.uniform(0, 1, n)).float() * (hs - span)
    flips = torch.from_numpy(rng.integers(0, 2, (n, 2))).bool()
    grey = torch.from_numpy(rng.uniform(0, 1, n) < 0.25)
    perm = torch.from_numpy(np.argsort(rng.uniform(0, 1, (n, 3)), axis=1))
    j = torch.arange(size, dtype=torch.float32)
    jx = torch.where(flips[:, :1], size - 1 - j, j)
    jy = torch.where(flips[:, 1:], size - 1 - j, j)
    # source pixel coordinates (pixel i has its centre at i) -> grid_sample's [-1, 1]
    gx = (2 * (x0[:, None] + step[:, None] * jx) + 1) / ws[:, None] - 1  # (n, size)
    gy = (2 * (y0[:, None] + step[:, None] * jy) + 1) / hs[:, None] - 1
    grid = torch.stack(torch.broadcast_tensors(gx[:, None, :], gy[:, :, None]), dim=-1)
    out = torch.empty(n, 3, size, size)
    for k, image in enumerate(pool):
        sel = (src == k).nonzero().squeeze(1)
        if len(sel):
            g = grid[sel].reshape(1, len(sel) * size, size, 2)
            crops = F.grid_sample(image, g, mode="bilinear", align_corners=False)
            out[sel] = crops.view(3, len(sel), size, size).transpose(0, 1)
    mix = torch.eye(3)[perm]  # (n, 3, 3): a channel permutation, or averaging for grey
    mix[grey] = 1.0 / 3.0
    crops = torch.bmm(mix, out.view(n, 3, size * size)).view(n, 3, size, size)
    return crops, src.long()


_LUMA = torch.tensor([0.299, 0.587, 0.114])


def _contrasting_colours(
    rng: np.random.Generator, background: torch.Tensor, lo: float, hi: float
) -> torch.Tensor:
    """Random RGB colours ``(n, 3)`` whose luma differs from each background's mean luma by
    ``lo..hi`` (darker or lighter at random, whichever fits in ``[0, 1]``)."""
    n = background.shape[0]
    bg_luma = (background.mean(dim=tuple(range(2, background.dim()))) * _LUMA).sum(1)
    gap = torch.from_numpy(rng.uniform(lo, hi, n)).float()
    up = torch.from_numpy(rng.uniform(0, 1, n) < 0.5)
    up = torch.where(bg_luma + gap > 1.0, torch.zeros_like(up), up)
    up = torch.where(bg_luma - gap < 0.0, torch.ones_like(up), up)
    target = torch.where(up, bg_luma + gap, bg_luma - gap).clamp(0.0, 1.0)
    colour = torch.from_numpy(rng.uniform(0, 1, (n, 3))).float()
    for _ in range(4):  # shift towards the target luma; clipping may need a few rounds
        colour = (colour + (target - (colour * _LUMA).sum(1))[:, None]).clamp(0.0, 1.0)
    return colour


def _to_uint8(x: torch.Tensor) -> torch.Tensor:
    return x.clamp(0.0, 1.0).mul_(255.0).round_().to(torch.uint8)


def _balanced_labels(rng: np.random.Generator, n: int, k: int) -> torch.Tensor:
    return torch.from_numpy(rng.permutation(np.arange(n) % k)).long()


# --------------------------------------------------------------------------------------------
# generators (pure functions of n and seed)
# --------------------------------------------------------------------------------------------


def make_digits(seed: int = SEEDS["digits"], test_fraction: float = 0.2) -> dict[str, torch.Tensor]:
    """scikit-learn's bundled 8x8 digits upsampled (bilinear) to ``(N, 1, 16, 16)`` in ``[0, 1]``.

    Returns ``x_train, y_train, x_test, y_test``; the split is stratified with ``seed``
    (``test_fraction`` 0.2 gives 1,437 train / 360 test).
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    x = torch.from_numpy(bunch.images.astype(np.float32) / 16.0)[:, None]
    x = F.interpolate(x, size=(16, 16), mode="bilinear", align_corners=False).clamp(0.0, 1.0)
    y = torch.from_numpy(bunch.target.astype(np.int64))
    idx_train, idx_test = train_test_split(
        np.arange(len(y)), test_size=test_fraction, stratify=bunch.target, random_state=seed
    )
    idx_train, idx_test = np.sort(idx_train), np.sort(idx_test)
    return {
        "x_train": x[idx_train].contiguous(),
        "y_train": y[idx_train],
        "x_test": x[idx_test].contiguous(),
        "y_test": y[idx_test],
    }


def make_shapes10(
    n: int, seed: int, sources: Sequence[str] | None = None
) -> dict[str, torch.Tensor]:
    """``n`` balanced ``shapes10`` images: ``x`` uint8 ``(n, 3, 32, 32)``, ``y`` int64 ``(n,)``,
    and ``texture`` int64 ``(n,)``: the index into :data:`TEXTURE_SOURCES` of the photograph the
    image's background was cropped from (a natural attribute, e.g. for semantic backdoors).

    Per image: a shape from :data:`SHAPES` with circumradius 7-12 px, centre anywhere that keeps
    most of it in frame, rotation uniform in ``[0, 2 pi)``, a random colour whose luma differs from
    the background's by 0.2-0.6, and a faint texture of its own; the background is a random
    texture crop with its contrast scaled by 0.4-1; Gaussian pixel noise of std 0-0.04.
    ``sources`` (default: all of :data:`TEXTURE_SOURCES`) restricts the backgrounds to some of
    those photographs; the default draws exactly the random numbers it always drew.
    """
    names = TEXTURE_SOURCES if sources is None else tuple(sources)
    unknown = sorted(set(names) - set(TEXTURE_SOURCES))
    if unknown or not names:
        raise InputError(
            f"unknown texture source(s) {unknown or names}; use names from {TEXTURE_SOURCES}."
        )
    rng = np.random.default_rng(seed)
    size = 32
    y = _balanced_labels(rng, n, len(SHAPES))
    radii = torch.from_numpy(rng.uniform(7.0, 12.0, n)).float()
    lo = 0.8 * radii
    cx = lo + torch.from_numpy(rng.uniform(0, 1, n)).float() * (size - 2 * lo)
    cy = lo + torch.from_numpy(rng.uniform(0, 1, n)).float() * (size - 2 * lo)
    angles = torch.from_numpy(rng.uniform(0, 2 * math.pi, n)).float()
    alpha = render_shapes(y, torch.stack([cx, cy], 1), radii, angles, size)[:, None]

    bg, src = _texture_crops(rng, n, size, _texture_pool(names))
    texture = torch.tensor([TEXTURE_SOURCES.index(name) for name in names])[src]
    mean = bg.mean(dim=(1, 2, 3), keepdim=True)
    bg = mean + torch.from_numpy(rng.uniform(0.4, 1.0, (n, 1, 1, 1))).float() * (bg - mean)
    colour = _contrasting_colours(rng, bg, 0.2, 0.6)[:, :, None, None]
    fill = colour + 0.15 * (bg.flip(2, 3) - mean)  # a faint texture of its own
    x = (fill - bg).mul_(alpha).add_(bg)
    sigma = torch.from_numpy(rng.uniform(0.0, 0.04, (n, 1, 1, 1))).float()
    x += torch.from_numpy(rng.standard_normal((n, 3, size, size), dtype=np.float32)).mul_(sigma)
    return {"x": _to_uint8(x), "y": y, "texture": texture}


@functools.lru_cache(maxsize=1)
def _fundus_source() -> tuple[torch.Tensor, torch.Tensor]:
    """The retina photograph at half resolution ``(3, 705, 705)`` and a boolean ``(H-31, W-31)``
    map of the top-left corners whose 32x32 patch lies inside the fundus disc."""
    img = F.avg_pool2d(bundled_image("retina")[None], 2)[0]
    lit = img.mean(0) > 0.08
    ys, xs = lit.nonzero(as_tuple=True)
    cy, cx = ys.float().mean(), xs.float().mean()
    radius = math.sqrt(float(lit.sum()) / math.pi) - 4.0  # a circle: drops the notch, the rim
    h, w = lit.shape
    yy, xx = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
    disc = ((yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2) & lit
    inside = -F.max_pool2d(-disc.float()[None, None], 32, stride=1)[0, 0] > 0.5
    return img, inside


_FUNDUS_BLOCK = 96


def _fundus_corners(split: str) -> torch.Tensor:
    """Flat indices of allowed patch corners for ``split``: the image is cut into 96x96 blocks, a
    patch lies entirely inside one block, and every block with both block indices even is test;
    train and test patches therefore never share a pixel."""
    img, inside = _fundus_source()
    hh, ww = inside.shape
    yy, xx = torch.meshgrid(torch.arange(hh), torch.arange(ww), indexing="ij")
    b = _FUNDUS_BLOCK
    within = (yy % b <= b - 32) & (xx % b <= b - 32)
    test = ((yy // b) % 2 == 0) & ((xx // b) % 2 == 0)
    ok = inside & within & (test if split == "test" else ~test)
    return ok.flatten().nonzero().squeeze(1)


def make_fundus2(n: int, seed: int, split: str = "train") -> dict[str, torch.Tensor]:
    """``n`` balanced ``fundus2`` patches of ``split``'s region: ``x`` uint8 ``(n, 3, 32, 32)``.

    Patches are cut from the half-resolution retina photograph at random corners of the split's
    region (:func:`_fundus_corners`), randomly rotated/flipped (8 symmetries), with brightness
    x0.85-1.15, per-channel gain x0.95-1.05 and Gaussian noise std 0.01. Class 1 gets 1-3 lesions:
    each multiplies the pixels by ``1 - a * w_c * exp(-(d / r)^2)`` with radius ``r`` in 1-3 px,
    contrast ``a`` in 0.25-0.7 and channel weights ``w = (0.55, 1.0, 0.9)`` (a dark-red spot),
    centred 4-28 px from the patch corner. Independently of the class, half of all patches get a
    neutral-grey soft shadow (radius 4-8 px, contrast 0.15-0.4, centre anywhere), so that "has a
    dark spot" alone does not tell the class: the best single threshold on a patch's darkest
    (blurred) value scores ~71% on the test split, a small CNN ~95%.
    """
    check_split("fundus2", split)
    rng = np.random.default_rng(seed)
    img, inside = _fundus_source()
    ww = inside.shape[1]
    width = img.shape[2]
    corners = _fundus_corners(split)
    pick = corners[torch.from_numpy(rng.integers(0, len(corners), n))]
    y0, x0 = pick // ww, pick % ww
    j = torch.arange(32)
    sym = torch.from_numpy(rng.integers(0, 2, (n, 3))).bool()
    gi, gj = torch.meshgrid(j, j, indexing="ij")
    gi, gj = gi.expand(n, 32, 32), gj.expand(n, 32, 32)
    gi = torch.where(sym[:, 0, None, None], 31 - gi, gi)
    gj = torch.where(sym[:, 1, None, None], 31 - gj, gj)
    gi, gj = (
        torch.where(sym[:, 2, None, None], gj, gi),
        torch.where(sym[:, 2, None, None], gi, gj),
    )
    flat_idx = (y0[:, None, None] + gi) * width + (x0[:, None, None] + gj)
    x = img.reshape(3, -1)[:, flat_idx].permute(1, 0, 2, 3).contiguous()  # (n, 3, 32, 32)

    y = _balanced_labels(rng, n, 2)
    count = torch.from_numpy(rng.integers(1, 4, n))
    centre = torch.from_numpy(rng.uniform(4.0, 28.0, (n, 3, 2))).float()
    rad = torch.from_numpy(rng.uniform(1.0, 3.0, (n, 3))).float()
    contrast = torch.from_numpy(rng.uniform(0.25, 0.7, (n, 3))).float()
    weights = torch.tensor([0.55, 1.0, 0.9]).view(1, 3, 1, 1)
    pix = torch.arange(32, dtype=torch.float32) + 0.5
    for k in range(3):
        active = (y == 1) & (count > k)
        d2 = (pix.view(1, 1, 32) - centre[:, k, 0].view(-1, 1, 1)) ** 2 + (
            pix.view(1, 32, 1) - centre[:, k, 1].view(-1, 1, 1)
        ) ** 2
        spot = torch.exp(-d2 / rad[:, k].view(-1, 1, 1) ** 2)
        a = torch.where(active, contrast[:, k], torch.zeros(()))
        x = x * (1 - a.view(-1, 1, 1, 1) * weights * spot[:, None])

    # class-independent distractor: a larger, neutral-grey soft shadow in half of all patches
    shadow = torch.from_numpy(rng.uniform(0, 1, n) < 0.5)
    s_centre = torch.from_numpy(rng.uniform(0.0, 32.0, (n, 2))).float()
    s_rad = torch.from_numpy(rng.uniform(4.0, 8.0, n)).float()
    s_a = torch.where(shadow, torch.from_numpy(rng.uniform(0.15, 0.4, n)).float(), torch.zeros(()))
    d2 = (pix.view(1, 1, 32) - s_centre[:, 0].view(-1, 1, 1)) ** 2 + (
        pix.view(1, 32, 1) - s_centre[:, 1].view(-1, 1, 1)
    ) ** 2
    x = x * (1 - s_a.view(-1, 1, 1, 1) * torch.exp(-d2 / s_rad.view(-1, 1, 1) ** 2)[:, None])

    gain = torch.from_numpy(rng.uniform(0.85, 1.15, (n, 1, 1, 1))).float()
    gain = gain * torch.from_numpy(rng.uniform(0.95, 1.05, (n, 3, 1, 1))).float()
    x = x * gain + 0.01 * torch.from_numpy(rng.standard_normal((n, 3, 32, 32), dtype=np.float32))
    return {"x": _to_uint8(x), "y": y}


def make_moving_shapes(
    n: int, seed: int, frames: int = 8, return_params: bool = False
) -> dict[str, torch.Tensor]:
    """``n`` balanced clips ``x`` uint8 ``(n, 3, frames, 32, 32)``, ``y`` int64 ``(n,)``.

    Label ``y = 4 * shape + direction`` over :data:`MOVING_SHAPES` x :data:`DIRECTIONS`. A shape
    (circumradius 6-9 px, fixed random rotation and contrasting colour) starts at a uniform
    position and moves 2-3.5 px per frame in its direction on a torus (wrapping at the edges)
    over a static texture crop (contrast x0.3-0.8), with fresh Gaussian noise (std 0-0.04) per
    frame. With ``return_params`` the dict also holds ``centers`` ``(n, frames, 2)`` (x, y).
    """
    rng = np.random.default_rng(seed)
    size, nd = 32, len(DIRECTIONS)
    y = _balanced_labels(rng, n, len(MOVING_SHAPES) * nd)
    shape_idx = torch.tensor([SHAPES.index(s) for s in MOVING_SHAPES])[y // nd]
    step = torch.tensor(list(DIRECTIONS.values()))[y % nd]  # (n, 2)
    speed = torch.from_numpy(rng.uniform(2.0, 3.5, n)).float()
    start = torch.from_numpy(rng.uniform(0, size, (n, 2))).float()
    radii = torch.from_numpy(rng.uniform(6.0, 9.0, n)).float()
    angles = torch.from_numpy(rng.uniform(0, 2 * math.pi, n)).float()
    t = torch.arange(frames, dtype=torch.float32).view(1, frames, 1)
    centers = torch.remainder(start[:, None] + t * (speed[:, None] * step)[:, None], size)
    alpha = render_shapes(
        shape_idx.repeat_interleave(frames),
        centers.reshape(-1, 2),
        radii.repeat_interleave(frames),
        angles.repeat_interleave(frames),
        size,
        wrap=True,
    ).view(n, 1, frames, size, size)

    bg, _ = _texture_crops(rng, n, size, _texture_pool())
    mean = bg.mean(dim=(1, 2, 3), keepdim=True)
    bg = mean + torch.from_numpy(rng.uniform(0.3, 0.8, (n, 1, 1, 1))).float() * (bg - mean)
    colour = _contrasting_colours(rng, bg, 0.25, 0.6)
    x = (colour.view(n, 3, 1, 1, 1) - bg[:, :, None]) * alpha
    x += bg[:, :, None]
    sigma = torch.from_numpy(rng.uniform(0.0, 0.04, (n, 1, 1, 1, 1))).float()
    noise = torch.from_numpy(rng.standard_normal((n, 3, frames, size, size), dtype=np.float32))
    x += noise.mul_(sigma)
    out = {"x": _to_uint8(x), "y": y}
    if return_params:
        out["centers"] = centers
    return out


# --------------------------------------------------------------------------------------------
# cached splits and registered factories
# --------------------------------------------------------------------------------------------


def _split_tensors(
    name: str, split: str, build: Callable[[], dict[str, torch.Tensor]]
) -> dict[str, torch.Tensor]:
    return cached_tensors(f"{name}-{split}-{VERSIONS[name]}", build)


def _stats(name: str, train_x: Callable[[], torch.Tensor]) -> tuple[list[float], list[float]]:
    """The train split's :func:`~trustlab.data.datasets.channel_stats`, cached as float64."""

    def build() -> dict[str, torch.Tensor]:
        mean, std = channel_stats(train_x())
        return {
            "mean": torch.tensor(mean, dtype=torch.float64),
            "std": torch.tensor(std, dtype=torch.float64),
        }

    st = cached_tensors(f"{name}-stats-{VERSIONS[name]}", build)
    return st["mean"].tolist(), st["std"].tolist()


def _as_float(x: torch.Tensor) -> torch.Tensor:
    return x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()


def _generated(
    name: str,
    split: str,
    make: Callable[[int, int, str], dict[str, torch.Tensor]],
    classes: Sequence[str],
) -> ArrayDataset:
    """Split ``split`` of a generated set: built by ``make(n, seed, split)`` on a cache miss (the
    test split uses the dataset's seed + 1), with the train split's channel statistics."""
    check_split(name, split)

    def build(which: str) -> Callable[[], dict[str, torch.Tensor]]:
        seed = SEEDS[name] + (0 if which == "train" else 1)
        return lambda: make(SIZES[name][which], seed, which)

    t = _split_tensors(name, split, build(split))
    mean, std = _stats(name, lambda: _split_tensors(name, "train", build("train"))["x"])
    ds = ArrayDataset(_as_float(t["x"]), t["y"], classes, mean, std, name=name)
    for key in sorted(set(t) - {"x", "y"}):  # per-image attributes, e.g. shapes10's texture
        setattr(ds, key, t[key])
    return ds


@DATASETS.register(
    "digits",
    "scikit-learn's 8x8 handwritten digits upsampled to 1x16x16; fixed stratified 80/20 split",
    shape=(1, 16, 16),
    num_classes=10,
    source="built-in",
)
def digits(
    split: str = "train", root: str | os.PathLike[str] | None = None, download: bool = False
) -> ArrayDataset:
    """``digits``: 1,437 train / 360 test images ``(1, 16, 16)``, classes ``"0".."9"``.

    ``root`` and ``download`` are ignored (the data ships with scikit-learn).
    """
    check_split("digits", split)

    def part(which: str) -> dict[str, torch.Tensor]:
        return _split_tensors("digits", which, lambda: _pick(make_digits(SEEDS["digits"]), which))

    t = part(split)
    mean, std = _stats("digits", lambda: part("train")["x"])
    return ArrayDataset(t["x"], t["y"], [str(i) for i in range(10)], mean, std, name="digits")


def _pick(parts: dict[str, torch.Tensor], which: str) -> dict[str, torch.Tensor]:
    return {"x": parts[f"x_{which}"], "y": parts[f"y_{which}"]}


@DATASETS.register(
    "shapes10",
    "ten shape classes on textured photo backgrounds, 3x32x32; 10,000 train / 2,000 test",
    shape=(3, 32, 32),
    num_classes=10,
    source="built-in",
)
def shapes10(
    split: str = "train", root: str | os.PathLike[str] | None = None, download: bool = False
) -> ArrayDataset:
    """``shapes10`` (see :func:`make_shapes10`); classes :data:`SHAPES`. Ignores ``root``.

    ``.texture`` (int64 ``(N,)``) is each image's background source, an index into
    ``.texture_names`` (:data:`TEXTURE_SOURCES`); ``subset`` keeps it aligned.
    """
    ds = _generated("shapes10", split, lambda n, s, _w: make_shapes10(n, s), SHAPES)
    ds.texture_names = TEXTURE_SOURCES
    return ds


@DATASETS.register(
    "fundus2",
    "retina patches, healthy vs synthetic microaneurysms, 3x32x32; 4,000 train / 1,000 test",
    shape=(3, 32, 32),
    num_classes=2,
    source="built-in",
)
def fundus2(
    split: str = "train", root: str | os.PathLike[str] | None = None, download: bool = False
) -> ArrayDataset:
    """``fundus2`` (see :func:`make_fundus2`); classes ``["healthy", "lesion"]``."""
    return _generated("fundus2", split, make_fundus2, ("healthy", "lesion"))


MOVING_CLASSES = tuple(f"{s}-{d}" for s in MOVING_SHAPES for d in DIRECTIONS)


@DATASETS.register(
    "moving-shapes",
    "clips of a shape moving in one of 4 directions, 3x8x32x32; 12 classes; 2,400 / 600",
    shape=(3, 8, 32, 32),
    num_classes=len(MOVING_CLASSES),
    source="built-in",
)
def moving_shapes(
    split: str = "train", root: str | os.PathLike[str] | None = None, download: bool = False
) -> ArrayDataset:
    """``moving-shapes`` (see :func:`make_moving_shapes`); classes like ``"square-right"``."""
    return _generated(
        "moving-shapes", split, lambda n, s, _w: make_moving_shapes(n, s), MOVING_CLASSES
    )
