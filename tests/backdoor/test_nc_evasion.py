"""The blind backdoor's Neural-Cleanse evasion task."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from trustlab.attacks.backdoor.nc_evasion import NCEvasion
from trustlab.errors import InputError


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 3))


def test_inactive_until_nc_has_run_then_the_loss_of_the_stamped_batch() -> None:
    model = _model()
    x = torch.rand(16, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    y = torch.arange(16) % 3
    ev = NCEvasion(target=0, every=3, nc_epochs=1, buffer=32)
    assert ev(model, x, y) is None and ev(model, x, y) is None and not ev.active
    loss = ev(model, x, y)  # the third call runs NC
    assert ev.active and ev.runs == 1 and len(ev.norms) == 1
    assert ev.mask.shape == (8, 8) and ev.pattern.shape == (3, 8, 8)
    stamped = (1 - ev.mask) * x + ev.mask * ev.pattern
    torch.testing.assert_close(loss, F.cross_entropy(model(stamped), y))
    loss.backward()  # differentiable in the model's parameters
    assert model[1].weight.grad is not None
    assert model.training  # NC's run left the model's mode alone
    assert ev._seen is not None and len(ev._seen) == 32  # a bounded buffer of clean inputs


def test_bad_arguments() -> None:
    with pytest.raises(InputError, match="every and nc_epochs"):
        NCEvasion(every=0)


@pytest.mark.parametrize("balance", ["mgda", (1.0, 1.0, 0.5)])
def test_blind_loss_adds_the_evasion_task_once_nc_has_run(balance) -> None:
    from trustlab.attacks.backdoor.blind import BlindBackdoorLoss
    from trustlab.attacks.backdoor.triggers import PatchTrigger

    model = _model()
    g = torch.Generator().manual_seed(2)
    ev = NCEvasion(target=0, every=2, nc_epochs=1, buffer=32)
    loss_fn = BlindBackdoorLoss(PatchTrigger(size=2), balance=balance, evasion=ev)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    seen = []
    for _ in range(4):  # a plain loop that only calls loss_fn
        x, y = torch.rand(16, 3, 8, 8, generator=g), torch.randint(0, 3, (16,), generator=g)
        loss = loss_fn(model, x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        seen.append(len(loss_fn.last_weights))
    assert seen == [2, 3, 3, 3] and ev.runs == 2
    if balance == "mgda":
        w = loss_fn.last_weights
        assert abs(float(w.sum()) - 1) < 1e-5 and bool((w >= 0).all())
    with pytest.raises(InputError, match="3 fixed weights"):
        BlindBackdoorLoss(balance=(1.0, 1.0), evasion=ev)
