"""Universal perturbations and patches: one tensor for all inputs, in the ball, seeded."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from trustlab.attacks.evasion.uap import (
    apply_patch,
    apply_perturbation,
    fooling_rate,
    universal_patch,
    universal_perturbation,
)
from trustlab.data import ArrayDataset
from trustlab.errors import InputError


def _linear():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 4))
    x = torch.rand(96, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y = model(x).argmax(1)
    return model, ArrayDataset(x, y, list("abcd"))


@pytest.mark.parametrize("norm, eps", [("linf", 0.1), ("l2", 1.0)])
def test_uap_is_one_tensor_in_the_ball_and_fools_more_than_noise(norm: str, eps: float) -> None:
    model, data = _linear()
    delta = universal_perturbation(model, data, eps=eps, norm=norm, epochs=3, batch_size=32)
    assert delta.shape == (3, 8, 8)  # one perturbation, whatever the number of inputs
    size = delta.abs().max() if norm == "linf" else delta.norm()
    assert float(size) <= eps + 1e-6
    rate = fooling_rate(model, data, lambda x: apply_perturbation(x, delta))
    noise = torch.empty(3, 8, 8).uniform_(-eps, eps) if norm == "linf" else delta[torch.randperm(3)]
    assert rate > fooling_rate(model, data, lambda x: apply_perturbation(x, noise))
    again = universal_perturbation(model, data, eps=eps, norm=norm, epochs=3, batch_size=32)
    assert torch.equal(delta, again)
    assert model.training and all(p.requires_grad for p in model.parameters())


def test_targeted_uap_pushes_toward_the_target() -> None:
    model, data = _linear()
    delta = universal_perturbation(model, data, eps=0.3, target=2, epochs=5, batch_size=32)
    rate = fooling_rate(model, data, lambda x: apply_perturbation(x, delta), target=2)
    assert rate > 0.5


def test_universal_patch_in_range_and_targeted() -> None:
    model, data = _linear()
    patch = universal_patch(model, data, size=4, target=1, epochs=5, batch_size=32, lr=0.2)
    assert patch.shape == (3, 4, 4) and float(patch.min()) >= 0 and float(patch.max()) <= 1
    before = fooling_rate(model, data, lambda x: x, target=1)
    after = fooling_rate(model, data, lambda x: apply_patch(x, patch, (2, 2)), target=1)
    assert after > before
    fixed = universal_patch(model, data, size=4, location=(0, 0), epochs=1, batch_size=32)
    assert fixed.shape == (3, 4, 4)


def test_universal_patch_by_signed_steps() -> None:
    model, data = _linear()
    kw = dict(size=4, target=1, location=(2, 2), epochs=5, batch_size=32, step="sign")
    patch = universal_patch(model, data, lr=0.05, **kw)
    assert float(patch.min()) >= 0 and float(patch.max()) <= 1
    assert torch.equal(patch, universal_patch(model, data, lr=0.05, **kw))
    before = fooling_rate(model, data, lambda x: x, target=1)
    after = fooling_rate(model, data, lambda x: apply_patch(x, patch, (2, 2)), target=1)
    assert after > before
    # each step moves a pixel by lr at most: 5 epochs x 3 batches (96 points, batch 32)
    start = universal_patch(model, data, lr=0.0, **kw)
    moved = (patch - start).abs()
    assert float(moved.max()) <= 15 * 0.05 + 1e-6 and float(moved.max()) > 0.1
    with pytest.raises(InputError, match="step must be"):
        universal_patch(model, data, size=4, step="newton")


def test_apply_patch_places_it_and_works_on_clips() -> None:
    x = torch.zeros(2, 3, 8, 8)
    patch = torch.ones(3, 2, 2)
    out = apply_patch(x, patch, (1, 5))
    assert out[:, :, 1:3, 5:7].eq(1).all() and float(out.sum()) == 2 * 3 * 4
    assert apply_patch(x, patch)[:, :, 6:, 6:].eq(1).all()  # default: bottom-right
    clip = apply_patch(torch.zeros(2, 3, 4, 8, 8), patch, (0, 0))
    assert clip[:, :, :, :2, :2].eq(1).all() and float(clip.sum()) == 2 * 3 * 4 * 4
    with pytest.raises(InputError, match="outside"):
        apply_patch(x, patch, (7, 0))
    with pytest.raises(InputError, match="does not fit"):
        apply_patch(x, torch.ones(3, 9, 9))


def test_bad_input() -> None:
    model, data = _linear()
    with pytest.raises(InputError, match="out of range"):
        universal_perturbation(model, data, target=7)
    with pytest.raises(InputError, match="patch size"):
        universal_patch(model, data, size=9)
    with pytest.raises(InputError, match="outside"):
        universal_patch(model, data, size=4, location=(6, 6))
