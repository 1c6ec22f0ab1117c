"""APGD and APGD-T: checkpoint schedule and halving rule by hand, threat-model constraints, model
state, normalisation inside, strength vs PGD on a trained digits model, APGD-T success, seeds."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from trustlab.attacks.evasion import PGD
from trustlab.attacks.evasion.apgd import APGD, APGDT, apgd_checkpoints, halve_step
from trustlab.attacks.evasion.base import norms
from trustlab.data import load_dataset
from trustlab.errors import InputError
from trustlab.models import Normalized


def mlp(k: int = 4, d: int = 16, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(d, 12), nn.ReLU(), nn.Linear(12, k))


def batch(n: int = 32, d: int = 16, k: int = 4, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 4, d // 4, generator=g), torch.randint(0, k, (n,), generator=g)


@pytest.fixture(scope="module")
def digits():
    """A small MLP trained briefly on the built-in digits (16x16, 10 classes) + 200 test points
    it classifies correctly."""
    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    torch.manual_seed(0)
    inner = nn.Sequential(nn.Flatten(), nn.Linear(256, 64), nn.ReLU(), nn.Linear(64, 10))
    model = Normalized(inner, train.mean, train.std)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(60):
        opt.zero_grad()
        nn.functional.cross_entropy(model(train.x), train.y).backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        ok = model(test.x).argmax(1) == test.y
    assert float(ok.float().mean()) > 0.85
    return model, test.x[ok][:200], test.y[ok][:200]


def test_checkpoints_by_hand() -> None:
    # p = 0, .22, .41 (+.19), .57 (+.16), .70 (+.13), .80 (+.10), .87 (+.07), .93 (+.06), .99,
    # 1.05 (> 1, dropped); w_j = ceil(p_j * steps)
    assert apgd_checkpoints(100) == [0, 22, 41, 57, 70, 80, 87, 93, 99]
    assert apgd_checkpoints(1000) == [0, 220, 410, 570, 700, 800, 870, 930, 990]
    # 50 * p = 11, 20.5, 28.5, 35, 40, 43.5, 46.5, 49.5 -> ceil
    assert apgd_checkpoints(50) == [0, 11, 21, 29, 35, 40, 44, 47, 50]
    assert apgd_checkpoints(10) == [0, 3, 5, 6, 7, 8, 9, 10]  # repeats dropped
    assert apgd_checkpoints(1) == [0, 1]
    for n in (7, 33, 250):
        w = apgd_checkpoints(n)
        assert w[0] == 0 and w[-1] <= n and all(a < b for a, b in zip(w, w[1:], strict=False))
    with pytest.raises(InputError):
        apgd_checkpoints(0)


def test_halving_rule() -> None:
    inc = torch.tensor([16.0, 17.0, 17.0, 17.0, 0.0])
    step_same = torch.tensor([True, True, False, True, False])
    best_same = torch.tensor([False, False, True, True, False])
    # interval 22, rho .75 -> threshold 16.5: 16 halves (cond. 1); 17 with both unchanged halves
    # (cond. 2); 17 with a halved step or an improved best does not
    out = halve_step(inc, 22, 0.75, step_same, best_same)
    assert out.tolist() == [True, False, False, True, True]
    # the boundary is strict: exactly rho * interval increases does not halve
    assert not bool(halve_step(torch.tensor([15.0]), 20, 0.75, *[torch.tensor([False])] * 2))


def test_flat_loss_halves_at_every_checkpoint() -> None:
    """Zero gradient: the loss never increases, so every checkpoint halves the step."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 4))
    nn.init.zeros_(model[1].weight)
    with torch.no_grad():
        model[1].bias.copy_(torch.tensor([1.0, 0.0, 0.0, 0.0]))
    x, _ = batch(8)
    y = torch.zeros(8, dtype=torch.long)  # correctly classified, never flips
    atk = APGD(model, eps=0.1, steps=50)
    adv = atk(x, y)
    halvings = len(apgd_checkpoints(50)) - 1
    assert torch.allclose(atk.step_size_, torch.full((8,), 0.2 / 2**halvings))
    assert bool((norms(adv - x, "linf") <= 0.1 + 1e-6).all())


