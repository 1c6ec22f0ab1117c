"""WaNet (Nguyen & Tran, ICLR 2021): the warp trigger and the poisoned training step."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from trustlab.attacks.backdoor.artifact import evaluate_backdoor, load_trigger, save_trigger
from trustlab.attacks.backdoor.labels import AllToOne
from trustlab.attacks.backdoor.triggers import trigger_from_state
from trustlab.attacks.backdoor.wanet import WaNet, WaNetLoss, WarpTrigger, _identity_grid
from trustlab.data import load_dataset
from trustlab.errors import InputError
from trustlab.models.spec import ModelSpec
from trustlab.registry import BACKDOORS
from trustlab.train import Trainer, TrainSettings


def test_the_warp_field_is_the_authors_smooth_bounded_grid() -> None:
    trig = WarpTrigger((16, 16), k=4, s=0.5, seed=3)
    assert trig.noise.shape == (2, 4, 4)
    assert float(trig.noise.abs().mean()) == pytest.approx(1.0)  # normalised by its mean |.|
    disp = trig.grid - _identity_grid(16, 16)
    up = F.interpolate(trig.noise[None], size=(16, 16), mode="bicubic", align_corners=True)[0]
    # |grid - identity| <= s * |upsampled noise| / H, and the grid stays in [-1, 1]
    assert (disp.abs() <= 0.5 * up.permute(1, 2, 0).abs() / 16 + 1e-6).all()
    assert float(trig.grid.abs().max()) <= 1.0
    # smooth: neighbouring displacements differ far less than a per-pixel random field's
    # (mean step over mean displacement: 0.32-0.41 for seeds 0-4, 1.25-1.36 for i.i.d. noise)
    steps = torch.cat([(disp[1:] - disp[:-1]).flatten(), (disp[:, 1:] - disp[:, :-1]).flatten()])
    assert steps.abs().mean() < 0.6 * disp.abs().mean()
    # bilinear resampling inside the image keeps inputs in [0, 1]
    x = torch.rand(4, 3, 16, 16)
    out = trig(x)
    assert out.shape == x.shape and float(out.min()) >= 0 and float(out.max()) <= 1
    assert not torch.allclose(out, x)
    clip = torch.rand(2, 3, 5, 16, 16)  # clips: every frame warped alike
    assert torch.allclose(trig(clip)[:, :, 1], trig(clip[:, :, 1]), atol=1e-6)


def test_zero_strength_is_the_identity() -> None:
    x = torch.rand(3, 1, 16, 16)
    assert torch.allclose(WarpTrigger((16, 16), s=0.0)(x), x, atol=1e-5)
    with pytest.raises(InputError, match="strength"):
        WarpTrigger(s=-1)


def test_the_field_is_a_function_of_the_seed() -> None:
    a, b = WarpTrigger((16, 16), seed=1), WarpTrigger((16, 16), seed=1)
    assert torch.equal(a.grid, b.grid)
    assert not torch.equal(a.grid, WarpTrigger((16, 16), seed=2).grid)
    r = WaNet()
    data = load_dataset("digits", "train").subset(range(8))
    assert torch.equal(r.trigger(data, 0).grid, r.trigger(data, 0).grid)


def test_the_noise_mode_keeps_labels_and_is_not_the_trigger() -> None:
    trig = WarpTrigger((16, 16), seed=0)
    loss = WaNetLoss(trig, AllToOne(7))
    x, y = torch.rand(64, 1, 16, 16), torch.randint(0, 7, (64,))
    nb, nc = loss.counts(64)
    assert (nb, nc) == (6, 12)  # the authors' int(0.1 * 64), int(6 * 2)
    torch.manual_seed(0)
    inputs, labels = loss.batch(x, y)
    assert (labels[:nb] == 7).all() and torch.equal(labels[nb:], y[nb:])
    assert torch.allclose(inputs[:nb], trig(x[:nb]))
    cross = inputs[nb : nb + nc]
    assert not torch.allclose(cross, trig(x[nb : nb + nc]), atol=1e-4)
    assert (cross - trig(x[nb : nb + nc])).abs().mean() < (trig(x) - x).abs().mean() * 5
    assert torch.equal(inputs[nb + nc :], x[nb + nc :])
    torch.manual_seed(0)
    assert torch.equal(loss.batch(x, y)[0], inputs)  # the global RNG, seeded per epoch
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(256, 10))
    assert loss(model, x, y).item() > 0


def test_state_round_trip(tmp_path) -> None:
    trig = WarpTrigger((16, 16), k=4, s=0.5, seed=5)
    x = torch.rand(4, 1, 16, 16)
    again = trigger_from_state(*trig.state())
    assert isinstance(again, WarpTrigger) and torch.equal(again(x), trig(x))
    loaded = load_trigger(save_trigger(tmp_path / "t.safetensors", trig))
    assert torch.allclose(loaded(x), trig(x)) and loaded.state()[0] == trig.state()[0]
    assert loaded(torch.rand(1, 1, 8, 8)).shape == (1, 1, 8, 8)  # another size: rebuilt


def test_the_card_is_a_loss_injector_and_rate_is_pc() -> None:
    card = BACKDOORS.get("wanet")
    assert card.meta["injector"] == "loss"
    r = card.build()
    data = load_dataset("digits", "train").subset(range(8))
    trig, pol = r.trigger(data, 0), r.policy(0, 10)
    assert r.loss(trig, pol).pc == 0.1 and r.loss(trig, pol, rate=0.2).pc == 0.2
    with pytest.raises(InputError, match="WarpTrigger"):
        r.loss(None, pol)


def test_a_short_training_run_implants_the_warp() -> None:
    # 3 epochs of cnn-small on 16x16 digits: the paper's s = 0.5 (a half-pixel warp) is not
    # learnt that fast (ASR 3%, see the module); s = 4 with the authors' ratios is
    # (a clean cnn-small trained alike sends 0.6% of the s = 4 warped inputs to the target;
    # not retrained here, to keep the file fast)
    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    settings = TrainSettings(epochs=3, lr=0.05, batch_size=64)
    recipe = WaNet(s=4.0)
    trig, pol = recipe.trigger(train, 0), recipe.policy(0, 10)
    torch.manual_seed(0)
    net = ModelSpec.for_data("cnn-small", train).build()
    Trainer(net, settings, compute_loss=recipe.loss(trig, pol)).fit(train)
    bad = evaluate_backdoor(net, test, trig, pol)
    assert bad["clean_acc"] > 0.9 and bad["asr"] > 0.15, bad
