"""Image-restoration metrics: PSNR, SSIM and the L1 error inside a hole, batched on torch.

They are pure functions of ``(N, C, H, W)`` tensors in ``[0, 1]`` (``data_range`` 1) and return
one value per image (``(N,)``, float64), computed the way scikit-image computes them, so that the
numbers match what inpainting papers report with ``skimage.metrics``:

- :func:`psnr`: ``10 log10(data_range^2 / MSE)`` (``peak_signal_noise_ratio``).
- :func:`ssim`: Wang, Bovik, Sheikh & Simoncelli, "Image quality assessment: from error
  visibility to structural similarity", IEEE TIP 2004, as ``structural_similarity`` computes it
  by default: a 7x7 uniform window, ``K1 = 0.01``, ``K2 = 0.03``, sample covariances (``49/48``),
  the mean over the pixels at least 3 from the border, and for colour the mean over channels.
- :func:`l1_in_hole`: the mean absolute error over the pixels a mask marks as missing (the
  inpainting papers' "L1 in the hole").

Example:
    >>> x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    >>> psnr(x, x).tolist()
    [inf, inf]
    >>> ssim(x, x).tolist()
    [1.0, 1.0]
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from trustlab.errors import InputError

WIN_SIZE = 7  # scikit-image's default window
K1, K2 = 0.01, 0.03


def _pair(a: torch.Tensor, b: torch.Tensor, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(a, torch.Tensor) or not isinstance(b, torch.Tensor):
        raise InputError(f"{name} takes two tensors (N, C, H, W).")
    if a.shape != b.shape or a.dim() != 4:
        raise InputError(
            f"{name} takes two image batches of one shape (N, C, H, W); got {tuple(a.shape)} "
            f"and {tuple(b.shape)}."
        )
    return a.detach().to(torch.float64), b.detach().to(torch.float64)


def psnr(restored: torch.Tensor, original: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB per image ``(N,)`` (``inf`` for identical images)."""
    x, y = _pair(restored, original, "psnr")
    mse = (x - y).pow(2).flatten(1).mean(1)
    return 10.0 * torch.log10(data_range**2 / mse)


def ssim(restored: torch.Tensor, original: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Mean structural similarity per image ``(N,)``, equal to scikit-image's
    ``structural_similarity(original, restored, data_range=data_range, channel_axis=0)``."""
    x, y = _pair(restored, original, "ssim")
    if min(x.shape[-2:]) < WIN_SIZE:
        raise InputError(
            f"ssim needs images of at least {WIN_SIZE}x{WIN_SIZE} pixels (its window); got "
            f"{tuple(x.shape[-2:])}."
        )
    n, c = x.shape[:2]
    x, y = x.reshape(n * c, 1, *x.shape[-2:]), y.reshape(n * c, 1, *y.shape[-2:])

    def window(t: torch.Tensor) -> torch.Tensor:  # the uniform filter on the cropped interior
        return F.avg_pool2d(t, WIN_SIZE, stride=1)

    ux, uy = window(x), window(y)
    cov_norm = WIN_SIZE**2 / (WIN_SIZE**2 - 1)  # sample covariance, as scikit-image
    vx = cov_norm * (window(x * x) - ux * ux)
    vy = cov_norm * (window(y * y) - uy * uy)
    vxy = cov_norm * (window(x * y) - ux * uy)
    c1, c2 = (K1 * data_range) ** 2, (K2 * data_range) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    return s.flatten(1).mean(1).reshape(n, c).mean(1)


def l1_in_hole(restored: torch.Tensor, original: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean absolute error per image ``(N,)`` over the pixels where ``mask`` is 1 (the hole).

    ``mask``: ``(N, 1, H, W)`` or ``(N, C, H, W)``, 1 inside the hole, 0 outside; every image
    needs a non-empty hole.
    """
    x, y = _pair(restored, original, "l1_in_hole")
    m = torch.as_tensor(mask).detach().to(torch.float64)
    if m.dim() != 4 or m.shape[0] != x.shape[0] or m.shape[-2:] != x.shape[-2:]:
        raise InputError(
            f"mask must be (N, 1, H, W) like the images {tuple(x.shape)}; got {tuple(m.shape)}."
        )
    m = m.expand_as(x)
    area = m.flatten(1).sum(1)
    if (area == 0).any():
        raise InputError("l1_in_hole: some mask has no hole (all zeros); nothing to measure.")
    return ((x - y).abs() * m).flatten(1).sum(1) / area


__all__ = ["l1_in_hole", "psnr", "ssim"]
