"""Adversarial training losses in the trainer: PGD-AT and TRADES make a model more robust."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from trustlab.attacks.evasion import PGD, evaluate_robustness
from trustlab.data import ArrayDataset
from trustlab.errors import InputError
from trustlab.robust.adversarial import TRADES, PGDTraining
from trustlab.train import fit


def fragile(n: int = 512, seed: int = 0) -> ArrayDataset:
    """Noisy robust features plus one tiny, perfectly predictive pixel (a non-robust feature)."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 2
    s = (2 * y - 1).float().view(-1, 1)
    x = 0.5 + 0.2 * s + 0.25 * torch.randn(n, 16, generator=g)
    x[:, 0] = 0.5 + 0.03 * s[:, 0]
    return ArrayDataset(x.clamp(0, 1).view(n, 1, 4, 4), y, ["a", "b"])


def mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 2))


def test_pgd_training_improves_robustness() -> None:
    train, test = fragile(), fragile(seed=1)
    kw = dict(epochs=20, lr=0.05, batch_size=32, weight_decay=0.0, device="cpu", progress=False)
    plain = fit(mlp(), train, test, **kw).model
    robust = fit(mlp(), train, test, compute_loss=PGDTraining(0.1, 0.1 / 3, 5), **kw).model
    r_plain = evaluate_robustness(plain, test, {"pgd": PGD(plain, eps=0.1, steps=10)})
    r_rob = evaluate_robustness(robust, test, {"pgd": PGD(robust, eps=0.1, steps=10)})
    assert r_rob.clean_accuracy > 0.95
    assert r_rob.robust_accuracy > r_plain.robust_accuracy


def test_losses_are_the_papers_formulas() -> None:
    model, data = mlp(), fragile(16)
    x, y = data.x, data.y
    at = PGDTraining(eps=0.1, alpha=0.05, steps=3, label_smoothing=0.1, seed=2)
    loss, logits = at(model, x, y)
    adv = PGD(model, 0.1, 0.05, 3, seed=2 * 1_000_003 + 1)(x, y)
    expected = torch.nn.functional.cross_entropy(model(adv), y, label_smoothing=0.1)
    assert torch.allclose(loss, expected) and torch.allclose(logits, model(adv))
    clean_ce = torch.nn.functional.cross_entropy(model(x), y)
    zero, _ = TRADES(beta=0.0, eps=0.1)(model, x, y)
    assert torch.allclose(zero, clean_ce)
    six, _ = TRADES(beta=6.0, eps=0.1)(model, x, y)
    assert float(six.detach()) > float(clean_ce.detach())  # KL > 0 at the inner maximiser


def test_pgd_training_is_deterministic_and_restores_state() -> None:
    train = fragile(64)
    a = fit(mlp(), train, epochs=2, compute_loss=PGDTraining(steps=2), device="cpu", progress=False)
    b = fit(mlp(), train, epochs=2, compute_loss=PGDTraining(steps=2), device="cpu", progress=False)
    assert a.history[-1]["train_loss"] == b.history[-1]["train_loss"]
    assert a.model.training and all(p.requires_grad for p in a.model.parameters())


def test_bad_settings() -> None:
    with pytest.raises(InputError):
        PGDTraining(label_smoothing=1.5)
    with pytest.raises(InputError):
        TRADES(beta=-1)


def test_cli_adversarial_training(_isolated_home) -> None:
    from typer.testing import CliRunner

    from trustlab.cli import app
    from trustlab.results import RunStore

    runner = CliRunner()
    base = [
        "train",
        "--dataset",
        "digits",
        "--model",
        "mlp",
        "--epochs",
        "1",
        "--quiet",
        "--device",
        "cpu",
    ]
    out = runner.invoke(
        app,
        [*base, "--adv", "pgd", "--eps", "8/255", "--label-smoothing", "0.5"],
        catch_exceptions=False,
    )
    assert out.exit_code == 0, out.output
    out = runner.invoke(app, [*base, "--adv", "trades", "--beta", "6"], catch_exceptions=False)
    assert out.exit_code == 0, out.output
    runs = RunStore(_isolated_home).list()
    assert {r.config["adv"] for r in runs} == {"pgd", "trades"}
    for bad, pattern in (
        (["--eps", "8/255"], "add --adv"),
        (["--adv", "pgd", "--loss", "sce"], "own loss"),
        (["--adv", "mixup"], "adv"),
        (["--adv", "trades", "--label-smoothing", "0.1"], "label smoothing"),
    ):
        out = runner.invoke(app, [*base, *bad], catch_exceptions=False)
        assert out.exit_code == 2 and pattern in out.output, out.output
    assert len(RunStore(_isolated_home).list()) == 2
