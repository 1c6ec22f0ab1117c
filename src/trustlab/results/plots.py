"""Small PNG plots without a plotting library (matplotlib is not a dependency): curves drawn on a
white canvas with scikit-image, one colour per curve, written atomically."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

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
) -> dict[str, tuple[int, int, int]]:
    """Draw ``name -> (x, y)`` curves with ``x, y`` in ``[0, 1]`` (e.g. ROC: FPR, TPR) in a
    ``size`` x ``size`` box with a frame (and the chance diagonal). Returns the colour of each
    curve (name -> RGB), for the legend in the accompanying text."""
    from skimage.draw import line

    pad = 8
    img = np.full((size + 2 * pad, size + 2 * pad, 3), 255, np.uint8)

    def px(x: float, y: float) -> tuple[int, int]:
        return pad + round((1 - y) * (size - 1)), pad + round(x * (size - 1))

    def seg(p0: tuple[int, int], p1: tuple[int, int], colour: tuple[int, int, int]) -> None:
        rr, cc = line(*p0, *p1)
        img[rr, cc] = colour

    corners = [px(0, 0), px(1, 0), px(1, 1), px(0, 1), px(0, 0)]
    for a, b in zip(corners, corners[1:], strict=False):
        seg(a, b, (0, 0, 0))
    if diagonal:
        seg(px(0, 0), px(1, 1), (200, 200, 200))
    legend = {}
    for i, (name, (xs, ys)) in enumerate(curves.items()):
        colour = COLOURS[i % len(COLOURS)]
        legend[name] = colour
        pts = [
            px(float(np.clip(x, 0, 1)), float(np.clip(y, 0, 1)))
            for x, y in zip(xs, ys, strict=True)
        ]
        for a, b in zip(pts, pts[1:], strict=False):
            seg(a, b, colour)
    import imageio.v3 as iio

    path = Path(path)
    with atomic_path(path) as tmp:
        iio.imwrite(tmp, img, extension=".png")
    return legend
