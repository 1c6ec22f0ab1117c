"""MGDA's min-norm weights (closed form, Frank-Wolfe) and fixed weights."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from trustlab.errors import InputError
from trustlab.train.balance import MGDA, FixedWeights, min_norm_weights, min_norm_weights_from_gram


@pytest.mark.parametrize(
    "g1, g2, want",
    [
        ([1.0, 0.0], [0.0, 1.0], 0.5),  # orthogonal, equal norms: the midpoint
        ([1.0, 0.0], [2.0, 0.0], 1.0),  # the shorter one is the min-norm point
        ([3.0, 0.0], [1.0, 0.0], 0.0),
        ([1.0, 0.0], [-1.0, 0.0], 0.5),  # opposite: they cancel
        ([2.0, 0.0], [0.0, 1.0], 0.2),  # a = (g2.g2 - g1.g2) / |g1 - g2|^2 = 1 / 5
    ],
)
def test_two_tasks_closed_form(g1, g2, want) -> None:
    w = min_norm_weights([torch.tensor(g1), torch.tensor(g2)])
    assert float(w[0]) == pytest.approx(want, abs=1e-6)
    assert float(w.sum()) == pytest.approx(1.0)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_three_tasks_is_the_min_norm_point(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    grads = torch.randn(3, 5, generator=g, dtype=torch.float64)
    w = min_norm_weights(list(grads)).double()
    assert (w >= -1e-9).all() and float(w.sum()) == pytest.approx(1.0)
    ours = float((w @ grads).norm())
    steps = 400  # brute force: every point of a simplex grid of step 1/400
    ab = (
        torch.tensor(
            [(a, b) for a, b in itertools.product(range(steps + 1), repeat=2) if a + b <= steps],
            dtype=torch.float64,
        )
        / steps
    )
    grid = torch.cat([ab, 1 - ab.sum(1, keepdim=True)], 1)  # (M, 3)
    best = float((grid @ grads).norm(dim=1).min())
    assert ours <= best + 1e-6


def test_gram_edge_cases() -> None:
    assert min_norm_weights_from_gram(torch.ones(1, 1)).tolist() == [1.0]
    with pytest.raises(InputError, match="square"):
        min_norm_weights_from_gram(torch.ones(2, 3))


def test_mgda_and_fixed_weights_combine_losses() -> None:
    torch.manual_seed(0)
    model = nn.Linear(4, 2)
    x = torch.randn(8, 4)
    out = model(x)
    losses = [out[:, 0].pow(2).mean(), (out[:, 1] - 1).pow(2).mean()]
    total, w = MGDA(model)(losses)
    assert float(w.sum()) == pytest.approx(1.0) and total.requires_grad
    total.backward()
    assert model.weight.grad is not None
    out = model(x)
    total, w = FixedWeights([1.0, 0.5])([out.sum(), out.mean()])
    assert w.tolist() == [1.0, 0.5]
    assert float(total.detach()) == pytest.approx(float((out.sum() + 0.5 * out.mean()).detach()))
    with pytest.raises(InputError, match="2 weights for 1 losses"):
        FixedWeights([1.0, 0.5])([out.sum()])
    with pytest.raises(InputError, match="normalisation"):
        MGDA(model, normalize="max")


@pytest.mark.parametrize("normalize", ["none", "l2", "loss", "loss+"])
def test_normalisations(normalize: str) -> None:
    torch.manual_seed(0)
    model = nn.Linear(3, 1, bias=False)
    x = torch.randn(16, 3)
    out = model(x).squeeze(1)
    losses = [(out - 1).pow(2).mean(), 10 * (out + 1).pow(2).mean()]
    w = MGDA(model, normalize).weights(losses)
    assert float(w.sum()) == pytest.approx(1.0) and (w >= 0).all()
    if normalize == "l2":  # near-unit vectors: the min-norm point of two is the midpoint
        assert w.tolist() == pytest.approx([0.5, 0.5], abs=1e-4)


def _two_tasks(loss1: float, loss2: float, norm1: float = 1.0, norm2: float = 1.0):
    """Two losses of values ``loss1``, ``loss2`` whose gradients are orthogonal, of norms
    ``norm1``, ``norm2`` (at w = 0)."""
    w = nn.Parameter(torch.zeros(2))
    return w, [loss1 + norm1 * w[0], loss2 + norm2 * w[1]]


def _orthogonal_weight(s1: float, s2: float) -> float:
    """The min-norm weight of the first of two orthogonal vectors of norms ``s1``, ``s2``."""
    return s2**2 / (s1**2 + s2**2)


def test_loss_normalisers_are_capped_at_10_as_the_authors() -> None:
    # backdoors101 gradient_normalizers: min(loss, 10) and min(loss * |g|, 10), then + 1e-5
    w, losses = _two_tasks(20.0, 30.0)  # both above the cap: equal divisors, equal weights
    assert MGDA([w], "loss").weights(losses).tolist() == pytest.approx([0.5, 0.5], abs=1e-6)
    w, losses = _two_tasks(5.0, 30.0)  # divisors 5 and 10
    want = _orthogonal_weight(1 / (5 + 1e-5), 1 / (10 + 1e-5))
    assert float(MGDA([w], "loss").weights(losses)[0]) == pytest.approx(want, abs=1e-6)
    w, losses = _two_tasks(2.0, 3.0, norm1=2.0, norm2=4.0)  # loss * |g| = 4 and 12 -> 4 and 10
    want = _orthogonal_weight(2 / (4 + 1e-5), 4 / (10 + 1e-5))
    assert float(MGDA([w], "loss+").weights(losses)[0]) == pytest.approx(want, abs=1e-6)
    # a vanishing loss: the + 1e-5 decides the divisor (1e-5 + 1e-5, not 1e-5)
    w, losses = _two_tasks(1e-5, 1.0, norm1=1e-5, norm2=1.0)
    want = _orthogonal_weight(1e-5 / (1e-5 + 1e-5), 1 / (1 + 1e-5))
    got = float(MGDA([w], "loss").weights(losses)[0])
    assert got == pytest.approx(want, rel=1e-4) and got == pytest.approx(0.8, rel=1e-3)


def test_l2_adds_the_authors_1e_5_so_a_vanishing_gradient_is_not_scaled_to_unit_norm() -> None:
    w, losses = _two_tasks(1.0, 1.0, norm1=1.0, norm2=1e-5)  # normalised norms ~1 and 0.5
    want = _orthogonal_weight(1 / (1 + 1e-5), 1e-5 / (1e-5 + 1e-5))
    got = MGDA([w], "l2").weights(losses)
    assert float(got[0]) == pytest.approx(want, abs=1e-5) and float(got[0]) < 0.25


def test_loss_normalisers_refuse_negative_losses() -> None:
    w, losses = _two_tasks(-1.0, 1.0)
    with pytest.raises(InputError, match="must be >= 0"):
        MGDA([w], "loss").weights(losses)
