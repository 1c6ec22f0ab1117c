"""I-BAU: the implicit hypergradient against its closed form on a quadratic bilevel problem, and
the repair of a smoke BadNets model (cnn-small trained 2 epochs on digits, 10% poisoned) and of
a clean model (one module-scoped fixture each)."""

from __future__ import annotations

import copy

import pytest
import torch

from trustlab.attacks.backdoor.artifact import BackdoorArtifact, evaluate_backdoor, train_backdoor
from trustlab.data import ArrayDataset, load_dataset
from trustlab.defenses.backdoor.base import Repairer
from trustlab.defenses.backdoor.i_bau import IBAU, fixed_point_hypergradient, universal_perturbation
from trustlab.errors import InputError
from trustlab.models.spec import ModelSpec
from trustlab.train import Trainer, TrainSettings


def _quadratic(seed: int = 0):
    """Inner ``g(w, lam) = 0.5 w'Aw - w'B lam`` (``w* = A^-1 B lam``), outer
    ``f(w, lam) = 0.5 ||w - c||^2 + 0.5 ||lam||^2``: the hypergradient is
    ``lam + B' A^-1 (w* - c)``."""
    g = torch.Generator().manual_seed(seed)
    m = torch.randn(4, 4, generator=g, dtype=torch.float64)
    a = m @ m.T + 4 * torch.eye(4, dtype=torch.float64)
    b = torch.randn(4, 3, generator=g, dtype=torch.float64)
    c = torch.randn(4, generator=g, dtype=torch.float64)
    lam = torch.randn(3, generator=g, dtype=torch.float64, requires_grad=True)
    eta = 1.0 / float(torch.linalg.eigvalsh(a).max())  # a contraction: ||I - eta A|| < 1

    def fp_map(w, hp):
        return [w[0] - eta * (a @ w[0] - b @ hp[0])]

    def outer(w, hp):
        return 0.5 * (w[0] - c).pow(2).sum() + 0.5 * hp[0].pow(2).sum()

    w_star = torch.linalg.solve(a, b @ lam.detach())
    exact = lam.detach() + b.T @ torch.linalg.solve(a, w_star - c)
    return a, b, c, lam, eta, fp_map, outer, w_star, exact


def test_hypergradient_matches_the_closed_form_on_a_quadratic() -> None:
    a, b, c, lam, eta, fp_map, outer, w_star, exact = _quadratic()
    (grad,), loss = fixed_point_hypergradient([w_star], [lam], fp_map, outer, K=300, tol=1e-14)
    assert torch.allclose(grad, exact, atol=1e-10)
    assert loss == pytest.approx(float(outer([w_star], [lam.detach()])))
    # K iterations are the truncated Neumann series v_K = sum_{j<K} (I - eta A)^j (w* - c)
    k = 5
    j = torch.eye(4, dtype=torch.float64) - eta * a
    v = sum(torch.linalg.matrix_power(j, i) @ (w_star - c) for i in range(k))
    (grad5,), _ = fixed_point_hypergradient([w_star], [lam], fp_map, outer, K=k)
    assert torch.allclose(grad5, lam.detach() + eta * b.T @ v, atol=1e-12)
    # K = 0: the plain partial gradient (the inner solution treated as a constant)
    (grad0,), _ = fixed_point_hypergradient([w_star], [lam], fp_map, outer, K=0)
    assert torch.allclose(grad0, lam.detach())
    assert lam.grad is None  # nothing accumulated into .grad


@pytest.fixture(scope="module")
def smoke() -> tuple[BackdoorArtifact, ArrayDataset, ArrayDataset, ArrayDataset]:
    torch.set_num_threads(1)
    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    torch.manual_seed(0)
    net = ModelSpec.for_data("cnn-small", train).build()
    settings = TrainSettings(epochs=2, lr=0.05, batch_size=32, seed=0)
    art = train_backdoor("badnets", train, test, net, settings, rate=0.1, target=0, seed=0)
    assert art.metrics["asr"] > 0.9
    idx = torch.arange(len(test))
    return art, train, test.subset(idx[::2]), test.subset(idx[1::2])


def test_i_bau_lowers_asr_and_keeps_accuracy(smoke) -> None:
    art, _, clean, held = smoke
    before = evaluate_backdoor(art.model, held, art.trigger, art.policy)
    ib = IBAU(rounds=2, lr=1e-2, batch_size=32, seed=0)
    assert isinstance(ib, Repairer)
    model = copy.deepcopy(art.model)
    assert ib.repair(model, clean) is model
    after = evaluate_backdoor(model, held, art.trigger, art.policy)
    # measured: ASR 0.99 -> 0.06, clean accuracy 0.96 -> 0.88 (180 clean images, 2 rounds)
    assert after["asr"] < before["asr"] - 0.5
    assert after["clean_acc"] > before["clean_acc"] - 0.15
    assert len(ib.report["delta_norms"]) == 2
    assert all(n <= 10.0 + 1e-4 for n in ib.report["delta_norms"])  # the L2 ball


def test_i_bau_keeps_a_clean_models_accuracy(smoke) -> None:
    _, train, clean, held = smoke
    torch.manual_seed(1)
    net = ModelSpec.for_data("cnn-small", train).build()
    small = train.subset(torch.arange(800))
    Trainer(net, TrainSettings(epochs=1, lr=0.05, batch_size=16), progress=False).fit(small)
    acc0 = float((net.eval()(held.x).argmax(1) == held.y).float().mean())
    IBAU(rounds=1, seed=0).repair(net, clean)  # the authors' settings, one round
    acc1 = float((net(held.x).argmax(1) == held.y).float().mean())
    assert acc1 > acc0 - 0.05  # measured: 0.95 -> 0.96


def test_universal_perturbation_is_one_bounded_pattern(smoke) -> None:
    art, _, clean, _ = smoke
    weights = [p.detach().clone() for p in art.model.parameters()]
    d = universal_perturbation(art.model, clean, batch_size=48, bound=2.0)
    assert d.shape == (1, *clean.input_shape) and float(d.norm()) <= 2.0 + 1e-5
    assert all(torch.equal(p, w) for p, w in zip(art.model.parameters(), weights, strict=True))


def test_i_bau_rejects_bad_settings() -> None:
    with pytest.raises(InputError, match="portion"):
        IBAU(portion=0)
    with pytest.raises(InputError, match="rounds"):
        IBAU(rounds=0)
    with pytest.raises(InputError, match="n_clean"):
        IBAU(n_clean=0)
