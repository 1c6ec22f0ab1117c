"""Vectorised crop and flip: shapes, content, seeding."""

from __future__ import annotations

import pytest
import torch

from trustlab.data.augment import augment_batch, random_crop, random_flip
from trustlab.errors import InputError


def test_crop_is_a_shifted_window_of_the_padded_image() -> None:
    x = torch.rand(16, 3, 8, 8)
    out = random_crop(x, padding=2, generator=torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for i in range(16):  # test-side loop: each output must equal one window of its own input
        hits = [
            torch.equal(out[i], padded[i, :, dy : dy + 8, dx : dx + 8])
            for dy in range(5)
            for dx in range(5)
        ]
        assert any(hits)


def test_crop_works_on_video() -> None:
    x = torch.rand(4, 3, 5, 8, 8)
    out = random_crop(x, 2, torch.Generator().manual_seed(1))
    assert out.shape == x.shape


def test_flip_and_seeding() -> None:
    x = torch.rand(64, 1, 4, 4)
    out = random_flip(x, torch.Generator().manual_seed(0))
    flipped = torch.tensor([torch.equal(o, xi.flip(-1)) for o, xi in zip(out, x, strict=True)])
    kept = torch.tensor([torch.equal(o, xi) for o, xi in zip(out, x, strict=True)])
    assert bool((flipped | kept).all()) and 10 < int(flipped.sum()) < 54
    again = random_flip(x, torch.Generator().manual_seed(0))
    assert torch.equal(out, again)


def test_augment_batch_names() -> None:
    x = torch.rand(2, 1, 4, 4)
    assert torch.equal(augment_batch(x, "none"), x)
    with pytest.raises(InputError, match="crop-flip"):
        augment_batch(x, "rotate")
