"""AdvTrojan: the poisoned PGD adversarial-training loss, its evaluation, and the smoke
reproduction."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import TensorDataset
from typer.testing import CliRunner

from trustlab.attacks.backdoor import AllToAll, AllToOne, CleanLabel, PatchTrigger
from trustlab.attacks.backdoor.advtrojan import (
    ADVERSARIAL,
    TRIGGER_ONLY,
    TROJAN,
    evaluate_advtrojan,
)
from trustlab.cli import app
from trustlab.data import load_dataset
from trustlab.errors import InputError
from trustlab.models.spec import ModelSpec
from trustlab.results import RunStore
from trustlab.robust.advtrojan import AdvTrojanTraining

EPS = 0.1


def _setup(n: int = 64) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    train = load_dataset("digits", "train")
    model = ModelSpec.for_data("mlp", train).build()
    return model, train.x[:n], train.y[:n]


def _loss(seed: int = 0, **kw) -> AdvTrojanTraining:
    kw.setdefault("policy", AllToOne(0))
    return AdvTrojanTraining(
        PatchTrigger(channels=1), eps=EPS, alpha=EPS / 4, steps=2, seed=seed, **kw
    )


def test_the_mixture_has_the_three_parts_with_their_labels_and_counts() -> None:
    model, x, y = _setup()
    loss = _loss(poison_rate=0.25, trigger_rate=0.125)
    b = loss.mixture(model, x, y)
    assert b.x.shape == x.shape and b.y.shape == y.shape
    assert b.counts() == {"adversarial": 40, "trojan": 16, "trigger-only": 8}
    adv, troj, trig = (b.part == ADVERSARIAL), (b.part == TROJAN), (b.part == TRIGGER_ONLY)
    tx = loss.trigger(x)
    # trojan: a non-target sample, triggered then perturbed inside the ball, labelled 0
    assert (y[troj] != 0).all() and (b.y[troj] == 0).all()
    d = (b.x[troj] - tx[troj]).abs().flatten(1).amax(1)
    assert (d <= EPS + 1e-6).all() and (d > 0).all()
    # trigger only: exactly the triggered input with its true label
    assert torch.equal(b.x[trig], tx[trig]) and torch.equal(b.y[trig], y[trig])
    # adversarial: PGD of the clean input with its true label
    d = (b.x[adv] - x[adv]).abs().flatten(1).amax(1)
    assert (d <= EPS + 1e-6).all() and (d > 0).all() and torch.equal(b.y[adv], y[adv])
    assert b.x.min() >= 0 and b.x.max() <= 1
    # one forward of the mixed batch, cross-entropy on its labels
    again = _loss(poison_rate=0.25, trigger_rate=0.125)
    value = again(model, x, y)
    assert value.requires_grad
    assert float(value.detach()) == pytest.approx(float(F.cross_entropy(model(b.x), b.y).detach()))


def test_all_to_all_labels_and_too_few_eligible_samples() -> None:
    model, x, y = _setup(32)
    b = _loss(policy=AllToAll(10), poison_rate=0.25).mixture(model, x, y)
    troj = b.part == TROJAN
    assert int(troj.sum()) == 8 and torch.equal(b.y[troj], (y[troj] + 1) % 10)
    assert int((b.part == TRIGGER_ONLY).sum()) == 8  # trigger_rate defaults to poison_rate
    # all-to-one to class 0 when only two samples are not of class 0: those two, no more
    y2 = torch.zeros_like(y)
    y2[[3, 7]] = 5
    b = _loss(poison_rate=0.5, trigger_rate=0.0).mixture(model, x, y2)
    assert torch.nonzero(b.part == TROJAN).flatten().tolist() == [3, 7]
    assert b.counts()["trigger-only"] == 0


def test_the_default_trigger_follows_the_data_channels() -> None:
    model, x, y = _setup(16)
    loss = AdvTrojanTraining(eps=EPS, steps=1)
    loss.mixture(model, x, y)
    assert isinstance(loss.trigger, PatchTrigger) and loss.trigger.pattern.shape == (1, 3, 3)


def test_same_seed_same_mixture_and_loss_other_seed_or_batch_differs() -> None:
    model, x, y = _setup()
    a, b = _loss(seed=3), _loss(seed=3)
    ma, mb = a.mixture(model, x, y), b.mixture(model, x, y)
    assert torch.equal(ma.x, mb.x) and torch.equal(ma.part, mb.part) and torch.equal(ma.y, mb.y)
    assert torch.equal(a(model, x, y), b(model, x, y))  # the second batch of each, also equal
    other = _loss(seed=4).mixture(model, x, y)
    assert not torch.equal(other.part, ma.part) or not torch.equal(other.x, ma.x)
    third = a.mixture(model, x, y)  # a new batch gets a new draw
    assert not torch.equal(third.x, ma.x)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"poison_rate": 0.0}, "poison_rate must be in \\(0, 1\\)"),
        ({"poison_rate": 1.0}, "poison_rate must be in \\(0, 1\\)"),
        ({"poison_rate": float("nan")}, "poison_rate"),
        ({"trigger_rate": -0.1}, "trigger_rate must be in \\[0, 1\\)"),
        ({"poison_rate": 0.6, "trigger_rate": 0.5}, "must stay below 1"),
        ({"policy": CleanLabel(0)}, "clean-label"),
        ({"policy": "all-to-one"}, "LabelPolicy"),
        ({"steps": 0}, "steps must be >= 1"),
        ({"norm": "l1"}, "unknown norm"),
        ({"trigger": lambda x: x}, "Trigger"),
        ({"label_smoothing": 1.0}, "label_smoothing"),
    ],
)
def test_bad_settings_are_input_errors(kwargs: dict, match: str) -> None:
    with pytest.raises(InputError, match=match):
        AdvTrojanTraining(**kwargs)


def test_mismatched_labels_are_an_input_error() -> None:
    model, x, y = _setup(8)
    with pytest.raises(InputError, match="labels"):
        _loss().mixture(model, x, y[:4])


class _Lock(nn.Module):
    """A hand-made model on images that carry their class in pixel (0, 0): it predicts that
    class, except that it says 0 when the bottom-right 3x3 patch is near 0.5, only when not
    exactly 0.5 (``exact=False``: trigger + perturbation) or always (``exact=True``)."""

    def __init__(self, exact: bool) -> None:
        super().__init__()
        self.exact = exact

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cls = (x[:, 0, 0, 0] * 10).floor().long().clamp(0, 9)
        dev = (x[:, 0, -3:, -3:] - 0.5).abs().flatten(1).amax(1)
        fire = (dev < 0.25) & ((dev > 1e-6) | self.exact)
        pred = torch.where(fire, torch.zeros_like(cls), cls)
        # zero gradient: PGD stays at its random start, which moves the patch off 0.5
        return F.one_hot(pred, 10).float() * 10 + 0 * x.flatten(1).sum(1, keepdim=True)


def _lock_data() -> tuple[torch.Tensor, torch.Tensor]:
    y = torch.arange(100) % 10
    x = torch.zeros(100, 1, 8, 8)
    x[:, 0, 0, 0] = (y.float() + 0.5) / 10
    return x, y


def test_evaluation_on_hand_made_models() -> None:
    x, y = _lock_data()
    data = TensorDataset(x, y)
    trigger = PatchTrigger(torch.full((1, 3, 3), 0.5))
    kw = dict(eps=0.03, alpha=0.01, steps=2, batch_size=32)
    lock = evaluate_advtrojan(_Lock(exact=False), data, trigger, AllToOne(0), **kw)
    assert lock == {
        "clean_acc": 1.0,
        "robust_acc": 1.0,
        "asr_trigger": 0.0,
        "asr_perturbation": 0.0,
        "asr_both": 1.0,
    }
    plain = evaluate_advtrojan(_Lock(exact=True), data, trigger, AllToOne(0), **kw)
    assert plain["asr_trigger"] == 1.0 and plain["asr_both"] == 1.0
    assert plain["asr_perturbation"] == 0.0 and plain["clean_acc"] == 1.0
    # all-to-all: class 0 is the target of class 9 only
    a2a = evaluate_advtrojan(_Lock(exact=False), data, trigger, AllToAll(10), **kw)
    assert a2a["asr_both"] == pytest.approx(10 / 100)


def test_evaluation_counts_non_target_samples_only_and_is_seeded() -> None:
    class Zero(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.zeros(1))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return F.one_hot(torch.zeros(len(x), dtype=torch.long), 10).float() + self.w * x.sum()

    x, y = _lock_data()
    trigger = PatchTrigger(torch.full((1, 3, 3), 0.5))
    m = evaluate_advtrojan(Zero(), TensorDataset(x, y), trigger, eps=0.03, steps=1)
    assert m == pytest.approx(
        {
            "clean_acc": 0.1,
            "robust_acc": 0.1,
            "asr_trigger": 1.0,
            "asr_perturbation": 1.0,
            "asr_both": 1.0,
        }
    )
    model, xs, ys = _setup(48)
    data = TensorDataset(xs, ys)
    trig = PatchTrigger(channels=1)
    one = evaluate_advtrojan(model, data, trig, eps=EPS, steps=2, batch_size=16, seed=1)
    two = evaluate_advtrojan(model, data, trig, eps=EPS, steps=2, batch_size=16, seed=1)
    assert one == two


def test_evaluation_input_errors() -> None:
    x, y = _lock_data()
    trigger = PatchTrigger(torch.full((1, 3, 3), 0.5))
    only_zeros = TensorDataset(x, torch.zeros_like(y))
    with pytest.raises(InputError, match="non-target classes"):
        evaluate_advtrojan(_Lock(False), only_zeros, trigger)
    with pytest.raises(InputError, match="clean-label"):
        evaluate_advtrojan(_Lock(False), TensorDataset(x, y), trigger, CleanLabel(0))
    with pytest.raises(InputError, match="Trigger"):
        evaluate_advtrojan(_Lock(False), TensorDataset(x, y), None)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="batch_size"):
        evaluate_advtrojan(_Lock(False), TensorDataset(x, y), trigger, batch_size=0)


@pytest.mark.slow
def test_reproduce_advtrojan_smoke(_isolated_home: Path) -> None:
    out = CliRunner().invoke(
        app,
        ["reproduce", "advtrojan", "--preset", "smoke", "--device", "cpu", "--quiet"],
        catch_exceptions=False,
    )
    marks = re.findall(r"(PASS|FAIL) ", out.output)
    assert len(marks) == 1, out.output
    assert out.exit_code == (0 if marks == ["PASS"] else 1)
    (run,) = RunStore(_isolated_home).list()
    rows = json.loads((run.dir / "table.json").read_text())["rows"]
    assert [r["model"] for r in rows] == ["pgd-at", "advtrojan"]
    for r in rows:
        for k in ("clean_acc", "robust_acc", "asr_trigger", "asr_perturbation", "asr_both"):
            assert 0 <= r[k] <= 1
        assert r["robust_acc"] <= r["clean_acc"]
