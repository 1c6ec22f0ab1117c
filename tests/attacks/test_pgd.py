"""FGSM and PGD: threat-model constraints, model state, normalisation inside, targeted mode, a
linear model whose worst case is known, objectives, errors, determinism."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from trustlab.attacks.evasion import FGSM, PGD, parse_eps
from trustlab.attacks.evasion.base import frozen, norms, project
from trustlab.attacks.evasion.losses import ce, cw, dlr
from trustlab.errors import InputError
from trustlab.models import Normalized


def linear(k: int = 4, d: int = 16, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(d, k))


def batch(n: int = 32, d: int = 16, k: int = 4, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 4, d // 4, generator=g), torch.randint(0, k, (n,), generator=g)


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("make", [FGSM, PGD])
def test_stays_in_ball_and_box(make, norm: str) -> None:
    x, y = batch()
    eps = 8 / 255 if norm == "linf" else 0.5
    adv = make(linear(), eps=eps, norm=norm)(x, y)
    assert adv.shape == x.shape and adv.dtype == x.dtype
    assert float(adv.min()) >= 0 and float(adv.max()) <= 1
    assert bool((norms(adv - x, norm) <= eps + 1e-6).all())


def test_restores_mode_and_requires_grad() -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.Dropout(0.5), nn.Linear(8, 4))
    model.train()
    model[1].weight.requires_grad_(False)  # a user's frozen layer stays frozen
    x, y = batch()
    PGD(model, steps=2)(x, y)
    assert model.training
    assert [p.requires_grad for p in model.parameters()] == [False, True, True, True]
    with pytest.raises(RuntimeError), frozen(model):
        assert not model.training
        raise RuntimeError("boom")
    assert model.training and model[3].weight.requires_grad


def test_normalisation_inside_the_model() -> None:
    inner = linear()
    model = Normalized(inner, [0.5], [0.25])
    x, y = batch()
    adv = PGD(model, eps=0.1, steps=5)(x, y)
    assert float((adv - x).abs().max()) <= 0.1 + 1e-6  # the ball is in pixel space
    assert (model(adv).argmax(1) != y).float().mean() >= (model(x).argmax(1) != y).float().mean()


def test_pgd_reaches_the_linear_worst_case() -> None:
    """For z = Wx + b the CW margin's maximum over the L-inf ball (ignoring the box) moves x by
    eps * sign(w_j - w_y) toward the best wrong class j: PGD finds every point that flips."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 2))
    x = 0.25 + 0.5 * torch.rand(200, 1, 4, 4)  # far from the box's edges
    y = model(x).argmax(1)
    eps = 0.25  # x lies in [0.25, 0.75]: the box never binds
    w = model[1].weight.detach()
    margin = (model(x)[torch.arange(200), y] - model(x)[torch.arange(200), 1 - y]).detach()
    reach = eps * (w[1 - y] - w[y]).abs().sum(1)
    should_flip = margin < reach - 1e-4
    adv = PGD(model, eps=eps, alpha=eps / 4, steps=20, loss="cw")(x, y)
    flipped = model(adv).argmax(1) != y
    assert torch.equal(flipped, should_flip) and 0 < int(should_flip.sum()) < 200


def test_targeted_reaches_the_target() -> None:
    torch.manual_seed(0)
    model = linear()
    x, y = batch(64)
    target = (y + 1) % 4
    adv = PGD(model, eps=1.0, alpha=0.1, steps=40, targeted=True)(x, y, target)
    assert float((model(adv).argmax(1) == target).float().mean()) > 0.95
    with pytest.raises(InputError, match="target"):
        PGD(model, targeted=True)(x, y)


def test_objectives_by_hand() -> None:
    z = torch.tensor([[3.0, 1.0, 2.0, 0.0]])
    y = torch.tensor([0])
    assert float(cw(z, y)) == -1.0  # max other (2) - z_y (3)
    assert float(dlr(z, y)) == pytest.approx(-(3 - 2) / (3 - 1))
    assert float(cw(z, y, torch.tensor([1]))) == 1.0 - 3.0
    assert float(dlr(z, y, torch.tensor([2]))) == pytest.approx(-(3 - 2) / (3 - 0.5))
    assert float(ce(z, y)) == pytest.approx(float(-torch.log_softmax(z, 1)[0, 0]))


def test_project_l2_and_parse_eps() -> None:
    d = torch.tensor([[3.0, 4.0], [0.3, 0.4]])
    p = project(d, 1.0, "l2")
    assert torch.allclose(p[0], torch.tensor([0.6, 0.8])) and torch.equal(p[1], d[1])
    assert parse_eps("8/255") == pytest.approx(8 / 255) and parse_eps(0.5) == 0.5
    with pytest.raises(InputError):
        parse_eps("eight")
    with pytest.raises(InputError):
        parse_eps(-1)


def test_restarts_keep_the_best_and_seed_is_deterministic() -> None:
    model = linear()
    x, y = batch()
    a = PGD(model, steps=3, restarts=3, seed=4)(x, y)
    b = PGD(model, steps=3, restarts=3, seed=4)(x, y)
    assert torch.equal(a, b)
    one = (model(PGD(model, steps=3, restarts=1)(x, y)).argmax(1) != y).sum()
    three = (model(a).argmax(1) != y).sum()
    assert three >= one


def test_bad_inputs() -> None:
    model = linear()
    x, y = batch()
    with pytest.raises(InputError, match=r"\[0, 1\]"):
        PGD(model)(x * 5, y)
    with pytest.raises(InputError, match="labels"):
        PGD(model)(x, y[:3])
    with pytest.raises(InputError, match="norm"):
        PGD(model, norm="l1")
    with pytest.raises(InputError, match="loss"):
        PGD(model, loss="hinge")
    assert torch.equal(PGD(model, eps=0)(x, y), x)


def test_named_attacks_scale_their_step_with_eps() -> None:
    """`make_attack("pgd"|"pgd-cw"|"sgm")` take the step eps/4 (2/255 at 8/255): at a large eps
    20 steps reach the edge of the ball (with the old fixed 2/255 about a quarter of the pixels
    did, from a random start)."""
    import torch
    from torch import nn

    from trustlab.attacks.evasion.pgd import step_size
    from trustlab.attacks.evasion.suite import make_attack

    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 4))
    x = torch.full((6, 3, 8, 8), 0.5)
    y = torch.arange(6) % 4
    for name in ("pgd", "pgd-cw"):
        atk = make_attack(name, model, eps=0.3)
        assert atk.alpha == pytest.approx(0.075)
        delta = (atk(x, y) - x).abs()
        assert float((delta > 0.3 - 1e-6).float().mean()) > 0.99, name
    assert make_attack("pgd", model, eps="8/255").alpha == pytest.approx(2 / 255)
    assert step_size(None, 0.1, 10) == pytest.approx(0.01)
    assert step_size("eps/10", 0.5, 20) == pytest.approx(0.05)
    assert step_size("2/255", 0.5, 20) == pytest.approx(2 / 255)
    with pytest.raises(InputError):
        step_size("eps/0", 0.5, 20)
