"""PNGs of image rows: clean images, adversarial images and their (amplified) differences
(:func:`save_grid`), or any rows of equally sized images (:func:`save_rows`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from trustlab.utils.io import atomic_path


def save_grid(path: str | Path, x: torch.Tensor, adv: torch.Tensor, scale: int = 4) -> Path:
    """Rows: clean, adversarial, ``0.5 + 5 * (adv - clean)``; images upscaled ``scale`` times."""
    diff = (0.5 + 5 * (adv - x)).clamp(0, 1)
    return save_rows(path, [x, adv, diff], scale)


def save_rows(path: str | Path, rows: list[torch.Tensor], scale: int = 4) -> Path:
    """One row per ``(k, C, H, W)`` batch in [0, 1] (grey rows are shown grey next to colour
    ones); images upscaled ``scale`` times."""
    c = max(t.shape[1] for t in rows)
    strips = [torch.cat(list(t.detach().cpu().expand(-1, c, -1, -1)), dim=-1) for t in rows]
    img = torch.cat(strips, dim=-2)  # (C, rows * H, k W)
    if img.shape[0] == 1:
        img = img.expand(3, -1, -1)
    img = img.repeat_interleave(scale, -1).repeat_interleave(scale, -2)
    arr = (img.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    import imageio.v3 as iio

    path = Path(path)
    with atomic_path(path) as tmp:
        iio.imwrite(tmp, arr, extension=".png")
    return path
