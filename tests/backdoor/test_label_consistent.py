"""The label-consistent backdoor (Turner, Tsipras & Madry, arXiv:1912.02771, 2019)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from trustlab.attacks.backdoor.artifact import load_trigger, save_trigger, train_backdoor
from trustlab.attacks.backdoor.label_consistent import (
    CORNER,
    CornersTrigger,
    LabelConsistentBackdoor,
    hardening,
)
from trustlab.attacks.backdoor.labels import AllToOne, CleanLabel
from trustlab.attacks.backdoor.triggers import trigger_from_state
from trustlab.data import ArrayDataset
from trustlab.errors import InputError
from trustlab.registry import BACKDOORS


def _task() -> tuple[nn.Module, ArrayDataset]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 10 * 10, 3))
    x = torch.rand(90, 3, 10, 10, generator=torch.Generator().manual_seed(1))
    return model, ArrayDataset(x, torch.arange(90) % 3, ["a", "b", "c"])


def test_full_trigger_puts_the_authors_pattern_in_the_four_corners() -> None:
    x = torch.full((2, 3, 10, 12), 0.5)
    out = CornersTrigger()(x)
    white = (CORNER > 0).float()  # full amplitude: +1 -> 1, -1 -> 0
    for rows in (slice(0, 3), slice(-3, None)):
        torch.testing.assert_close(out[..., rows, :3], white.expand(2, 3, 3, 3))
        torch.testing.assert_close(out[..., rows, -3:], white.flip(-1).expand(2, 3, 3, 3))
    middle = torch.ones(10, 12, dtype=torch.bool)
    middle[:3, :3] = middle[:3, -3:] = middle[-3:, :3] = middle[-3:, -3:] = False
    assert torch.equal(out[..., middle], x[..., middle])
    # the authors' top-left corner, from poison_attack.py's "all-corners" mask
    assert CORNER.tolist() == [[1, -1, -1], [-1, 1, -1], [1, -1, 1]]
    # invariant to a horizontal flip (the point of the four corners)
    assert torch.equal(CornersTrigger()(x.flip(-1)), out.flip(-1))


def test_reduced_amplitude_adds_the_pattern() -> None:
    x = torch.full((1, 1, 8, 8), 0.5)
    d = CornersTrigger(32 / 255)(x) - x
    assert float(d.abs().max()) == pytest.approx(32 / 255, abs=1e-6)
    torch.testing.assert_close(d[0, 0, :3, :3], 32 / 255 * CORNER)
    clip = torch.rand(2, 3, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    out = CornersTrigger(0.25)(clip)
    assert out.shape == clip.shape and float(out.min()) >= 0 and float(out.max()) <= 1


def test_hardening_stays_in_the_ball_and_hurts_the_surrogate() -> None:
    model, data = _task()
    with torch.no_grad():
        y = model(data.x).argmax(1)
    hard = hardening(model, eps=0.1, alpha=0.02, steps=10)(data.x, y)
    assert float((hard - data.x).abs().max()) <= 0.1 + 1e-6
    assert float(hard.min()) >= 0 and float(hard.max()) <= 1
    with torch.no_grad():
        assert (model(hard).argmax(1) == y).float().mean() < 0.5
    again = hardening(model, eps=0.1, alpha=0.02, steps=10)(data.x, y)
    assert torch.equal(hard, again)  # no random start: deterministic


def test_poisoning_keeps_labels_and_only_touches_the_target_class() -> None:
    model, data = _task()
    recipe = LabelConsistentBackdoor(eps=0.1, alpha=0.02, steps=10, amplitude=0.5)
    trig, policy = recipe.trigger(data), recipe.policy(1, 3)
    assert isinstance(policy, CleanLabel) and trig.amplitude == 1.0  # full at test time
    out = recipe.poison(data, trig, policy, rate=0.5, seed=0, surrogate=model)
    assert torch.equal(out.y, data.y)
    idx = out.poison_indices
    assert len(idx) == 15 and bool((data.y[idx] == 1).all())  # half of the 30 of class 1
    assert torch.equal(out.x[~out.poison_mask], data.x[~out.poison_mask])
    # the perturbation before the trigger is within eps; the corners carry the pattern
    pert = hardening(model, eps=0.1, alpha=0.02, steps=10, seed=0)(data.x[idx], data.y[idx])
    assert float((pert - data.x[idx]).abs().max()) <= 0.1 + 1e-6
    torch.testing.assert_close(out.x[idx], CornersTrigger(0.5)(pert))
    away = torch.ones(10, 10, dtype=torch.bool)
    away[:3, :3] = away[:3, -3:] = away[-3:, :3] = away[-3:, -3:] = False
    body = (out.x[idx] - data.x[idx])[..., away]
    assert 0 < float(body.abs().max()) <= 0.1 + 1e-6
    plain = recipe.poison(data, trig, policy, rate=0.5, seed=0)  # no surrogate: trigger only
    assert torch.equal(plain.x[idx], CornersTrigger(0.5)(data.x[idx]))
    with pytest.raises(InputError, match="CleanLabel"):
        recipe.poison(data, trig, AllToOne(1, 3), rate=0.5)


def test_state_round_trip_and_bad_parameters(tmp_path) -> None:
    trig = CornersTrigger(16 / 255)
    save_trigger(tmp_path / "t.safetensors", trig)
    back = load_trigger(tmp_path / "t.safetensors")
    assert isinstance(back, CornersTrigger) and back.state() == trig.state()
    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    assert torch.equal(back(x), trig(x))
    assert isinstance(trigger_from_state(*trig.state()), CornersTrigger)
    with pytest.raises(InputError, match="amplitude"):
        CornersTrigger(0)
    with pytest.raises(InputError, match="at least 6x6"):
        CornersTrigger()(torch.rand(1, 1, 5, 8))
    with pytest.raises(InputError, match="steps"):
        LabelConsistentBackdoor(steps=0)
    card = BACKDOORS.get("lc")
    assert card.meta["injector"] == "clean-label" and card.build().of == "eligible"


def test_tiny_training_run_reports_asr_against_a_clean_model() -> None:
    """On 400 digits (about 40 of the target class), 2 epochs and a few PGD steps the backdoor
    does not take (measured: C-Acc 78%, ASR 0.7%; a clean model's is 0%): a faithful result
    on a tiny set."""
    from trustlab.data import load_dataset
    from trustlab.models.spec import ModelSpec
    from trustlab.train import TrainSettings

    train = load_dataset("digits", "train").subset(range(400))
    test = load_dataset("digits", "test").subset(range(160))
    torch.manual_seed(0)
    net = ModelSpec.for_data("cnn-small", train).build()
    settings = TrainSettings(epochs=2, lr=0.05, batch_size=64)
    art = train_backdoor("lc", train, test, net, settings, 0.5, 0, 0, options={"steps": 5})
    assert art.metrics["clean_acc"] > 0.5 and 0.0 <= art.metrics["asr"] <= 1.0
    assert torch.equal(art.poisoned_y, train.y[art.poison_indices])
    assert bool((train.y[art.poison_indices] == 0).all())
    assert isinstance(art.trigger, CornersTrigger) and art.trigger.amplitude == 1.0
