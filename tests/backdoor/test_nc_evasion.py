"""The blind backdoor's Neural-Cleanse evasion task."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from trustlab.attacks.backdoor.nc_evasion import NCEvasion
from trustlab.defenses.backdoor.neural_cleanse import reverse_engineer
from trustlab.errors import InputError


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 3))


def test_inactive_until_nc_has_run_then_the_loss_of_the_stamped_batch() -> None:
    model = _model()
    x = torch.rand(16, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    y = torch.arange(16) % 3
    ev = NCEvasion(
        target=0, every=3, nc_epochs=1, buffer=32, min_success=0.0, reverse=reverse_engineer
    )
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
        NCEvasion(every=0, reverse=reverse_engineer)
    with pytest.raises(InputError, match="min_success"):
        NCEvasion(min_success=1.5, reverse=reverse_engineer)


def test_a_trigger_is_adopted_only_when_it_succeeds_and_runs_warm_start(monkeypatch) -> None:
    from trustlab.defenses.backdoor.neural_cleanse import NeuralCleanse

    model = _model()
    x = torch.rand(16, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    y = torch.arange(16) % 3
    results = iter([0.5, 1.0, 0.7])  # the success of three NC runs
    inits = []

    def fake_reverse(self, model, x, targets, init=None):
        inits.append(init)
        k = len(inits)
        return (
            torch.full((1, 8, 8), 0.1 * k),
            torch.rand(1, 3, 8, 8),
            torch.tensor([next(results)]),
            1,
        )

    monkeypatch.setattr(NeuralCleanse, "reverse", fake_reverse)
    ev = NCEvasion(target=0, every=1, nc_epochs=1, buffer=16, reverse=reverse_engineer)
    assert ev(model, x, y) is None and not ev.active  # 50%: NC would report no trigger
    assert ev(model, x, y) is not None and ev.active  # 100%: adopted
    torch.testing.assert_close(ev.mask, torch.full((8, 8), 0.2))
    ev(model, x, y)  # 70%: the adopted trigger stays
    torch.testing.assert_close(ev.mask, torch.full((8, 8), 0.2))
    assert ev.success == pytest.approx([0.5, 1.0, 0.7])
    # every run after the first starts from the previous run's result
    assert inits[0] is None
    torch.testing.assert_close(inits[1][0], torch.full((1, 8, 8), 0.1))
    torch.testing.assert_close(inits[2][0], torch.full((1, 8, 8), 0.2))


def test_reverse_starts_from_init() -> None:
    from trustlab.defenses.backdoor.neural_cleanse import NeuralCleanse

    model = _model()
    x = torch.rand(8, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    m0, p0 = torch.full((1, 8, 8), 0.3), torch.full((1, 3, 8, 8), 0.6)
    nc = NeuralCleanse(epochs=1, samples=8, batch_size=8, lr=1e-6)
    masks, patterns, _, _ = nc.reverse(model, x, [0], init=(m0, p0))
    torch.testing.assert_close(masks, m0, atol=1e-4, rtol=0)
    torch.testing.assert_close(patterns, p0, atol=1e-4, rtol=0)


@pytest.mark.parametrize("balance", ["mgda", (1.0, 1.0, 0.5)])
def test_blind_loss_adds_the_evasion_task_once_nc_has_run(balance) -> None:
    from trustlab.attacks.backdoor.blind import BlindBackdoorLoss
    from trustlab.attacks.backdoor.triggers import PatchTrigger

    model = _model()
    g = torch.Generator().manual_seed(2)
    ev = NCEvasion(
        target=0, every=2, nc_epochs=1, buffer=32, min_success=0.0, reverse=reverse_engineer
    )
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
