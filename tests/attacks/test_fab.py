"""FAB-T: the batched projections against scipy (an LP for L-inf, SLSQP for L2), the exact
minimal distance on a linear model, the threat model and its bookkeeping on a digits CNN,
seeds, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from trustlab.attacks.evasion.base import norms
from trustlab.attacks.evasion.fab import FABT, project_l2, project_linf
from trustlab.data import load_dataset
from trustlab.errors import InputError
from trustlab.models.spec import ModelSpec
from trustlab.train.trainer import fit

optimize = pytest.importorskip("scipy.optimize")


def cases(d: int, n: int, seed: int, feasible: bool = True):
    """Rows ``t`` in the box, hyperplanes ``<w, z> = b`` through a box point (feasible) or far
    from the box; some weights exactly zero."""
    g = torch.Generator().manual_seed(seed)
    t = torch.rand(n, d, generator=g, dtype=torch.float64)
    w = torch.randn(n, d, generator=g, dtype=torch.float64)
    w[torch.rand(n, d, generator=g) < 0.2] = 0
    b = (w * torch.rand(n, d, generator=g, dtype=torch.float64)).sum(1)
    if not feasible:
        b = b + torch.sign(b + 1e-9) * (w.abs().sum(1) + 1)  # beyond every box point
    return t, w, b


def test_linf_projection_is_the_lp_optimum() -> None:
    t, w, b = cases(7, 40, seed=0)
    d = project_linf(t, w, b)
    assert torch.allclose((w * (t + d)).sum(1), b, atol=1e-9)  # on the hyperplane
    assert bool(((t + d) >= -1e-12).all() and ((t + d) <= 1 + 1e-12).all())  # in the box
    assert bool((d[w == 0] == 0).all())
    for i in range(t.shape[0]):  # min s  s.t.  -s <= d_j <= s, <w, d> = b - <w, t>, box
        tn, wn = t[i].numpy(), w[i].numpy()
        k = tn.size
        cost = np.r_[np.zeros(k), 1.0]
        eye = np.eye(k)
        a_ub = np.block([[eye, -np.ones((k, 1))], [-eye, -np.ones((k, 1))]])
        res = optimize.linprog(
            cost,
            A_ub=a_ub,
            b_ub=np.zeros(2 * k),
            A_eq=np.r_[wn, 0.0][None],
            b_eq=[float(b[i]) - wn @ tn],
            bounds=[*zip(-tn, 1 - tn, strict=True), (0, None)],
            method="highs",
        )
        assert res.status == 0
        assert float(d[i].abs().max()) == pytest.approx(res.fun, abs=1e-8)


def test_l2_projection_is_the_qp_optimum() -> None:
    t, w, b = cases(6, 30, seed=1)
    d = project_l2(t, w, b)
    assert torch.allclose((w * (t + d)).sum(1), b, atol=1e-9)
    big = 1e4  # the constraint as a heavily weighted least-squares row: bounded LSQ (BVLS)
    for i in range(t.shape[0]):
        tn, wn = t[i].numpy(), w[i].numpy()
        rows = np.vstack([np.eye(tn.size), big * wn[None]])
        rhs = np.r_[np.zeros(tn.size), big * (float(b[i]) - wn @ tn)]
        res = optimize.lsq_linear(rows, rhs, bounds=(-tn, 1 - tn), method="bvls", tol=1e-14)
        assert res.success
        np.testing.assert_allclose(d[i].numpy(), res.x, atol=1e-6)


@pytest.mark.parametrize("project", [project_linf, project_l2])
def test_projection_when_the_hyperplane_misses_the_box(project) -> None:
    """Every coordinate goes to the box face toward the hyperplane (the box's closest point)."""
    t, w, b = cases(5, 8, seed=2, feasible=False)
    d = project(t, w, b)
    down = torch.where((w * t).sum(1, keepdim=True) > b[:, None], w > 0, w < 0)
    corner = torch.where(down, 0.0, 1.0).to(t)
    expect = torch.where(w == 0, t, corner)
    assert torch.allclose(t + d, expect, atol=1e-12)


def test_linear_model_finds_the_minimal_distance() -> None:
    """A linear 2-class model: the closest misclassified point is at L-inf distance
    ``|f(x)| / ||w||_1`` (L2: ``|f(x)| / ||w||_2``) when the box does not bind; FAB-T's backward
    steps close in on it."""
    torch.manual_seed(0)
    lin = nn.Linear(16, 2)
    model = nn.Sequential(nn.Flatten(), lin)
    x = 0.49 + 0.02 * torch.rand(6, 1, 4, 4)
    with torch.no_grad():  # the boundary passes at L-inf distance ~0.05 from x: the box is far
        wdiff = lin.weight[1] - lin.weight[0]
        lin.bias[1] = lin.bias[0] - 0.5 * wdiff.sum() + 0.05 * wdiff.abs().sum()
        y = model(x).argmax(1)
        gap = (model(x)[:, 1] - model(x)[:, 0]).abs()
    for norm, dual in (("linf", 1), ("l2", 2)):
        true = gap / wdiff.norm(p=dual)
        move = true if norm == "linf" else true * wdiff.abs().max() / wdiff.norm()
        assert float(move.max()) < 0.4  # the largest coordinate move stays inside the box
        atk = FABT(model, eps=1.0, norm=norm, steps=30)
        adv = atk(x, y)
        assert bool((model(adv).argmax(1) != y).all())
        assert torch.allclose(atk.distance_, true, rtol=0.01)
        assert bool((atk.distance_ >= true * (1 - 1e-5)).all())


@pytest.fixture(scope="module")
def digits():
    """cnn-small trained 3 epochs on the built-in digits, 48 test points."""
    torch.set_num_threads(1)
    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    torch.manual_seed(0)
    net = ModelSpec.for_data("cnn-small", train).build()
    fit(net, train, epochs=3, lr=0.05, batch_size=32, seed=0)
    net.eval()
    return net, test.x[:48], test.y[:48]


def test_fab_t_on_digits(digits) -> None:
    model, x, y = digits
    eps = 0.1
    atk = FABT(model, eps=eps, steps=20, n_target_classes=3)
    adv = atk(x, y)
    with torch.no_grad():
        clean, pred = model(x).argmax(1), model(adv).argmax(1)
    size = norms(adv - x, "linf")
    assert float(size.max()) <= eps + 1e-6 and float(adv.min()) >= 0 and float(adv.max()) <= 1
    moved = size > 0
    assert bool((pred[moved] != y[moved]).all())  # every returned change is misclassified
    unbroken = pred == y
    assert torch.equal(adv[unbroken], x[unbroken])  # what it cannot break comes back unchanged
    assert bool((~moved[clean != y]).all())  # misclassified points are not attacked
    acc, robust = float((clean == y).float().mean()), float(unbroken.float().mean())
    assert acc > 0.85 and robust < acc - 0.3, (acc, robust)
    # distance_: the closest misclassified point found, within eps exactly where it broke
    broke = moved & (clean == y)
    assert torch.allclose(atk.distance_[broke], size[broke])
    assert bool((atk.distance_[unbroken] > eps).all())


def test_same_seed_same_result_and_restarts(digits) -> None:
    model, x, y = digits
    x, y = x[:12], y[:12]
    kw = {"eps": 0.05, "steps": 4, "n_target_classes": 2, "restarts": 2}
    a, b = FABT(model, **kw)(x, y), FABT(model, **kw)(x, y)
    assert torch.equal(a, b)
    kw["restarts"] = 1  # the run starts at the clean point: no random numbers, seed irrelevant
    assert torch.equal(FABT(model, **kw)(x, y), FABT(model, **kw, seed=3)(x, y))


def test_l2_and_few_classes() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 12), nn.ReLU(), nn.Linear(12, 3))
    g = torch.Generator().manual_seed(1)
    x, y = torch.rand(12, 1, 4, 4, generator=g), torch.randint(0, 3, (12,), generator=g)
    adv = FABT(model, eps=0.5, norm="l2", steps=10)(x, y)  # 9 targets capped at K - 1 = 2
    assert float(norms(adv - x, "l2").max()) <= 0.5 + 1e-6


def test_bad_input() -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 4))
    x, y = torch.rand(2, 1, 4, 4), torch.tensor([0, 1])
    for kw in ({"steps": 0}, {"n_target_classes": 0}, {"beta": 1.0}, {"eta": 0.9}, {"norm": "l1"}):
        with pytest.raises(InputError):
            FABT(model, **kw)
    with pytest.raises(InputError):
        FABT(model)(x * 2, y)  # outside [0, 1]
    with pytest.raises(InputError):
        FABT(model)(x, y.float())
    one_class = nn.Sequential(nn.Flatten(), nn.Linear(16, 1))
    with pytest.raises(InputError, match="at least 2 classes"):
        FABT(one_class)(x, torch.tensor([0, 0]))
