"""Inpainting masks (trustlab.generative.masks): the area they cover, their shape, their seeds."""

from __future__ import annotations

import pytest
import torch

from trustlab.errors import InputError
from trustlab.generative.masks import centre_mask, free_form, make_masks, random_rectangles


def test_centre_mask_covers_the_fraction_in_the_middle() -> None:
    m = centre_mask(3, (16, 16), fraction=0.25)  # an 8x8 square: rows and columns 4..11
    assert m.shape == (3, 1, 16, 16) and m.dtype == torch.float32
    assert m.sum((1, 2, 3)).tolist() == [64.0] * 3
    assert m[0, 0, 4:12, 4:12].eq(1).all() and m[0, 0, :4].eq(0).all()
    assert centre_mask(1, (20, 10), fraction=0.36).sum().item() == 12 * 6  # sqrt(.36) per side


def test_random_rectangles_sides_and_seeds() -> None:
    m = random_rectangles(64, (32, 32), seed=3, count=1, min_side=0.25, max_side=0.5)
    area = m.sum((1, 2, 3))
    assert (area >= 8 * 8).all() and (area <= 16 * 16).all()  # sides between 8 and 16 pixels
    rows = m.amax(3).sum((1, 2))  # the rectangle's height
    assert ((rows >= 8) & (rows <= 16)).all()
    assert torch.equal(m, random_rectangles(64, (32, 32), seed=3, count=1))
    assert not torch.equal(m, random_rectangles(64, (32, 32), seed=4, count=1))
    two = random_rectangles(64, (32, 32), seed=3, count=2)
    assert (two.sum((1, 2, 3)) >= 8 * 8).all() and two.mean() > m.mean()  # two cover more
    assert set(two.unique().tolist()) <= {0.0, 1.0}


def test_free_form_strokes_cover_part_of_the_image_and_are_seeded() -> None:
    m = free_form(16, (32, 32), seed=0)
    cover = m.mean((1, 2, 3))
    assert m.shape == (16, 1, 32, 32)
    assert (cover > 0).all() and (cover < 0.9).all()
    assert torch.equal(m, free_form(16, (32, 32), seed=0))
    assert not torch.equal(m, free_form(16, (32, 32), seed=1))
    wide = free_form(16, (32, 32), seed=0, max_width=0.3)
    assert wide.mean() > m.mean()  # a wider brush covers more


def test_make_masks_and_bad_input() -> None:
    assert torch.equal(make_masks("centre", 2, 16, seed=0), centre_mask(2, 16))
    assert torch.equal(make_masks("free-form", 2, 16, seed=5), free_form(2, 16, seed=5))
    with pytest.raises(InputError, match="unknown mask kind"):
        make_masks("circle", 2, 16, seed=0)
    with pytest.raises(InputError, match="fraction"):
        centre_mask(2, 16, fraction=1.5)
    with pytest.raises(InputError, match="max_side"):
        random_rectangles(2, 16, seed=0, min_side=0.5, max_side=0.25)
