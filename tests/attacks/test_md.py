"""MD / MDMT (Ma et al., imbalanced gradients): threat model, model state, normalisation inside,
linear models whose worst case is known, stage switching and cosine schedule, strength against
PGD-20 on a trained digits model, determinism, and the imbalanced-gradient diagnostic."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from trustlab.attacks.evasion import PGD
from trustlab.attacks.evasion import md as md_module
from trustlab.attacks.evasion.base import norms
from trustlab.attacks.evasion.md import (
    MD,
    MDMT,
    cosine_step,
    imbalance_ratio,
    margin_terms,
    stage_objective,
    stage_step,
)
from trustlab.data.datasets import load_dataset
from trustlab.errors import InputError
from trustlab.models import Normalized


def linear(k: int = 4, d: int = 16, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(d, k))


def batch(n: int = 32, d: int = 16, k: int = 4, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 4, d // 4, generator=g), torch.randint(0, k, (n,), generator=g)


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("make", [MD, MDMT])
def test_stays_in_ball_and_box(make, norm: str) -> None:
    x, y = batch()
    eps = 8 / 255 if norm == "linf" else 0.5
    adv = make(linear(), eps=eps, steps=6, switch=3, norm=norm)(x, y)
    assert adv.shape == x.shape and adv.dtype == x.dtype
    assert float(adv.min()) >= 0 and float(adv.max()) <= 1
    assert bool((norms(adv - x, norm) <= eps + 1e-6).all())


@pytest.mark.parametrize("make", [MD, MDMT])
def test_restores_mode_and_requires_grad(make) -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.Dropout(0.5), nn.Linear(8, 4))
    model.train()
    model[1].weight.requires_grad_(False)
    x, y = batch()
    make(model, steps=3, switch=2)(x, y)
    assert model.training
    assert [p.requires_grad for p in model.parameters()] == [False, True, True, True]
    imbalance_ratio(model, x, y)
    assert model.training
    assert [p.requires_grad for p in model.parameters()] == [False, True, True, True]


def test_normalisation_inside_the_model() -> None:
    model = Normalized(linear(), [0.5], [0.25])
    x, y = batch()
    adv = MD(model, eps=0.1, steps=10, switch=4)(x, y)
    assert float((adv - x).abs().max()) <= 0.1 + 1e-6
    assert (model(adv).argmax(1) != y).sum() >= (model(x).argmax(1) != y).sum()
    assert imbalance_ratio(model, x, y).shape == (32,)


def _linear_setup(k: int, n: int = 200, seed: int = 0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, k))
    x = 0.25 + 0.5 * torch.rand(n, 1, 4, 4)  # the box never binds for eps <= 0.25
    with torch.no_grad():
        z = model(x)
    y = z.argmax(1)
    w = model[1].weight.detach()
    # per wrong class j: margin z_y - z_j and the L-inf reach eps * ||w_j - w_y||_1
    margin = z.gather(1, y[:, None]) - z
    reach = (w[None, :, :] - w[y][:, None, :]).abs().sum(2)
    return model, x, y, w, margin, reach


def test_md_flips_exactly_the_linear_points_within_reach() -> None:
    """Two classes: the best L-inf move is eps * sign(w_j - w_y); a point flips iff its margin is
    below eps * ||w_j - w_y||_1. MD finds every such point and no other."""
    model, x, y, w, margin, reach = _linear_setup(2)
    eps = 0.25
    other = 1 - y
    m = margin.gather(1, other[:, None]).squeeze(1)
    r = eps * reach.gather(1, other[:, None]).squeeze(1)
    should_flip = m < r - 1e-4
    assert 0 < int(should_flip.sum()) < 200 and bool(((m - r).abs() > 1e-4).all())
    adv = MD(model, eps=eps, steps=20, switch=8)(x, y)
    flipped = model(adv).argmax(1) != y
    assert torch.equal(flipped, should_flip)
    # the points out of reach end at the analytic optimum x + eps * sign(w_j - w_y)
    analytic = x + eps * (w[other] - w[y]).sign().view_as(x)
    safe = ~should_flip
    assert torch.allclose(adv[safe], analytic[safe], atol=1e-6)


def test_mdmt_flips_exactly_the_linear_points_within_reach_three_classes() -> None:
    """Three classes: a point can be flipped iff some wrong class j has margin below
    eps * ||w_j - w_y||_1 (the box aside); MDMT targets each j, so it finds exactly those."""
    model, x, y, _, margin, reach = _linear_setup(3, n=300, seed=3)
    eps = 0.2
    gap = margin - eps * reach
    gap.scatter_(1, y[:, None], float("inf"))
    should_flip = (gap < -1e-4).any(1)
    assert 0 < int(should_flip.sum()) < 300
    adv = MDMT(model, eps=eps, steps=20, switch=8)(x, y)
    flipped = model(adv).argmax(1) != y
    assert torch.equal(flipped, should_flip)
    # MD's margin attack never flips a point out of reach, and finds most of those within
    flipped_md = model(MD(model, eps=eps, steps=20, switch=8)(x, y)).argmax(1) != y
    assert not bool((flipped_md & ~should_flip).any())
    assert int(flipped_md.sum()) >= 0.9 * int(should_flip.sum())


def test_cosine_schedule() -> None:
    eps = 0.1
    assert cosine_step(0, 10, eps) == pytest.approx(2 * eps)
    assert cosine_step(5, 10, eps) == pytest.approx(eps)
    assert cosine_step(10, 10, eps) == pytest.approx(0, abs=1e-12)
    sizes = [cosine_step(k, 10, eps) for k in range(10)]
    assert all(a > b for a, b in zip(sizes, sizes[1:], strict=False)) and sizes[-1] > 0
    assert cosine_step(3, 7, 1.0) == pytest.approx(1 + math.cos(math.pi * 3 / 7))
    # restarted at stage 2
    full = [stage_step(s, 50, 20, eps) for s in range(50)]
    assert full[0] == pytest.approx(2 * eps) and full[20] == pytest.approx(2 * eps)
    assert full[19] < 0.01 * eps * 2 and full[21] == pytest.approx(cosine_step(1, 30, eps))


def test_stage_objectives() -> None:
    assert stage_objective(0, 20, 0) == "z_y" and stage_objective(0, 20, 1) == "z_y"
    assert {stage_objective(s, 20, 0) for s in range(1, 20)} == {"-z_y"}
    assert {stage_objective(s, 20, 1) for s in range(1, 20)} == {"z_other"}
    assert {stage_objective(s, 20, 2) for s in range(1, 20)} == {"-z_y"}  # cycling
    assert {stage_objective(s, 20, r) for s in range(20, 50) for r in (0, 1)} == {"margin"}


def test_the_attack_uses_the_schedule_per_step(monkeypatch) -> None:
    """Instrument the pure functions: each run uses objective/step size of its stage in order."""
    calls: list[tuple[str, float]] = []
    real_obj, real_step = md_module.stage_objective, md_module.stage_step

    def obj(step, switch, run):
        name = real_obj(step, switch, run)
        calls.append(("obj", name, run, step))
        return name

    def size(step, steps, switch, eps):
        a = real_step(step, steps, switch, eps)
        calls.append(("step", a, step))
        return a

    monkeypatch.setattr(md_module, "stage_objective", obj)
    monkeypatch.setattr(md_module, "stage_step", size)
    model = linear()
    x, _ = batch()
    with torch.no_grad():
        z = model(x)
    top2 = z.topk(2, 1).values
    x = x[top2[:, 0] - top2[:, 1] > 0.05]  # clear margins
    with torch.no_grad():
        y = model(x).argmax(1)
    eps = 1e-3  # too small to fool anyone: both runs go the full length on the whole batch
    adv = MD(model, eps=eps, steps=6, switch=3)(x, y)
    assert not bool((model(adv).argmax(1) != y).any())
    names = [c[1] for c in calls if c[0] == "obj"]
    stage1 = {0: "-z_y", 1: "z_other"}
    assert names == [n for r in range(2) for n in ["z_y", stage1[r], stage1[r]] + ["margin"] * 3]
    assert [c[2] for c in calls if c[0] == "obj"] == [r for r in range(2) for _ in range(6)]
    sizes = [c[1] for c in calls if c[0] == "step"]
    one_run = [cosine_step(k, 3, eps) for k in range(3)] * 2
    assert sizes == pytest.approx(one_run * 2)


def test_margin_terms_by_hand() -> None:
    z = torch.tensor([[3.0, 1.0, 2.0, 0.0], [0.0, 5.0, 1.0, 4.0]])
    y = torch.tensor([0, 1])
    z_y, z_max = margin_terms(z, y)
    assert z_y.tolist() == [3.0, 5.0] and z_max.tolist() == [2.0, 4.0]
    _, z_t = margin_terms(z, y, torch.tensor([3, 0]))
    assert z_t.tolist() == [0.0, 0.0]


def _digits_model():
    torch.manual_seed(0)
    ds = load_dataset("digits", "train")
    x, y = ds.x[:600], ds.y[:600]
    model = nn.Sequential(nn.Flatten(), nn.Linear(x[0].numel(), 64), nn.ReLU(), nn.Linear(64, 10))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(60):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    model.eval()
    test = load_dataset("digits", "test")
    return model, test.x[:200], test.y[:200]


def test_md_at_least_as_strong_as_pgd20_on_digits() -> None:
    model, x, y = _digits_model()
    assert float((model(x).argmax(1) == y).float().mean()) > 0.8
    eps = 0.05
    pgd = PGD(model, eps=eps, alpha=eps / 4, steps=20)(x, y)
    md = MD(model, eps=eps)(x, y)
    acc_pgd = float((model(pgd).argmax(1) == y).float().mean())
    acc_md = float((model(md).argmax(1) == y).float().mean())
    assert acc_md <= acc_pgd + 0.005
    acc_mdmt = float(
        (model(MDMT(model, eps=eps, steps=20, switch=8)(x, y)).argmax(1) == y).float().mean()
    )
    assert acc_mdmt <= acc_pgd + 0.005
    r = imbalance_ratio(model, x, y)
    assert r.shape == (200,) and bool((r >= 1).all()) and bool(torch.isfinite(r).all())


def test_determinism_by_seed() -> None:
    model = linear()
    x, y = batch()
    a = MD(model, eps=0.05, steps=6, switch=3, seed=7)(x, y)
    b = MD(model, eps=0.05, steps=6, switch=3, seed=7)(x, y)
    assert torch.equal(a, b)
    c = MD(model, eps=0.05, steps=6, switch=3, seed=8)(x, y)
    assert not torch.equal(a, c)
    assert torch.equal(
        MDMT(model, eps=0.05, steps=4, switch=2)(x, y),
        MDMT(model, eps=0.05, steps=4, switch=2)(x, y),
    )


def test_imbalance_ratio_on_a_linear_model() -> None:
    model = linear(k=4)
    x, y = batch(16)
    w = model[1].weight.detach()
    with torch.no_grad():
        z = model(x)
    j = z.scatter(1, y[:, None], float("-inf")).argmax(1)
    raw = w[y].norm(dim=1) / w[j].norm(dim=1)
    assert torch.allclose(imbalance_ratio(model, x, y, symmetric=False), raw, rtol=1e-5)
    assert torch.allclose(imbalance_ratio(model, x, y), torch.maximum(raw, 1 / raw), rtol=1e-5)


def test_bad_inputs() -> None:
    model = linear()
    x, y = batch()
    with pytest.raises(InputError, match="switch"):
        MD(model, steps=10, switch=11)
    with pytest.raises(InputError, match="switch"):
        MD(model, switch=0)
    with pytest.raises(InputError, match="restarts"):
        MD(model, restarts=0)
    with pytest.raises(InputError, match="n_target_classes"):
        MDMT(model, n_target_classes=0)
    with pytest.raises(InputError, match=r"\[0, 1\]"):
        MD(model)(x * 5, y)
    with pytest.raises(InputError, match="labels"):
        imbalance_ratio(model, x, y[:3])
    assert torch.equal(MD(model, eps=0)(x, y), x)
