"""The clean-label backdoor with a universal adversarial trigger (Zhao et al., CVPR 2020)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from trustlab.attacks.backdoor import PatchTrigger
from trustlab.attacks.backdoor.artifact import load_trigger, save_trigger
from trustlab.attacks.backdoor.clean_label import (
    FeatureErasing,
    adversarial_trigger,
    clean_label_poisoning,
)
from trustlab.data import ArrayDataset
from trustlab.errors import InputError


def _task(clips: bool = False) -> tuple[nn.Module, ArrayDataset]:
    torch.manual_seed(0)
    shape = (3, 2, 8, 8) if clips else (3, 8, 8)
    n = 90
    model = nn.Sequential(nn.Flatten(), nn.Linear(int(torch.tensor(shape).prod()), 3))
    x = torch.rand(n, *shape, generator=torch.Generator().manual_seed(1))
    y = torch.arange(n) % 3
    return model, ArrayDataset(x, y, ["a", "b", "c"])


@pytest.mark.parametrize("clips", [False, True])
def test_adversarial_trigger_pushes_other_classes_to_the_target(clips: bool) -> None:
    model, data = _task(clips)
    trig = adversarial_trigger(model, data, target=2, size=4, epochs=5, batch_size=30, lr=0.1)
    assert isinstance(trig, PatchTrigger) and trig.pattern.shape == (3, 4, 4)
    assert float(trig.pattern.min()) >= 0 and float(trig.pattern.max()) <= 1
    others = data.x[data.y != 2]
    with torch.no_grad():
        before = (model(others).argmax(1) == 2).float().mean()
        after = (model(trig(others)).argmax(1) == 2).float().mean()
    assert after > before
    # at the bottom-right corner, on every frame of a clip
    out = trig(data.x[:2])
    torch.testing.assert_close(
        out[..., -4:, -4:],
        trig.pattern.view(3, *[1] * (out.dim() - 4), 4, 4).expand_as(out[..., -4:, -4:]),
    )
    again = adversarial_trigger(model, data, target=2, size=4, epochs=5, batch_size=30, lr=0.1)
    assert torch.equal(trig.pattern, again.pattern)


def test_feature_erasing_stays_in_the_ball_and_hurts_the_surrogate() -> None:
    model, data = _task()
    with torch.no_grad():
        y = model(data.x).argmax(1)
    erased = FeatureErasing(model, eps=0.1, steps=10)(data.x, y)
    assert float((erased - data.x).abs().max()) <= 0.1 + 1e-6
    assert float(erased.min()) >= 0 and float(erased.max()) <= 1
    with torch.no_grad():
        assert (model(erased).argmax(1) == y).float().mean() < 0.5


def test_clean_label_poisoning_keeps_labels_and_only_touches_the_target_class() -> None:
    model, data = _task()
    trig = PatchTrigger(size=2, channels=3)
    out = clean_label_poisoning(data, trig, model, target=1, rate=0.5, eps=0.1, seed=0)
    assert torch.equal(out.y, data.y)
    idx = out.poison_indices
    assert len(idx) == 15 and bool((data.y[idx] == 1).all())  # half of the 30 of class 1
    assert bool((out.x[idx][..., -2:, -2:] == trig(data.x[idx])[..., -2:, -2:]).all())
    body = (out.x[idx] - data.x[idx])[..., :-2, :]
    assert 0 < float(body.abs().max()) <= 0.1 + 1e-6  # the PGD perturbation
    plain = clean_label_poisoning(data, trig, None, target=1, rate=0.5, seed=0)
    assert torch.equal(plain.x[idx], trig(data.x[idx]))
    untouched = ~out.poison_mask
    assert torch.equal(out.x[untouched], data.x[untouched])


def test_trigger_files_round_trip_and_errors(tmp_path) -> None:
    model, data = _task()
    trig = PatchTrigger("random", size=3, channels=3, seed=4)
    path = save_trigger(tmp_path / "t.safetensors", trig)
    assert torch.equal(load_trigger(path)(data.x[:3]), trig(data.x[:3]))
    only_target = ArrayDataset(data.x[:5], torch.zeros(5, dtype=torch.long), ["a", "b", "c"])
    with pytest.raises(InputError, match="outside the target"):
        adversarial_trigger(model, only_target, target=0)
