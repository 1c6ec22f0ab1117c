"""A PNG of clean images, adversarial images and their (amplified) differences, row by row."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from trustlab.utils.io import atomic_path


def save_grid(path: str | Path, x: torch.Tensor, adv: torch.Tensor, scale: int = 4) -> Path:
    """Rows: clean, adversarial, ``0.5 + 5 * (adv - clean)``; images upscaled ``scale`` times."""
    diff = (0.5 + 5 * (adv - x)).clamp(0, 1)
    rows = [torch.cat(list(t.detach().cpu()), dim=-1) for t in (x, adv, diff)]
    img = torch.cat(rows, dim=-2)  # (C, 3H, kW)
    if img.shape[0] == 1:
        img = img.expand(3, -1, -1)
    img = img.repeat_interleave(scale, -1).repeat_interleave(scale, -2)
    arr = (img.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    import imageio.v3 as iio

    path = Path(path)
    with atomic_path(path) as tmp:
        iio.imwrite(tmp, arr, extension=".png")
    return path
