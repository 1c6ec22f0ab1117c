"""SGM, MI-FGSM, DI and the transfer evaluation."""

from __future__ import annotations

import contextlib

import pytest
import torch
from torch import nn

from trustlab.attacks.evasion import (
    DIFGSM,
    FGSM,
    MIFGSM,
    PGD,
    SGM,
    evaluate_transfer,
    skip_gradient,
)
from trustlab.attacks.evasion.diversity import input_diversity
from trustlab.attacks.evasion.suite import make_attack
from trustlab.data import ArrayDataset
from trustlab.errors import InputError
from trustlab.models import create_model


class Block(nn.Module):
    """``out = x + tanh(A x)``: the residual branch is the sub-module ``residual``."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.residual = nn.Sequential(nn.Linear(d, d, bias=False), nn.Tanh())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.residual(x)


class ToyResNet(nn.Module):
    def __init__(self, d: int = 5, k: int = 3) -> None:
        super().__init__()
        self.block1, self.block2 = Block(d), Block(d)
        self.head = nn.Linear(d, k, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.block2(self.block1(x)))


def _hand_gradient(net: ToyResNet, x: torch.Tensor, c: int, gamma: float) -> torch.Tensor:
    """d z_c / d x with each branch's Jacobian scaled by gamma, by the chain rule by hand."""
    a1, a2 = net.block1.residual[0].weight, net.block2.residual[0].weight
    x1 = x + torch.tanh(x @ a1.T)
    j1 = (1 - torch.tanh(x @ a1.T) ** 2)[:, :, None] * a1  # (N, d, d): d tanh(A1 x) / dx
    j2 = (1 - torch.tanh(x1 @ a2.T) ** 2)[:, :, None] * a2
    eye = torch.eye(x.shape[1])
    w = net.head.weight[c]  # d z_c / d x2
    g1 = torch.einsum("i,nij->nj", w, eye + gamma * j2)  # d z_c / d x1
    return torch.einsum("ni,nij->nj", g1, eye + gamma * j1)


@pytest.mark.parametrize("gamma", [1.0, 0.5, 0.2])
def test_sgm_gradient_equals_the_hand_computed_scaled_gradient(gamma: float) -> None:
    torch.manual_seed(0)
    net = ToyResNet().double()
    x = torch.randn(4, 5, dtype=torch.float64, requires_grad=True)
    with skip_gradient(net, gamma) as mods:
        assert len(mods) == 2
        (g,) = torch.autograd.grad(net(x)[:, 1].sum(), x)
    with torch.no_grad():
        want = _hand_gradient(net, x, 1, gamma)
    torch.testing.assert_close(g, want, rtol=1e-10, atol=1e-12)


def test_hooks_are_removed_on_exit_and_after_an_exception() -> None:
    torch.manual_seed(0)
    net = ToyResNet()
    x = torch.randn(3, 5, requires_grad=True)
    (plain,) = torch.autograd.grad(net(x).sum(), x)
    with skip_gradient(net, 0.3):
        pass
    with pytest.raises(RuntimeError, match="boom"), skip_gradient(net, 0.3):
        raise RuntimeError("boom")
    for m in net.modules():
        assert not m._backward_hooks
    (after,) = torch.autograd.grad(net(x).sum(), x)
    torch.testing.assert_close(after, plain)


def test_sgm_finds_trustlab_residual_branches_and_user_named_ones() -> None:
    torch.manual_seed(0)
    # the authors' rule: each stage's first block unscaled (every branch with first_blocks=True)
    for name, n, every in [("resnet8", 0, 3), ("resnet20", 6, 9), ("densenet-small", 18, 18)]:
        warns = pytest.warns(UserWarning) if n == 0 else contextlib.nullcontext()
        with warns, skip_gradient(create_model(name), 0.5) as mods:
            assert len(mods) == n
        with skip_gradient(create_model(name), 0.5, first_blocks=True) as mods:
            assert len(mods) == every
    net = ToyResNet()
    with skip_gradient(net, 0.5, branches=["block1.residual"]) as mods:
        assert mods == [net.block1.residual]
    with pytest.raises(InputError, match="no sub-modules named 'residual'"):
        SGM(nn.Sequential(nn.Flatten(), nn.Linear(4, 2)))
    with pytest.raises(InputError, match="no layer"):
        skip_gradient(net, 0.5, branches=["block9.residual"]).__enter__()
    with pytest.raises(InputError, match="gamma"):
        SGM(net, gamma=0.0)


