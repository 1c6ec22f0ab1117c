"""Neural Cleanse's schedule: the authors' cost adjustment and early stop (bolunwang/backdoor,
``visualizer.py``, ``Visualizer.visualize``), per class inside the batched pass."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from trustlab.defenses.backdoor import NeuralCleanse
from trustlab.errors import InputError


def authors_loop(
    acc: list[float],
    reg: list[float],
    init_cost: float = 1e-3,
    patience: int = 5,
    multiplier: float = 2.0,
    es_threshold: float = 0.99,
    es_patience: int = 25,
    reset_to_zero: bool = True,
) -> tuple[list[float], list[bool], int]:
    """A scalar transcription of the authors' per-epoch bookkeeping, fed with the epochs'
    mean success and mask L1: ``(lambda used in each epoch, best-so-far flags, epochs run)``."""
    cost = 0.0 if reset_to_zero else init_cost
    reg_best = es_best = math.inf
    set_c = up_c = down_c = es_c = 0
    up_f = down_f = False
    costs, bests = [], []
    for step, (a, r) in enumerate(zip(acc, reg, strict=True)):
        costs.append(cost)
        best = a >= 0.99 and r < reg_best
        if best:
            reg_best = r
        bests.append(best)
        if reg_best < math.inf:
            es_c = es_c + 1 if reg_best >= es_threshold * es_best else 0
        es_best = min(reg_best, es_best)
        if down_f and up_f and es_c >= es_patience:
            return costs, bests, step + 1
        if cost == 0 and a >= 0.99:
            set_c += 1
            if set_c >= patience:
                cost, up_c, down_c, up_f, down_f = init_cost, 0, 0, False, False
        else:
            set_c = 0
        if a >= 0.99:
            up_c, down_c = up_c + 1, 0
        else:
            up_c, down_c = 0, down_c + 1
        if up_c >= patience:
            up_c, cost, up_f = 0, cost * multiplier, True
        elif down_c >= patience:
            down_c, cost, down_f = 0, cost / multiplier**1.5, True
    return costs, bests, len(acc)


def _sequences(epochs: int = 120) -> dict[str, tuple[list[float], list[float]]]:
    """Per-epoch (success, mean mask L1) of five made-up classes."""
    e = range(epochs)
    # the success dips below 99% every 12th epoch for 6 epochs, so lambda moves both ways
    wavy = [0.5 if (i % 12) >= 6 and i > 10 else 1.0 for i in e]
    return {
        # converges: shrinks 10% an epoch, then flat at 5
        "converges": (wavy, [max(5.0, 60 * 0.9**i) for i in e]),
        # still shrinking by 2% an epoch: never 25 epochs without a 1% gain
        "shrinks": (wavy, [60 * 0.98**i for i in e]),
        # shrinks by 0.1% an epoch: below the 1% early-stop threshold, counted as stalled
        "crawls": (wavy, [60 * 0.999**i for i in e]),
        # succeeds every epoch: lambda only goes up, so the authors never stop early
        "always": ([1.0] * epochs, [30.0] * epochs),
        # never succeeds: no trigger, no early stop
        "never": ([0.3] * epochs, [20.0] * epochs),
    }


def test_the_schedule_follows_the_authors_loop() -> None:
    from trustlab.defenses.backdoor.neural_cleanse import _Schedule

    seqs = _sequences()
    names = list(seqs)
    nc = NeuralCleanse()
    sched = _Schedule(nc, len(names), torch.device("cpu"))
    acc = torch.tensor([seqs[n][0] for n in names]).T  # (epochs, K)
    reg = torch.tensor([seqs[n][1] for n in names], dtype=torch.float32).T
    costs, bests, stops = [], [], [len(acc)] * len(names)
    for i in range(len(acc)):
        costs.append(sched.cost.clone())
        was = sched.done.clone()
        bests.append(sched.update(acc[i], reg[i]))
        for k in torch.nonzero(sched.done & ~was).flatten().tolist():
            stops[k] = i + 1
    for k, name in enumerate(names):
        ref_costs, ref_bests, ref_stop = authors_loop(*seqs[name])
        assert stops[k] == ref_stop, name
        got_costs = [float(c[k]) for c in costs[:ref_stop]]
        assert got_costs == pytest.approx(ref_costs, rel=1e-6), name
        assert [bool(b[k]) for b in bests[:ref_stop]] == ref_bests, name
    stop = dict(zip(names, stops, strict=True))
    # a converged mask stops early; one still shrinking by more than 1% an epoch does not
    assert stop["converges"] < 60 and stop["crawls"] < 120
    assert stop["shrinks"] == stop["always"] == stop["never"] == 120


def test_lambda_starts_at_zero_as_the_authors_and_init_cost_when_asked() -> None:
    from trustlab.defenses.backdoor.neural_cleanse import _Schedule

    on = _Schedule(NeuralCleanse(), 1, torch.device("cpu"))
    off = _Schedule(NeuralCleanse(reset_cost_to_zero=False), 1, torch.device("cpu"))
    assert float(on.cost[0]) == 0.0 and float(off.cost[0]) == pytest.approx(1e-3)
    for _ in range(5):
        on.update(torch.ones(1), torch.ones(1))
    assert float(on.cost[0]) == pytest.approx(1e-3)  # five successful epochs at 0: init_cost


class Planted(nn.Module):
    """Linear classifier of 8x8 grey images: classes 1..3 read rows, class 0 fires on a bright
    bottom-right pixel (a planted backdoor); as in test_neural_cleanse.py."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(64, 4)
        with torch.no_grad():
            w = torch.zeros(4, 64)
            for k in (1, 2, 3):
                w[k, 16 * (k - 1) : 16 * k] = 1.0
            w[0, 63] = 20.0
            self.linear.weight.copy_(w)
            self.linear.bias.copy_(torch.tensor([-8.0, 0.0, 0.0, 0.0]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.flatten(1))


def _clean(n: int = 128, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    y = 1 + torch.arange(n) % 3
    x = 0.5 * torch.rand(n, 1, 8, 8, generator=g)
    rows = (torch.arange(8)[None, :] // 2 + 1 == y[:, None]).float()
    return (x + 0.3 * rows[:, None, :, None]).clamp(0, 1)


def test_the_default_run_stops_on_convergence_not_after_a_fixed_number_of_epochs() -> None:
    model, x = Planted(), _clean()
    nc = NeuralCleanse(seed=0)
    report = nc.inspect(model, x)
    # ran past the old fixed 5 epochs, and every class stopped on its own before the cap
    assert 5 < report.epochs < nc.epochs
    per_class = report.extra["epochs_per_class"]
    assert report.epochs == max(per_class)
    assert all(e < nc.epochs for e in per_class)
    # ... at the epoch the authors' loop stops, given the run's own epochs
    r = nc._reverse(model, x, [0, 1, 2, 3])
    assert r.epochs_per_class == per_class
    for k in range(4):
        acc = [ep["success"][k] for ep in r.log[: per_class[k]]]
        reg = [ep["reg"][k] for ep in r.log[: per_class[k]]]
        assert authors_loop(acc, reg)[2] == per_class[k]
        assert all(ep["active"][k] == (i < per_class[k]) for i, ep in enumerate(r.log))
    # the converged target mask is the planted pixel; the other classes need whole rows
    assert report.flagged == [0] and float(report.norms[0]) < 2
    assert report.masks[0].flatten().argmax() == 63


def test_a_stopped_class_is_frozen_and_the_batched_pass_equals_separate_runs() -> None:
    model, x = Planted(), _clean()
    g = torch.Generator().manual_seed(5)
    m0, p0 = torch.rand(4, 8, 8, generator=g), torch.rand(4, 1, 8, 8, generator=g)
    nc = NeuralCleanse(seed=0, epochs=200)
    together = nc._reverse(model, x, [0, 1, 2, 3], init=(m0, p0))
    assert len(set(together.epochs_per_class)) > 1  # classes stopped at different epochs
    for k in range(4):
        alone = nc._reverse(model, x, [k], init=(m0[k : k + 1], p0[k : k + 1]))
        assert alone.epochs_per_class[0] == together.epochs_per_class[k]
        torch.testing.assert_close(alone.masks[0], together.masks[k], atol=1e-4, rtol=0)


def test_a_cap_below_convergence_still_returns_every_class() -> None:
    masks, patterns, success, epochs = NeuralCleanse(epochs=3, seed=0).reverse(
        Planted(), _clean(), [0, 1]
    )
    assert epochs == 3 and masks.shape == (2, 8, 8) and patterns.shape == (2, 1, 8, 8)
    assert success.shape == (2,)


def test_bad_schedule_arguments() -> None:
    with pytest.raises(InputError, match="early_stop_threshold"):
        NeuralCleanse(early_stop_threshold=0.0)
    with pytest.raises(InputError, match="early_stop_patience"):
        NeuralCleanse(early_stop_patience=0)
    assert NeuralCleanse(patience=3).early_stop_patience == 15
