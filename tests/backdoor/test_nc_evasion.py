"""The blind backdoor's Neural-Cleanse evasion task, with the authors' schedule (backdoors101:
one Adam step on NC's mask and pattern per batch, the evasion loss from the first batch)."""

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


def _batch(seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.rand(16, 3, 8, 8, generator=torch.Generator().manual_seed(seed))
    return x, torch.arange(16) % 3


def test_the_first_call_is_one_adam_step_from_a_half_mask_then_the_stamped_loss() -> None:
    model, (x, y) = _model(), _batch()
    ev = NCEvasion(target=2, seed=5)
    loss = ev(model, x, y)  # active from the first batch: no NC run to wait for
    assert ev.active and ev.steps == 1 and len(ev.norms) == 1
    # by hand: mask parameter 0 (mask 0.5), pattern parameter N(0, 0.5) from the seed, one Adam
    # step (lr 0.01) on 0.999 CE(target) + 0.001 |m|_1
    a = torch.zeros(8, 8, requires_grad=True)
    b = (torch.randn(1, 8, 8, generator=torch.Generator().manual_seed(5)) * 0.5).requires_grad_()
    m, p = torch.tanh(a) / 2 + 0.5, torch.tanh(b) / 2 + 0.5
    assert torch.equal(m, torch.full((8, 8), 0.5))
    ce = F.cross_entropy(model((1 - m) * x + m * p), torch.full((16,), 2))
    (0.999 * ce + 0.001 * m.sum()).backward()
    opt = torch.optim.Adam([a, b], lr=0.01)
    opt.step()
    m, p = torch.tanh(a).detach() / 2 + 0.5, torch.tanh(b).detach() / 2 + 0.5
    torch.testing.assert_close(ev.mask, m)
    torch.testing.assert_close(ev.pattern, p.expand(3, 8, 8))  # one plane for every channel
    assert ev.norms[0] == pytest.approx(float(m.sum()))
    # the evasion loss: the stamped batch at its true labels, differentiable in the model only
    torch.testing.assert_close(loss, F.cross_entropy(model((1 - m) * x + m * p), y))
    loss.backward()
    assert model[1].weight.grad is not None


def test_the_nc_step_leaves_the_model_alone_and_keeps_its_optimiser_state() -> None:
    model, (x, _) = _model(), _batch()
    model.train(False)
    before = [q.detach().clone() for q in model.parameters()]
    ev = NCEvasion(target=0)
    for _ in range(3):
        ev.update(model, x)
    assert ev.steps == 3 and not model.training  # the mode the loop left it in
    assert all(torch.equal(q, q0) for q, q0 in zip(model.parameters(), before, strict=True))
    assert all(q.grad is None for q in model.parameters())
    state = ev._opt.state[ev._mask_t]  # Adam's state carries over the batches
    assert int(state["step"]) == 3


def test_nc_optimisation_moves_towards_the_target() -> None:
    model, (x, _) = _model(), _batch()
    ev = NCEvasion(target=1)
    t = torch.ones(16, dtype=torch.long)

    def to_target() -> float:
        with torch.no_grad():
            return float(F.cross_entropy(model((1 - ev.mask) * x + ev.mask * ev.pattern), t))

    ev.update(model, x)
    first = to_target()
    for _ in range(200):
        ev.update(model, x)
    assert to_target() < first - 0.1


def test_bad_arguments() -> None:
    with pytest.raises(InputError, match="lr must be > 0"):
        NCEvasion(lr=0)
    with pytest.raises(InputError, match="cost in"):
        NCEvasion(cost=1.5)
    model, (x, y) = _model(), _batch()
    with pytest.raises(InputError, match="call update"):
        NCEvasion().loss(model, x, y)


@pytest.mark.parametrize("balance", ["mgda", (1.0, 1.0, 0.5)])
def test_blind_loss_balances_three_tasks_from_the_first_batch(balance) -> None:
    from trustlab.attacks.backdoor.blind import BlindBackdoorLoss
    from trustlab.attacks.backdoor.triggers import PatchTrigger

    model = _model()
    g = torch.Generator().manual_seed(2)
    ev = NCEvasion(target=0)
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
    assert seen == [3, 3, 3, 3] and ev.steps == 4
    if balance == "mgda":
        w = loss_fn.last_weights
        assert abs(float(w.sum()) - 1) < 1e-5 and bool((w >= 0).all())
    with pytest.raises(InputError, match="3 fixed weights"):
        BlindBackdoorLoss(balance=(1.0, 1.0), evasion=ev)


def test_nc_keeps_stepping_while_the_loss_threshold_holds_the_backdoor_off() -> None:
    from trustlab.attacks.backdoor.blind import BlindBackdoorLoss

    model, (x, y) = _model(), _batch()
    ev = NCEvasion(target=0)
    loss_fn = BlindBackdoorLoss(loss_threshold=0.0, evasion=ev, window=2)  # never on
    for _ in range(3):
        loss = loss_fn(model, x, y)
    torch.testing.assert_close(loss, F.cross_entropy(model(x), y))  # the main loss alone
    assert ev.steps == 3 and loss_fn.last_weights is None  # as the authors: NC's step first


def test_nc_reverse_starts_from_init() -> None:
    # NC's warm start (NeuralCleanse.reverse(init=...)), which the earlier evasion schedule used;
    # kept here until tests/defenses covers it
    from trustlab.defenses.backdoor.neural_cleanse import NeuralCleanse

    model = _model()
    x = torch.rand(8, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    m0, p0 = torch.full((1, 8, 8), 0.3), torch.full((1, 3, 8, 8), 0.6)
    nc = NeuralCleanse(epochs=1, samples=8, batch_size=8, lr=1e-6)
    masks, patterns, _, _ = nc.reverse(model, x, [0], init=(m0, p0))
    torch.testing.assert_close(masks, m0, atol=1e-4, rtol=0)
    torch.testing.assert_close(patterns, p0, atol=1e-4, rtol=0)
