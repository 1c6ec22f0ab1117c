"""Batch-level, vectorised data augmentation on tensors in ``[0, 1]``.

The CIFAR recipe (He et al. 2016): zero-pad by 4 pixels, take a random 32x32 crop, flip
horizontally with probability 1/2. All randomness comes from the ``generator`` passed in, so a
seeded training run is reproducible and resumable.

:func:`apply_per_row` applies one of several batch transforms to chosen rows (the trainer uses
it for backdoor triggers that wait until after the augmentation).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from trustlab.errors import InputError

AUGMENTATIONS = ("none", "crop", "flip", "crop-flip")


def random_crop(
    x: torch.Tensor, padding: int = 4, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Zero-pad the last two dims by ``padding`` and crop back at a random offset per sample."""
    if padding <= 0:
        return x
    n, h, w = x.shape[0], x.shape[-2], x.shape[-1]
    xp = torch.nn.functional.pad(x, (padding, padding, padding, padding))
    dy = torch.randint(0, 2 * padding + 1, (n,), generator=generator).to(x.device)
    dx = torch.randint(0, 2 * padding + 1, (n,), generator=generator).to(x.device)
    rows = (dy[:, None] + torch.arange(h, device=x.device))[:, :, None]  # (N, H, 1)
    cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, :]  # (N, 1, W)
    batch = torch.arange(n, device=x.device)[:, None, None]
    # Advanced indexing on the last two dims moves them first: (N, H, W, *lead) -> back.
    out = xp.movedim((-2, -1), (1, 2))[batch, rows, cols]
    return out.movedim((1, 2), (-2, -1)).contiguous()


def random_flip(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Flip each sample horizontally (last dim) with probability 1/2."""
    flip = torch.rand(x.shape[0], generator=generator).to(x.device) < 0.5
    shape = (-1,) + (1,) * (x.dim() - 1)
    return torch.where(flip.view(shape), x.flip(-1), x)


def augment_batch(
    x: torch.Tensor, kind: str, generator: torch.Generator | None = None, padding: int = 4
) -> torch.Tensor:
    """Apply the named augmentation (``none``, ``crop``, ``flip``, ``crop-flip``)."""
    if kind not in AUGMENTATIONS:
        raise InputError(f"unknown augmentation {kind!r}; use one of {', '.join(AUGMENTATIONS)}.")
    if "crop" in kind:
        x = random_crop(x, padding, generator)
    if "flip" in kind:
        x = random_flip(x, generator)
    return x


def apply_per_row(
    x: torch.Tensor, rows: torch.Tensor, fns: Sequence[Callable[[torch.Tensor], torch.Tensor]]
) -> torch.Tensor:
    """``x`` with ``fns[rows[i]]`` applied to row ``i`` wherever ``rows[i] >= 0`` (each ``fn``
    maps a batch to a batch of the same shape); ``x`` itself when no row is chosen.

    Example::

        x2 = apply_per_row(x, torch.tensor([-1, 0, 1]), [trigger_a, trigger_b])
    """
    rows = rows.to(x.device)
    if rows.shape != x.shape[:1]:
        raise InputError(f"rows must be ({x.shape[0]},), got {tuple(rows.shape)}.")
    if not bool((rows >= 0).any()):
        return x
    out = x.clone()
    for k in rows[rows >= 0].unique().tolist():
        sel = rows == k
        out[sel] = fns[k](x[sel]).to(x.dtype)
    return out
