"""PSNR, SSIM and L1 in the hole (trustlab.metrics.image) against scikit-image's own functions."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from trustlab.errors import InputError
from trustlab.metrics.image import l1_in_hole, psnr, ssim


def images(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("shape", [(3, 1, 16, 16), (2, 3, 32, 24), (1, 3, 7, 9)])
def test_psnr_and_ssim_equal_scikit_image(shape: tuple[int, ...]) -> None:
    original = images(shape, 0)
    restored = (original + 0.1 * images(shape, 1) - 0.05).clamp(0, 1)
    ours_psnr, ours_ssim = psnr(restored, original), ssim(restored, original)
    for i in range(shape[0]):
        a, b = original[i].numpy(), restored[i].numpy()
        ref_psnr = peak_signal_noise_ratio(a, b, data_range=1.0)
        ref_ssim = structural_similarity(a, b, data_range=1.0, channel_axis=0)
        assert ours_psnr[i].item() == pytest.approx(ref_psnr, rel=1e-12)
        assert ours_ssim[i].item() == pytest.approx(ref_ssim, rel=1e-10, abs=1e-12)


def test_float32_inputs_and_identical_images() -> None:
    x = images((2, 3, 16, 16), 2).float()
    assert psnr(x, x).tolist() == [math.inf, math.inf]
    assert ssim(x, x).tolist() == pytest.approx([1.0, 1.0])
    y = 1 - x
    ref = structural_similarity(x[0].double().numpy(), y[0].double().numpy(), data_range=1.0,
                                channel_axis=0)  # fmt: skip
    assert ssim(y, x)[0].item() == pytest.approx(ref, rel=1e-6)


def test_l1_in_hole_by_hand() -> None:
    original = torch.zeros(2, 1, 4, 4)
    restored = torch.zeros(2, 1, 4, 4)
    restored[0, 0, 0, 0] = 0.5  # inside image 0's hole
    restored[0, 0, 3, 3] = 1.0  # outside it: not counted
    restored[1] = 0.25  # everywhere
    mask = torch.zeros(2, 1, 4, 4)
    mask[0, 0, :2, :2] = 1  # 4 pixels: error 0.5 / 4
    mask[1, 0, 1:3, 1:3] = 1  # 4 pixels of 0.25
    assert l1_in_hole(restored, original, mask).tolist() == pytest.approx([0.125, 0.25])
    colour = l1_in_hole(restored.expand(2, 3, 4, 4), original.expand(2, 3, 4, 4), mask)
    assert colour.tolist() == pytest.approx([0.125, 0.25])  # a grey mask covers every channel


def test_bad_input() -> None:
    x = torch.rand(2, 1, 8, 8)
    with pytest.raises(InputError, match="one shape"):
        psnr(x, torch.rand(2, 1, 8, 9))
    with pytest.raises(InputError, match="at least 7x7"):
        ssim(torch.rand(1, 1, 6, 6), torch.rand(1, 1, 6, 6))
    with pytest.raises(InputError, match="no hole"):
        l1_in_hole(x, x, torch.zeros(2, 1, 8, 8))
    with pytest.raises(InputError, match="mask must be"):
        l1_in_hole(x, x, torch.ones(8, 8))
    assert np.isfinite(psnr(x, 1 - x).numpy()).all()