def test_linear_ce_optimum_is_the_corner() -> None:
    """A linear model, a tiny ball away from the box: the best point is x + eps * sign(grad)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 4))
    x = 0.4 + 0.2 * torch.rand(4, 1, 4, 4)
    y = model(x).argmax(1)
    atk = APGD(model, eps=1e-3, steps=10)  # too small to flip anything
    adv = atk(x, y)
    assert bool((model(adv).argmax(1) == y).all())
    # at the linear CE optimum the perturbation is eps * sign(grad) on every pixel
    assert torch.allclose((adv - x).abs(), torch.full_like(x, 1e-3), atol=1e-6)


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("make", [APGD, APGDT])
def test_stays_in_ball_and_box(make, norm: str) -> None:
    x, y = batch()
    eps = 8 / 255 if norm == "linf" else 0.5
    adv = make(mlp(), eps=eps, norm=norm, steps=10)(x, y)
    assert adv.shape == x.shape and adv.dtype == x.dtype
    assert float(adv.min()) >= 0 and float(adv.max()) <= 1
    assert bool((norms(adv - x, norm) <= eps + 1e-6).all())


@pytest.mark.parametrize("make", [APGD, APGDT])
def test_restores_mode_and_requires_grad(make) -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.Dropout(0.5), nn.Linear(8, 4))
    model.train()
    model[1].weight.requires_grad_(False)
    x, y = batch()
    make(model, steps=3)(x, y)
    assert model.training
    assert [p.requires_grad for p in model.parameters()] == [False, True, True, True]


def test_normalisation_inside_the_model() -> None:
    model = Normalized(mlp(), [0.5], [0.25])
    x, y = batch()
    adv = APGD(model, eps=0.1, steps=10)(x, y)
    assert float((adv - x).abs().max()) <= 0.1 + 1e-6  # the ball is in pixel space
    with torch.no_grad():
        assert (model(adv).argmax(1) != y).sum() >= (model(x).argmax(1) != y).sum()


@pytest.mark.parametrize("norm,eps", [("linf", 0.06), ("l2", 0.6)])
def test_at_least_as_strong_as_pgd10(digits, norm: str, eps: float) -> None:
    model, x, y = digits
    with torch.no_grad():
        pgd = model(PGD(model, eps=eps, alpha=eps / 4, steps=10, norm=norm)(x, y)).argmax(1) != y
        adv = APGD(model, eps=eps, norm=norm, steps=50)(x, y)
        apgd = model(adv).argmax(1) != y
    assert 0 < int(pgd.sum()) < len(y)  # a non-trivial comparison
    assert int(apgd.sum()) >= int(pgd.sum())
    assert bool((norms(adv - x, norm) <= eps + 1e-5).all())


def test_apgd_dlr_and_restarts(digits) -> None:
    model, x, y = digits
    with torch.no_grad():
        one = (model(APGD(model, eps=0.05, loss="dlr", steps=20)(x, y)).argmax(1) != y).sum()
        adv = APGD(model, eps=0.05, loss="dlr", steps=20, restarts=3)(x, y)
        three = (model(adv).argmax(1) != y).sum()
    assert 0 < int(one) <= int(three)


def test_apgdt_succeeds_on_k10(digits) -> None:
    model, x, y = digits
    eps = 0.06
    with torch.no_grad():
        adv = APGDT(model, eps=eps, steps=30, n_target_classes=3)(x, y)
        rate = float((model(adv).argmax(1) != y).float().mean())
        pgd = PGD(model, eps=eps, alpha=eps / 4, steps=10)(x, y)
        base = float((model(pgd).argmax(1) != y).float().mean())
    assert rate >= base and rate > 0.3
    assert float((adv - x).abs().max()) <= eps + 1e-6


def test_apgdt_targets_the_top_classes_on_an_easy_model() -> None:
    """With a huge budget every point is flipped, via the most likely wrong classes."""
    model = mlp(k=5)
    x, y = batch(40, k=5)
    adv = APGDT(model, eps=1.0, steps=20, n_target_classes=2)(x, y)
    with torch.no_grad():
        assert bool((model(adv).argmax(1) != y).all())


def test_determinism_by_seed() -> None:
    model = mlp()
    x, y = batch()
    for make in (APGD, APGDT):
        a = make(model, eps=0.05, steps=10, seed=3)(x, y)
        b = make(model, eps=0.05, steps=10, seed=3)(x, y)
        c = make(model, eps=0.05, steps=10, seed=4)(x, y)
        assert torch.equal(a, b) and not torch.equal(a, c)


def test_bad_inputs() -> None:
    model = mlp()
    x, y = batch()
    with pytest.raises(InputError, match="steps"):
        APGD(model, steps=0)
    with pytest.raises(InputError, match="rho"):
        APGD(model, rho=1.5)
    with pytest.raises(InputError, match="loss"):
        APGD(model, loss="hinge")
    with pytest.raises(InputError, match="n_target_classes"):
        APGDT(model, n_target_classes=0)
    with pytest.raises(InputError, match="4 classes"):
        APGDT(mlp(k=3), steps=2)(x, y % 3)
    with pytest.raises(InputError, match=r"\[0, 1\]"):
        APGD(model)(x * 5, y)
    assert torch.equal(APGD(model, eps=0)(x, y), x)
    assert math.isclose(APGD(model, eps="8/255").eps, 8 / 255)
