"""Triggers, label policies, the poisoner and the backdoor metrics."""

from __future__ import annotations

import pytest
import torch

from trustlab.attacks.backdoor import (
    AllToAll,
    AllToOne,
    BlendTrigger,
    CleanLabel,
    PatchTrigger,
    PixelTrigger,
    ReflectionTrigger,
    poison_dataset,
    trigger_from_state,
)
from trustlab.data import ArrayDataset
from trustlab.errors import InputError
from trustlab.metrics.backdoor import (
    attack_success_rate,
    backdoor_robust_accuracy,
    defense_effectiveness_rating,
)


def _x(n: int = 6, c: int = 3, s: int = 16) -> torch.Tensor:
    return torch.rand(n, c, s, s, generator=torch.Generator().manual_seed(0))


TRIGGERS = [
    lambda seed: PatchTrigger("random", size=3, seed=seed),
    lambda seed: PatchTrigger(size=4, location=(2, 5)),
    lambda seed: PixelTrigger(),
    lambda seed: BlendTrigger("random", size=(16, 16), seed=seed),
    lambda seed: BlendTrigger("coffee", alpha=0.3, size=(16, 16)),
    lambda seed: ReflectionTrigger("chelsea", "in-focus", size=(16, 16), seed=seed),
    lambda seed: ReflectionTrigger("chelsea", "out-of-focus", size=(16, 16), seed=seed),
    lambda seed: ReflectionTrigger("camera", "ghost", size=(16, 16), seed=seed),
]


@pytest.mark.parametrize("make", TRIGGERS)
def test_triggers_are_deterministic_by_seed_in_range_and_round_trip(make) -> None:
    x = _x()
    a, b = make(3)(x), make(3)(x)
    assert torch.equal(a, b) and a.shape == x.shape
    assert float(a.min()) >= 0 and float(a.max()) <= 1 and not torch.equal(a, x)
    trig = make(3)
    config, tensors = trig.state()
    torch.testing.assert_close(trigger_from_state(config, tensors)(x), a)


def test_random_triggers_differ_by_seed_and_patches_work_on_clips() -> None:
    x = _x()
    assert not torch.equal(PatchTrigger("random", seed=1)(x), PatchTrigger("random", seed=2)(x))
    r1 = ReflectionTrigger("chelsea", "ghost", size=(16, 16), seed=1)
    r2 = ReflectionTrigger("chelsea", "ghost", size=(16, 16), seed=2)
    assert (r1.shift, r1.ghost_alpha) != (r2.shift, r2.ghost_alpha)
    assert 0.15 <= r1.ghost_alpha <= 0.85 and 0.05 <= r1.weight <= 0.45
    assert 3 <= r1.shift[0] <= 8 and 1 <= r1.sigma <= 5
    clip = torch.zeros(2, 3, 4, 8, 8)
    out = PatchTrigger("white", size=2)(clip)
    assert out[:, :, :, 6:, 6:].eq(1).all() and float(out.sum()) == 2 * 3 * 4 * 4
    px = PixelTrigger(value=0.5, location=(0, 0), channels=1)(torch.zeros(1, 1, 4, 4))
    assert float(px[0, 0, 0, 0]) == 0.5 and float(px.sum()) == 0.5


def test_label_policies() -> None:
    y = torch.tensor([0, 1, 2, 3, 9])
    assert AllToAll(10)(y).tolist() == [1, 2, 3, 4, 0]  # each class to the next
    assert AllToOne(2)(y).tolist() == [2] * 5
    assert AllToOne(2).eligible(y).tolist() == [True, True, False, True, True]
    assert CleanLabel(3)(y).tolist() == y.tolist()  # never changes a label
    assert CleanLabel(3).eligible(y).tolist() == [False, False, False, True, False]
    with pytest.raises(InputError, match="out of range"):
        AllToOne(10, num_classes=10)


@pytest.mark.parametrize(
    "policy, rate, of, count",
    [(AllToOne(0), 0.1, "dataset", 20), (AllToAll(4), 0.25, "dataset", 50),
     (CleanLabel(1), 0.3, "eligible", 15), (CleanLabel(1), 0.05, "dataset", 10)],
)  # fmt: skip
def test_poison_counts_are_exact_and_recorded(policy, rate, of, count) -> None:
    y = torch.arange(200) % 4
    data = ArrayDataset(torch.rand(200, 3, 8, 8), y, list("abcd"))
    trig = PatchTrigger("white", size=2)
    out = poison_dataset(data, trig, policy, rate=rate, of=of, seed=0)
    assert int(out.poison_mask.sum()) == count == len(out.poison_indices)
    idx = out.poison_indices
    assert policy.eligible(data.y[idx]).all()
    torch.testing.assert_close(out.x[idx], trig(data.x[idx]))
    assert torch.equal(out.x[~out.poison_mask], data.x[~out.poison_mask])
    assert torch.equal(out.clean_y, data.y)
    assert torch.equal(out.y[idx], policy(data.y[idx]))
    assert torch.equal(out.y[~out.poison_mask], data.y[~out.poison_mask])
    again = poison_dataset(data, trig, policy, rate=rate, of=of, seed=0)
    assert torch.equal(again.poison_mask, out.poison_mask)
    if isinstance(policy, CleanLabel):
        assert torch.equal(out.y, data.y)
    with pytest.raises(InputError, match="eligible"):
        poison_dataset(data, trig, CleanLabel(1), rate=0.5)


def test_backdoor_metrics() -> None:
    y = torch.tensor([0, 1, 2, 2, 3])
    pred = torch.tensor([2, 2, 2, 1, 3])
    # target 2: only the three samples of classes 0, 1, 3 count
    assert attack_success_rate(pred, y, 2) == pytest.approx(2 / 3)
    assert backdoor_robust_accuracy(pred, y, 2) == pytest.approx(1 / 3)
    t = (y + 1) % 4  # all-to-all targets
    assert attack_success_rate(torch.tensor([1, 2, 3, 3, 0]), y, t) == 1.0
    with pytest.raises(ValueError, match="no triggered input"):
        attack_success_rate(pred, torch.full((3,), 2), 2)


def test_der_sign() -> None:
    assert defense_effectiveness_rating(1.0, 0.0, 0.9, 0.9) == 1.0  # removes it for free
    assert defense_effectiveness_rating(1.0, 1.0, 0.9, 0.9) == 0.5  # does nothing
    # losing accuracy without lowering ASR must lower the rating, never raise it
    assert defense_effectiveness_rating(1.0, 1.0, 0.9, 0.5) == pytest.approx(0.3)
    assert defense_effectiveness_rating(1.0, 0.0, 0.9, 0.8) < 1.0
    assert defense_effectiveness_rating(0.5, 0.9, 0.9, 0.95) == 0.5  # worse ASR: no credit


def test_metrics_take_any_integer_target_and_blur_fits_small_images() -> None:
    import numpy as np

    y = torch.tensor([0, 1, 2])
    pred = torch.tensor([2, 2, 2])
    for t in (2, np.int64(2), torch.tensor(2)):
        assert attack_success_rate(pred, y, t) == 1.0
    for seed in range(6):
        out = ReflectionTrigger("chelsea", "out-of-focus", size=(8, 8), seed=seed)(_x(2, 3, 8))
        assert out.shape == (2, 3, 8, 8)
