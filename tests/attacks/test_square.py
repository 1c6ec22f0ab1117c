"""Square Attack: the p schedule and the L2 bump by hand, the proposals' geometry, the threat
model (eps ball, [0, 1], scores only: no gradient anywhere), the query budget and early stop,
seeds, bad input, and strength on a small trained digits CNN."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from trustlab.attacks.evasion.base import norms
from trustlab.attacks.evasion.square import (
    Square,
    meta_pseudo_gaussian,
    p_selection,
    pseudo_gaussian_rectangle,
)
from trustlab.data import load_dataset
from trustlab.errors import InputError
from trustlab.utils.seed import generator


def mlp(k: int = 5, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(2 * 8 * 8, 16), nn.ReLU(), nn.Linear(16, k))


def correct_batch(model: nn.Module, n: int = 12, seed: int = 1):
    """Random (n, 2, 8, 8) images labelled with the model's own predictions (all correct)."""
    x = torch.rand(n, 2, 8, 8, generator=generator(seed))
    with torch.no_grad():
        return x, model(x).argmax(1)


class Counting(nn.Module):
    """Counts the rows each forward sees; refuses to run with autograd on."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner, self.rows, self.calls = inner, 0, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert not torch.is_grad_enabled(), "a score-based attack runs under no_grad"
        self.rows += x.shape[0]
        self.calls += 1
        return self.inner(x)


@pytest.fixture(scope="module")
def digits():
    """cnn-small trained 2 epochs on digits + the first 48 test points."""
    from trustlab.models.spec import ModelSpec
    from trustlab.train import Trainer, TrainSettings

    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    torch.manual_seed(0)
    model = ModelSpec.for_data("cnn-small", train).build()
    Trainer(model, TrainSettings(epochs=2, lr=0.05, batch_size=64), progress=False).fit(train)
    model.eval()
    return model, test.x[:48], test.y[:48]


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


# -- pieces by hand ---------------------------------------------------------------------------
def test_p_schedule_by_hand() -> None:
    # halved after iterations 10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000 (strictly after)
    assert p_selection(0.8, 0, 5000) == 0.8
    assert p_selection(0.8, 10, 5000) == 0.8
    assert p_selection(0.8, 11, 5000) == 0.4
    assert p_selection(0.8, 50, 5000) == 0.4
    assert p_selection(0.8, 51, 5000) == 0.2
    assert p_selection(0.8, 4999, 5000) == 0.8 / 128  # AutoAttack's standard: no rescaling
    assert p_selection(0.8, 9000, 20000) == 0.8 / 512
    # rescaled: iteration it -> int(it / n_queries * 10000); 1000 queries -> x10
    assert p_selection(0.8, 1, 1000, rescale=True) == 0.8  # 10
    assert p_selection(0.8, 2, 1000, rescale=True) == 0.4  # 20
    assert p_selection(0.8, 999, 1000, rescale=True) == 0.8 / 512  # 9990


def test_l2_bump_by_hand() -> None:
    # 3x3: ring 0 (centre) gets 1 + 1/4, ring 1 (the rest) 1/4, then unit norm
    r = pseudo_gaussian_rectangle(3, 3)
    expect = torch.full((3, 3), 0.25, dtype=torch.float64)
    expect[1, 1] = 1.25
    assert torch.allclose(r, expect / expect.norm())
    # 1x3: rings of the 3-wide side reach the ends; centre 1 + 1/4, ends 1/4
    row = pseudo_gaussian_rectangle(1, 3)[0]
    assert torch.allclose(row / row[0], torch.tensor([1.0, 5.0, 1.0], dtype=torch.float64))
    for s in (1, 3, 5, 8):
        m = meta_pseudo_gaussian(s)
        assert m.shape == (s, s) and float(m.norm()) == pytest.approx(1.0)
        assert bool((m[: s // 2] >= 0).all()) and bool((m[s // 2 :] <= 0).all())
    m = meta_pseudo_gaussian(6)  # even side: the two halves mirror each other
    assert torch.allclose(m[:3], -m[3:])


def test_linf_proposal_changes_one_square_window_to_the_ball_corners() -> None:
    atk = Square(nn.Identity(), eps=0.1, norm="linf")
    x = torch.full((20, 3, 12, 12), 0.5)
    best = x + 0.1 * torch.randn(x.shape, generator=generator(0)).sign()
    p = 0.1  # side round(sqrt(.1 * 144)) = 4
    new = atk._propose_linf(x, best, p, generator(1))
    changed = (new != best).any(1)  # (20, 12, 12)
    for i in range(20):
        rows, cols = changed[i].nonzero(as_tuple=True)
        if rows.numel():
            assert int(rows.max() - rows.min()) < 4 and int(cols.max() - cols.min()) < 4
    assert torch.allclose((new - x).abs(), torch.full_like(x, 0.1))  # every pixel at +-eps
    # per-sample positions: the windows are not all in the same place
    tops = {int(changed[i].nonzero()[:, 0].min()) for i in range(20) if changed[i].any()}
    assert len(tops) > 1


def test_l2_proposal_moves_mass_and_keeps_the_radius() -> None:
    atk = Square(nn.Identity(), eps=1.0, norm="l2")
    x = torch.full((16, 2, 15, 15), 0.5, dtype=torch.float64)
    d = torch.randn(x.shape, generator=generator(0), dtype=torch.float64)
    best = x + 0.6 * d / norms(d, "l2").view(-1, 1, 1, 1)
    new = atk._propose_l2(x, best, 0.1, generator(1))  # side 5
    assert torch.allclose(norms(new - x, "l2"), torch.ones(16, dtype=torch.float64))
    # up to a per-sample rescale, only two 5x5 windows changed (window 2 set to zero)
    ratio = ((new - x) / (best - x)).flatten(1)
    scale = ratio.median(1).values[:, None]
    moved = ((ratio - scale).abs() > 1e-9).view(16, 2, 15, 15).any(1)
    assert int(moved.flatten(1).sum(1).max()) <= 2 * 25
    assert int(moved.flatten(1).sum(1).min()) >= 25


# -- threat model -------------------------------------------------------------------------------
@pytest.mark.parametrize(("norm", "eps"), [("linf", 0.2), ("l2", 1.5)])
def test_stays_in_the_ball_and_the_box(norm: str, eps: float) -> None:
    model = mlp()
    x, y = correct_batch(model)
    adv = Square(model, eps=eps, norm=norm, n_queries=150)(x, y)
    assert adv.shape == x.shape and adv.dtype == x.dtype and not adv.requires_grad
    assert float(adv.min()) >= 0 and float(adv.max()) <= 1
    assert float(norms(adv - x, norm).max()) <= eps + 1e-6
    assert (adv != x).flatten(1).any(1).all()  # every point was searched


def test_uses_only_scores_never_gradients(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("Square must not compute gradients")

    monkeypatch.setattr(torch.Tensor, "backward", refuse)
    monkeypatch.setattr(torch.autograd, "grad", refuse)
    inner = mlp()

    class BlackBox(nn.Module):  # scores through NumPy: no autograd graph can pass
        def __init__(self) -> None:
            super().__init__()
            self.net = inner

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            assert not torch.is_grad_enabled() and not x.requires_grad
            return torch.from_numpy(self.net(x).numpy().copy())

    model = BlackBox()
    x, y = correct_batch(inner)
    for norm, eps in (("linf", 0.2), ("l2", 1.5)):
        adv = Square(model, eps=eps, norm=norm, n_queries=60)(x, y)
        assert accuracy(inner, adv, y) < 1.0
    assert all(p.grad is None and p.requires_grad for p in inner.parameters())


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_query_budget_and_early_stop(norm: str) -> None:
    inner = mlp()
    x, y = correct_batch(inner, n=10)
    model = Counting(inner)
    atk = Square(model, eps=0.3 if norm == "linf" else 2.0, norm=norm, n_queries=40)
    adv = atk(x, y)
    q = atk.queries_
    assert q.shape == (10,) and int(q.min()) >= 1 and int(q.max()) <= 40
    # one clean query per sample, then exactly the queries counted, batched over samples
    assert model.rows == 10 + int(q.sum())
    assert model.calls <= 1 + 40
    with torch.no_grad():
        fooled = inner(adv).argmax(1) != y
    assert bool(fooled.any())
    assert bool((q[~fooled] == 40).all())  # still robust: the whole budget
    assert bool((q[fooled] < 40).all()) or int(fooled.sum()) == 0  # fooled: stopped early
    # n_queries=1: only the initial point
    one = Square(inner, eps=0.3, norm=norm, n_queries=1)
    one(x, y)
    assert int(one.queries_.max()) == 1


def test_restarts_run_on_the_robust_points_only() -> None:
    inner = mlp()
    x, y = correct_batch(inner, n=10)
    atk = Square(inner, eps=0.05, n_queries=20, restarts=3)
    atk(x, y)
    assert int(atk.queries_.max()) <= 60 and int(atk.queries_.min()) >= 1


def test_misclassified_inputs_come_back_unchanged() -> None:
    model = mlp()
    x, y = correct_batch(model, n=8)
    wrong = (y + 1) % 5
    y_mixed = torch.where(torch.arange(8) < 4, wrong, y)
    atk = Square(model, eps=0.2, n_queries=30)
    adv = atk(x, y_mixed)
    assert torch.equal(adv[:4], x[:4]) and bool((atk.queries_[:4] == 0).all())
    assert bool((atk.queries_[4:] >= 1).all())


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_same_seed_same_result(norm: str) -> None:
    model = mlp()
    x, y = correct_batch(model)
    eps = 0.1 if norm == "linf" else 0.8
    a = Square(model, eps=eps, norm=norm, n_queries=50, seed=3)(x, y)
    b = Square(model, eps=eps, norm=norm, n_queries=50, seed=3)(x, y)
    c = Square(model, eps=eps, norm=norm, n_queries=50, seed=4)(x, y)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_bad_input_is_refused() -> None:
    model = mlp()
    with pytest.raises(InputError, match="norm"):
        Square(model, norm="l1")
    for p in (0.0, -0.1, 1.5):
        with pytest.raises(InputError, match="p_init"):
            Square(model, p_init=p)
    for n in (0, -3, 2.5):
        with pytest.raises(InputError, match="n_queries"):
            Square(model, n_queries=n)
    with pytest.raises(InputError, match="restarts"):
        Square(model, restarts=0)
    with pytest.raises(InputError, match="loss"):
        Square(model, loss="dlr")
    with pytest.raises(InputError, match=r"\(N, C, H, W\)"):
        Square(mlp(), eps=0.1)(torch.rand(2, 2, 1, 8, 8), torch.zeros(2, dtype=torch.long))
    assert Square(model, p_init=1.0).p_init == 1.0


# -- strength -------------------------------------------------------------------------------------
def test_lowers_accuracy_of_a_trained_digits_cnn(digits) -> None:
    model, x, y = digits
    clean = accuracy(model, x, y)
    assert clean > 0.8
    atk = Square(model, eps=0.1, norm="linf", n_queries=200)
    adv = atk(x, y)
    assert accuracy(model, adv, y) < clean - 0.3  # measured: 0.96 -> 0.54
    assert float((adv - x).abs().max()) <= 0.1 + 1e-6
    l2 = Square(model, eps=1.0, norm="l2", n_queries=100)
    assert accuracy(model, l2(x, y), y) < clean - 0.25  # measured: 0.96 -> 0.54
