"""Input diversity (DI): Xie, Zhang, Zhou, Bai, Wang, Ren & Yuille, "Improving Transferability of
Adversarial Examples with Input Diversity", CVPR 2019.

At every attack step, with probability ``prob`` (the paper's 0.5) the whole batch is resized to a
random side ``rnd`` in ``[floor(resize_rate * H), H)`` (nearest neighbour) and zero-padded at a
random offset back to ``H x W``; the gradient flows through the transform to the input. The paper
enlarges (299 -> [299, 330), padded to 330) and feeds the larger image; trustlab shrinks and pads
back to the input size (``resize_rate`` 0.9, as torchattacks' DI2-FGSM does), so that models with
a fixed input size (MLPs, ``cnn-small``) take the transformed batch. The random draws come from
the attack's own generator: same seed, same transforms.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from trustlab.errors import InputError


def check_diversity(prob: float, resize_rate: float) -> None:
    if not 0 <= prob <= 1:
        raise InputError(f"the input-diversity probability must be in [0, 1], got {prob}.")
    if not 0 < resize_rate <= 1:
        raise InputError(f"resize_rate must be in (0, 1], got {resize_rate}; DI uses 0.9.")


def _draw(low: int, high: int, gen: torch.Generator | None) -> int:
    """An integer in ``[low, high)`` (``low`` when the range is empty)."""
    if high <= low:
        return low
    return int(torch.randint(low, high, (1,), generator=gen))


def input_diversity(
    x: torch.Tensor,
    gen: torch.Generator | None,
    prob: float = 0.5,
    resize_rate: float = 0.9,
) -> torch.Tensor:
    """DI's random resize-and-pad of an image batch ``(N, C, H, W)``; see the module."""
    if x.dim() != 4:
        raise InputError(
            f"input diversity transforms image batches (N, C, H, W); got shape {tuple(x.shape)}."
        )
    apply = float(torch.rand((), generator=gen)) < prob
    h, w = x.shape[-2:]
    rh = _draw(max(1, int(resize_rate * h)), h, gen)
    rw = max(1, round(rh * w / h))
    top, left = _draw(0, h - rh + 1, gen), _draw(0, w - rw + 1, gen)
    if not apply or (rh == h and rw == w):
        return x
    small = F.interpolate(x, size=(rh, rw), mode="nearest")
    return F.pad(small, (left, w - rw - left, top, h - rh - top))
