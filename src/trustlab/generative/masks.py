"""Inpainting masks: where the pixels are missing, as seeded ``(N, 1, H, W)`` float tensors.

A mask is 1 inside the hole (the pixels to restore) and 0 elsewhere. Three kinds, as GAN
inpainting papers of the time train and test with (Iizuka et al., "Globally and Locally
Consistent Image Completion", SIGGRAPH 2017; Yu et al., "Free-Form Image Inpainting with Gated
Convolution", ICCV 2019):

- :func:`centre_mask`: one centred square covering ``fraction`` of the image.
- :func:`random_rectangles`: ``count`` axis-aligned rectangles per image, each side a random
  fraction of the image's side in ``[min_side, max_side]``, anywhere in the image.
- :func:`free_form`: brush strokes, each a polyline of ``vertices`` random segments (random
  angles and lengths) drawn with a random brush width, as the free-form masks of Yu et al.

Every draw comes from one ``torch.Generator`` seeded with ``seed``: the same arguments give the
same masks. :func:`make_masks` dispatches on a kind's name.

Example:
    >>> m = centre_mask(2, (16, 16), fraction=0.25)
    >>> m.shape, m.mean().item()
    (torch.Size([2, 1, 16, 16]), 0.25)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from trustlab.errors import InputError
from trustlab.utils.validate import check_float, check_int

KINDS = ("centre", "rectangles", "free-form")


def _size(size: int | tuple[int, int]) -> tuple[int, int]:
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    return check_int("height", h, 4), check_int("width", w, 4)


def _grid(n: int, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    ys = torch.arange(h, dtype=torch.float32).view(1, h, 1).expand(n, h, w)
    xs = torch.arange(w, dtype=torch.float32).view(1, 1, w).expand(n, h, w)
    return ys, xs


def centre_mask(n: int, size: int | tuple[int, int], fraction: float = 0.25) -> torch.Tensor:
    """A centred square (rectangle of the image's aspect) hole of ``fraction`` of the area
    (rounded to whole pixels); the same for every image."""
    n = check_int("n", n, 1)
    h, w = _size(size)
    fraction = check_float("fraction", fraction, 0.0, 1.0)
    side = math.sqrt(fraction)
    mh, mw = max(1, round(h * side)), max(1, round(w * side))
    top, left = (h - mh) // 2, (w - mw) // 2
    mask = torch.zeros(n, 1, h, w)
    mask[:, :, top : top + mh, left : left + mw] = 1.0
    return mask


def random_rectangles(
    n: int,
    size: int | tuple[int, int],
    seed: int,
    count: int = 1,
    min_side: float = 0.25,
    max_side: float = 0.5,
) -> torch.Tensor:
    """``count`` random rectangles per image; sides uniform in ``[min_side, max_side]`` of the
    image's sides, positions uniform over the image (vectorised over the batch)."""
    n, count = check_int("n", n, 1), check_int("count", count, 1)
    h, w = _size(size)
    lo = check_float("min_side", min_side, 0.0, 1.0)
    hi = check_float("max_side", max_side, lo, 1.0)
    gen = torch.Generator().manual_seed(check_int("seed", seed, 0))
    u = torch.rand(4, n, count, generator=gen)
    mh = (lo + (hi - lo) * u[0]) * h
    mw = (lo + (hi - lo) * u[1]) * w
    mh, mw = mh.round().clamp(1, h), mw.round().clamp(1, w)
    top = (u[2] * (h - mh + 1)).floor()
    left = (u[3] * (w - mw + 1)).floor()
    ys, xs = _grid(n, h, w)
    inside = (
        (ys[:, None] >= top[..., None, None])
        & (ys[:, None] < (top + mh)[..., None, None])
        & (xs[:, None] >= left[..., None, None])
        & (xs[:, None] < (left + mw)[..., None, None])
    )  # (n, count, h, w)
    return inside.any(1, keepdim=True).float()


def free_form(
    n: int,
    size: int | tuple[int, int],
    seed: int,
    strokes: int = 4,
    vertices: int = 5,
    max_width: float = 0.1,
    max_length: float = 0.3,
) -> torch.Tensor:
    """Free-form brush strokes: per image ``strokes`` polylines of ``vertices`` segments, each
    segment of random angle and of length up to ``max_length`` of the larger side, drawn with a
    brush of random width up to ``max_width`` of the larger side (round caps). Vectorised over
    the batch, one segment at a time (a pixel is in the hole when it is within half the brush
    width of a segment)."""
    n = check_int("n", n, 1)
    strokes, vertices = check_int("strokes", strokes, 1), check_int("vertices", vertices, 1)
    h, w = _size(size)
    max_width = check_float("max_width", max_width, 0.0, 1.0)
    max_length = check_float("max_length", max_length, 0.0, 1.0)
    side = float(max(h, w))
    gen = torch.Generator().manual_seed(check_int("seed", seed, 0))
    start = torch.rand(n, strokes, 2, generator=gen) * torch.tensor([h - 1.0, w - 1.0])
    angle = torch.rand(n, strokes, vertices, generator=gen) * (2 * math.pi)
    length = torch.rand(n, strokes, vertices, generator=gen) * max_length * side
    width = 1.0 + torch.rand(n, strokes, generator=gen) * max(0.0, max_width * side - 1.0)
    steps = torch.stack([torch.sin(angle), torch.cos(angle)], -1) * length[..., None]
    points = torch.cat([start[:, :, None], start[:, :, None] + steps.cumsum(2)], 2)
    points = torch.minimum(points.clamp_min(0), torch.tensor([h - 1.0, w - 1.0]))
    ys, xs = _grid(n, h, w)
    p = torch.stack([ys, xs], -1)  # (n, h, w, 2)
    hole = torch.zeros(n, h, w, dtype=torch.bool)
    radius = (width / 2)[:, :, None, None]  # (n, strokes, 1, 1)
    # one segment of every image at a time: memory (n, h, w), whatever the image size
    for s in range(strokes):
        for v in range(vertices):
            a = points[:, s, v][:, None, None]  # (n, 1, 1, 2)
            ab = points[:, s, v + 1][:, None, None] - a
            t = (((p - a) * ab).sum(-1) / (ab * ab).sum(-1).clamp_min(1e-9)).clamp(0, 1)
            dist = (p - (a + t[..., None] * ab)).norm(dim=-1)
            hole |= dist <= radius[:, s]
    return hole[:, None].float()


MASKS: dict[str, Callable[..., torch.Tensor]] = {
    "centre": lambda n, size, seed, **kw: centre_mask(n, size, **kw),
    "rectangles": random_rectangles,
    "free-form": free_form,
}


def make_masks(
    kind: str, n: int, size: int | tuple[int, int], seed: int, **kw: Any
) -> torch.Tensor:
    """``n`` masks of ``kind`` (``"centre"``, ``"rectangles"`` or ``"free-form"``); ``kw`` go to
    the kind's function."""
    if kind not in MASKS:
        raise InputError(f"unknown mask kind {kind!r}; use one of {', '.join(KINDS)}.")
    return MASKS[kind](n, size, seed, **kw)


__all__ = ["KINDS", "MASKS", "centre_mask", "free_form", "make_masks", "random_rectangles"]