def _images():
    torch.manual_seed(0)
    model = create_model("resnet8", num_classes=4, in_channels=3, image_size=(16, 16)).eval()
    x = torch.rand(6, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    y = torch.arange(6) % 4
    return model, x, y


def test_sgm_with_gamma_one_is_pgd() -> None:
    model, x, y = _images()
    a = SGM(model, gamma=1.0, steps=3)(x, y)
    b = PGD(model, steps=3, random_start=False)(x, y)
    torch.testing.assert_close(a, b)
    c = SGM(model, gamma=0.2, steps=3, first_blocks=True)(x, y)  # resnet8: stage openers only
    assert not torch.equal(a, c)


@pytest.mark.parametrize(
    "make",
    [
        lambda m: MIFGSM(m, eps=0.03),
        lambda m: DIFGSM(m, eps=0.03),
        lambda m: DIFGSM(m, eps=0.03, momentum=1.0),
        lambda m: SGM(m, eps=0.03, momentum=1.0, diversity=0.5, alpha=None),
        lambda m: PGD(m, eps=0.5, alpha=0.2, norm="l2", momentum=1.0, diversity=1.0),
    ],
)
def test_mi_and_di_stay_in_the_ball_and_the_box(make) -> None:
    model, x, y = _images()
    atk = make(model)
    adv = atk(x, y)
    delta = (adv - x).flatten(1)
    bound = delta.abs().amax(1) if atk.norm == "linf" else delta.norm(dim=1)
    assert float(bound.max()) <= atk.eps + 1e-6
    assert float(adv.min()) >= 0 and float(adv.max()) <= 1
    assert torch.equal(adv, make(model)(x, y))  # same seed, same transforms


def test_one_step_mi_fgsm_is_fgsm() -> None:
    model, x, y = _images()
    torch.testing.assert_close(MIFGSM(model, eps=0.03, steps=1)(x, y), FGSM(model, eps=0.03)(x, y))


def test_momentum_accumulates_l1_normalised_gradients() -> None:
    # on a linear model the gradient is constant, so the momentum direction equals its sign and
    # MI-FGSM moves exactly like I-FGSM with the same step
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
    x = torch.rand(5, 3, 2, 2) * 0.5 + 0.25
    y = torch.zeros(5, dtype=torch.long)
    mi = MIFGSM(model, eps=0.1, steps=4)(x, y)
    ifgsm = PGD(model, eps=0.1, alpha=0.025, steps=4, random_start=False)(x, y)
    torch.testing.assert_close(mi, ifgsm)


def test_input_diversity_resizes_pads_and_is_seeded() -> None:
    x = torch.rand(2, 3, 32, 32, requires_grad=True)
    assert input_diversity(x, torch.Generator().manual_seed(0), prob=0.0) is x
    out = input_diversity(x, torch.Generator().manual_seed(0), prob=1.0)
    assert out.shape == x.shape and not torch.equal(out, x)
    again = input_diversity(x, torch.Generator().manual_seed(0), prob=1.0)
    assert torch.equal(out, again)
    border = (out == 0).all(1)  # the zero padding covers at least one full row or column
    assert bool(border.all(-1).any() or border.all(-2).any())
    (g,) = torch.autograd.grad(out.sum(), x)
    assert g.abs().sum() > 0
    with pytest.raises(InputError, match="image batches"):
        input_diversity(torch.rand(2, 3, 4, 8, 8), None, prob=1.0)
    with pytest.raises(InputError, match="probability"):
        DIFGSM(nn.Linear(2, 2), diversity=1.5)


def test_named_transfer_attacks() -> None:
    model, x, y = _images()
    for name in ["mifgsm", "difgsm", "sgm", "sgm-mi", "sgm-mi-di"]:
        atk = make_attack(name, model, "4/255")
        assert float((atk(x, y) - x).abs().max()) <= 4 / 255 + 1e-6
    assert make_attack("sgm-mi", model, 0.03).alpha == pytest.approx(0.003)


def test_evaluate_transfer_reports_success_per_target() -> None:
    model, x, y = _images()
    with torch.no_grad():
        labels = model(x).argmax(1)
    data = ArrayDataset(x, labels, ["a", "b", "c", "d"])
    torch.manual_seed(3)
    other = create_model("resnet8", num_classes=4, in_channels=3, image_size=(16, 16)).eval()
    atk = PGD(model, eps=0.1, alpha=0.02, steps=10)
    rep = evaluate_transfer(model, {"self": model, "other": other}, data, atk, batch_size=4)
    assert rep.source_accuracy == 1.0
    # the source as a target: its success rate is the white-box success
    assert rep.targets["self"]["success_rate"] == pytest.approx(rep.source_success)
    assert rep.targets["self"]["n"] == 6
    assert 0 <= rep.targets["other"]["success_rate"] <= 1
    keys = {"source_accuracy", "source_success", "targets", "mean_success", "n"}
    assert set(rep.to_dict()) == keys
    assert model.training is False and all(p.requires_grad for p in model.parameters())
    with pytest.raises(InputError, match="source model"):
        evaluate_transfer(other, {"m": model}, data, atk)
    with pytest.raises(InputError, match="at least one target"):
        evaluate_transfer(model, {}, data, atk)
