"""Threshold attacks and Shokri et al.'s shadow-model attack on a small overfit digits MLP."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from trustlab.attacks.privacy import (
    ShadowRecipe,
    ShokriAttack,
    confidence_scores,
    entropy_scores,
    loss_scores,
)
from trustlab.data import load_dataset
from trustlab.data.datasets import ArrayDataset
from trustlab.errors import InputError
from trustlab.metrics.privacy import membership_metrics
from trustlab.models.spec import ModelSpec
from trustlab.train import TrainSettings


class Fixed(torch.nn.Module):
    """A 'model' that returns given logits, one row per input (the input holds its row index)."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.logits = logits
        self.anchor = torch.nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits[x.flatten(1)[:, 0].mul(len(self.logits) - 1).round().long()]


def test_threshold_scores_are_minus_the_loss_and_the_log_max_probability() -> None:
    g = torch.Generator().manual_seed(0)
    n = 33
    logits = torch.randn(n, 5, generator=g) * 4
    logits[0] = torch.tensor([60.0, 0.0, 0.0, 0.0, 0.0])  # p_y rounds to 1 in float32
    logits[1] = torch.tensor([70.0, 0.0, 0.0, 0.0, 0.0])
    y = torch.randint(0, 5, (n,), generator=g)
    y[:2] = 0
    x = (torch.arange(n) / (n - 1)).reshape(n, 1, 1, 1)
    data = ArrayDataset(x, y, [str(i) for i in range(5)])
    model = Fixed(logits)
    loss = loss_scores(model, data)
    assert loss.dtype == torch.float64
    expected = -F.cross_entropy(logits.double(), y, reduction="none")
    assert torch.allclose(loss, expected, rtol=1e-6, atol=1e-12)
    assert loss[1] > loss[0]  # still ordered where the float32 probability is 1 for both
    conf = confidence_scores(model, data)
    assert torch.allclose(conf, logits.double().log_softmax(1).max(1).values, atol=1e-9)
    ent = entropy_scores(model, data)  # minus the entropy, by hand from the probabilities
    p = torch.softmax(logits.double(), 1)
    hand = torch.tensor([sum(float(q) * math.log(float(q)) for q in row if q > 0) for row in p])
    assert ent.dtype == torch.float64 and torch.allclose(ent, hand.double(), atol=1e-9)
    assert ent[1] >= ent[0] and float(ent.max()) <= 0.0


@pytest.fixture(scope="module")
def overfit():
    """An MLP trained for 30 epochs on 100 digits (train accuracy 1); 100 test digits as
    non-members; 400 other training digits as the attacker's data (disjoint from the target's)."""
    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    recipe = ShadowRecipe(
        ModelSpec.for_data("mlp", train), TrainSettings(epochs=30, lr=0.1, batch_size=25)
    )
    members, nonmembers = train.subset(torch.arange(100)), test.subset(torch.arange(100))
    audit = ArrayDataset(
        torch.cat([members.x, nonmembers.x]), torch.cat([members.y, nonmembers.y]),
        train.classes, train.mean, train.std,
    )  # fmt: skip
    target = recipe.train(members, seed=1, device="cpu")
    return recipe, target, audit, torch.arange(200) < 100, train.subset(torch.arange(100, 500))


def test_threshold_attacks_beat_chance_on_an_overfit_model(overfit) -> None:
    _, target, audit, member, _ = overfit
    for scores in (loss_scores(target, audit), confidence_scores(target, audit)):
        m = membership_metrics(scores, member)
        assert m["auc"] > 0.6 and m["advantage"] > 0.2, m


@pytest.mark.slow
def test_shokri_attack_trains_per_class_models_and_beats_chance(overfit, tmp_path) -> None:
    recipe, target, audit, member, shadow_data = overfit
    attack = ShokriAttack(
        recipe, shadow_data, 2, seed=0, cache=tmp_path, device="cpu", progress=False
    )
    with pytest.raises(InputError, match="fit"):
        attack.score(target, audit)
    attack.fit()
    assert attack.shadow_models is not None and attack.shadow_models.trained == 2
    assert attack.trained_classes == list(range(10)) and attack.untrained_classes == []
    # every shadow trains on half of the attacker's data, the other half is its "out" set
    assert (attack.shadow_models.masks.sum(1) == 200).all()
    scores = attack.score(target, audit)
    assert scores.shape == (200,) and torch.isfinite(scores).all()
    assert membership_metrics(scores, member)["auc"] > 0.55
    assert torch.equal(scores, attack.fit().score(target, audit))  # seeded: same again
    assert attack.shadow_models.trained == 0  # and the shadows came from the cache
    with pytest.raises(InputError, match="features"):
        ShokriAttack(recipe, shadow_data, features="logits")  # type: ignore[arg-type]
