"""Small PNG plots without a plotting library (matplotlib is not a dependency): curves drawn on a
white canvas with scikit-image, one colour per curve, written atomically.

:func:`curves_png` draws on linear axes in ``[0, 1]`` or, with ``log_floor``, on log-log axes
from ``log_floor`` to 1 (the log-log ROC of membership inference, where the interesting part is
the low-FPR corner; Carlini et al., S&P 2022)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from trustlab.errors import InputError
from trustlab.utils.io import atomic_path

COLOURS = (
    (31, 119, 180), (214, 39, 40), (44, 160, 44), (255, 127, 14), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (127, 127, 127),
)  # fmt: skip


def curves_png(
    path: str | Path,
    curves: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    size: int = 256,
    diagonal: bool = True,
    log_floor: float | None = None,
) -> dict[str, tuple[int, int, int]]:
    """Draw ``name -> (x, y)`` curves with ``x, y`` in ``[0, 1]`` (e.g. ROC: FPR, TPR) in a
    ``size`` x ``size`` box with a frame (and the chance diagonal). Returns the colour of each
    curve (name -> RGB), for the legend in the accompanying text.

    ``log_floor`` (e.g. ``1e-3``, in ``(0, 1)``) draws both axes on a log scale from
    ``log_floor`` to 1, with a light grid line at every power of ten; values below the floor
    (a ROC's zero FPR) are drawn on the floor. The chance diagonal stays the line ``y = x``."""
    from skimage.draw import line

    if log_floor is not None and not 0 < log_floor < 1:
        raise InputError(f"log_floor must be in (0, 1), e.g. 1e-3; got {log_floor}.")
    pad = 8
    img = np.full((size + 2 * pad, size + 2 * pad, 3), 255, np.uint8)
    decades = -math.log10(log_floor) if log_floor is not None else 1.0

    def scale(v: float) -> float:
        if log_floor is None:
            return float(np.clip(v, 0, 1))
        return (math.log10(min(max(v, log_floor), 1.0)) + decades) / decades

    def px(x: float, y: float) -> tuple[int, int]:
        x, y = scale(x), scale(y)
        return pad + round((1 - y) * (size - 1)), pad + round(x * (size - 1))

    def seg(p0: tuple[int, int], p1: tuple[int, int], colour: tuple[int, int, int]) -> None:
        rr, cc = line(*p0, *p1)
        img[rr, cc] = colour

    if log_floor is not None:  # a light grid line at every power of ten inside the box
        for k in range(1, math.ceil(decades - 1e-9)):
            v = 10.0**-k
            seg(px(v, log_floor), px(v, 1), (230, 230, 230))
            seg(px(log_floor, v), px(1, v), (230, 230, 230))
    corners = [px(0, 0), px(1, 0), px(1, 1), px(0, 1), px(0, 0)]
    for a, b in zip(corners, corners[1:], strict=False):
        seg(a, b, (0, 0, 0))
    if diagonal:
        seg(px(0, 0), px(1, 1), (200, 200, 200))
    legend = {}
    for i, (name, (xs, ys)) in enumerate(curves.items()):
        colour = COLOURS[i % len(COLOURS)]
        legend[name] = colour
        pts = [px(float(x), float(y)) for x, y in zip(xs, ys, strict=True)]
        for a, b in zip(pts, pts[1:], strict=False):
            seg(a, b, colour)
    import imageio.v3 as iio

    path = Path(path)
    with atomic_path(path) as tmp:
        iio.imwrite(tmp, img, extension=".png")
    return legend
