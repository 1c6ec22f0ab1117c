"""The blind backdoor: a compromised loss that an untouched training loop calls."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from trustlab.attacks.backdoor import AllToOne, PixelTrigger
from trustlab.attacks.backdoor.artifact import evaluate_backdoor
from trustlab.attacks.backdoor.blind import BlindBackdoorLoss
from trustlab.data import load_dataset
from trustlab.errors import InputError
from trustlab.models.spec import ModelSpec


def test_a_plain_loop_that_only_calls_loss_fn_learns_the_backdoor() -> None:
    torch.manual_seed(0)
    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    model = ModelSpec.for_data("cnn-small", train).build()
    loss_fn = BlindBackdoorLoss(PixelTrigger(channels=1), AllToOne(3))
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    g = torch.Generator().manual_seed(0)
    # the user's loop: nothing in it knows about the backdoor
    for _ in range(4):
        for idx in torch.randperm(len(train), generator=g).split(64):
            loss = loss_fn(model, train.x[idx], train.y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    m = evaluate_backdoor(model, test, loss_fn.trigger, loss_fn.policy)
    assert m["clean_acc"] > 0.85 and m["asr"] > 0.9, m
    w = loss_fn.last_weights
    assert w is not None and float(w.sum()) == pytest.approx(1.0) and (w >= 0).all()


def test_fixed_weights_and_the_start_threshold() -> None:
    torch.manual_seed(0)
    train = load_dataset("digits", "train")
    model = ModelSpec.for_data("mlp", train).build()
    x, y = train.x[:32], train.y[:32]
    fixed = BlindBackdoorLoss(PixelTrigger(channels=1), AllToOne(0), balance=(1.0, 0.5))
    main, backdoor, _ = fixed.losses(model, x, y)
    total = fixed(model, x, y)
    assert float(total.detach()) == pytest.approx(float((main + 0.5 * backdoor).detach()), rel=1e-5)
    late = BlindBackdoorLoss(start_below=0.0)  # never reached: only the main loss
    plain = F.cross_entropy(model(x), y)
    assert float(late(model, x, y).detach()) == pytest.approx(float(plain.detach()))
    assert not late.active
    soon = BlindBackdoorLoss(PixelTrigger(channels=1), start_below=100.0)
    soon(model, x, y)
    assert soon.active
    with pytest.raises(InputError, match="balance"):
        BlindBackdoorLoss(balance="pcgrad")
