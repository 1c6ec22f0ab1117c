"""Label-only membership inference (Choquette-Choo et al., ICML 2021): noise robustness and
translations, queried through argmax labels only."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from trustlab.attacks.privacy import MembershipAudit, ShadowRecipe, loss_scores
from trustlab.attacks.privacy.label_only import (
    LabelOracle,
    gap_scores,
    label_augment_scores,
    label_boundary_scores,
    label_noise_counts,
    label_noise_scores,
    translations,
)
from trustlab.data import load_dataset
from trustlab.data.datasets import ArrayDataset
from trustlab.errors import InputError
from trustlab.metrics.privacy import membership_metrics
from trustlab.models.spec import ModelSpec
from trustlab.registry import PRIVACY_ATTACKS
from trustlab.train import TrainSettings

SIGMAS = (0.1, 0.25)  # digits are 16x16: larger noise than the authors' CIFAR ladder


class OneHot(nn.Module):
    """The one-hot vector of ``model``'s argmax: a model that reveals only its label."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.model(x)
        return F.one_hot(logits.argmax(-1), logits.shape[-1]).float()


class Threshold(nn.Module):
    """A linear model on (N, 1, 2, 2) inputs: class 1 iff the first pixel exceeds 0.5."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.tensor([1.0, 0.0, 0.0, 0.0]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = x.flatten(1) @ self.w - 0.5
        return torch.stack([-z, z], 1)


@pytest.fixture(scope="module")
def overfit():
    """cnn-small trained on 100 digits (members) to train accuracy 1; 100 test digits as
    non-members."""
    torch.set_num_threads(1)
    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    recipe = ShadowRecipe(
        ModelSpec.for_data("cnn-small", train), TrainSettings(epochs=12, lr=0.05, batch_size=32)
    )
    members, nonmembers = train.subset(torch.arange(100)), test.subset(torch.arange(100))
    audit = ArrayDataset(
        torch.cat([members.x, nonmembers.x]), torch.cat([members.y, nonmembers.y]),
        train.classes, train.mean, train.std,
    )  # fmt: skip
    model = recipe.train(members, seed=1, device="cpu")
    return model, audit, torch.arange(200) < 100


def test_scores_use_only_the_predicted_labels(overfit) -> None:
    model, audit, _ = overfit
    data = audit.subset(torch.arange(90, 120))
    kw = {"sigmas": SIGMAS, "samples": 5, "seed": 3}
    noise = label_noise_scores(model, data, **kw)
    # a model that outputs one-hot labels, and a bare label function, give the same scores
    assert torch.equal(noise, label_noise_scores(OneHot(model), data, **kw))
    oracle = LabelOracle(lambda x: model(x).argmax(-1))
    assert torch.equal(noise, label_noise_scores(oracle, data, **kw))
    correct, _ = label_noise_counts(model, data, **kw)
    assert oracle.queries == len(data) + int(correct.sum()) * len(SIGMAS) * 5
    aug = label_augment_scores(model, data, d=1)
    assert torch.equal(aug, label_augment_scores(OneHot(model), data, d=1))
    hsj = {"iterations": 2, "initial_evals": 10, "seed": 1}
    dist = label_boundary_scores(model, data.subset(range(4)), **hsj)
    assert torch.equal(dist, label_boundary_scores(OneHot(model), data.subset(range(4)), **hsj))
    assert torch.equal(gap_scores(model, data), gap_scores(OneHot(model), data))
    assert noise.dtype == aug.dtype == torch.float64
    assert float(noise.min()) >= 0 and float(noise.max()) <= 1 and float(aug.max()) <= 5


def test_a_misclassified_point_scores_the_minimum() -> None:
    model = Threshold()
    x = torch.tensor([0.9, 0.52, 0.9, 0.3]).view(4, 1, 1, 1).expand(4, 1, 2, 2).contiguous()
    y = torch.tensor([0, 1, 1, 1])  # the first and the last are misclassified
    data = ArrayDataset(x, y)
    noise = label_noise_scores(model, data, (0.3,), 20)
    aug = label_augment_scores(model, data, d=1)
    dist = label_boundary_scores(model, data, iterations=3, initial_evals=20)
    for s in (noise, aug, dist):
        assert s[0] == s[3] == 0 and float(s[1:3].min()) > 0
    assert torch.equal(gap_scores(model, data), torch.tensor([0.0, 1.0, 1.0, 0.0]).double())
    # correct but no noisy copy survives: above the misclassified points (the example counted)
    assert float(label_noise_scores(model, ArrayDataset(x[1:2], y[1:2]), (5.0,), 200)[0]) > 0


def test_a_point_far_from_the_boundary_scores_higher_than_one_near_it() -> None:
    model = Threshold()
    x = torch.tensor([[0.95, 0.5, 0.5, 0.5], [0.55, 0.5, 0.5, 0.5]]).view(2, 1, 2, 2)
    data = ArrayDataset(x, torch.tensor([1, 1]))
    far, near = label_noise_scores(model, data, samples=200).tolist()  # the authors' sigmas
    assert far > near > 0
    correct, counts = label_noise_counts(model, data, (0.02, 0.05, 0.1), 200)
    assert correct.all() and (counts[0] >= counts[1]).all()
    assert (counts[1, :-1] >= counts[1, 1:]).all()  # the same draws, monotone in sigma


def test_hop_skip_jump_finds_the_distance_to_a_linear_boundary() -> None:
    g = torch.Generator().manual_seed(2)
    w = torch.randn(64, generator=g)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 2))
    with torch.no_grad():  # logits (-z, z), z = w . (x - 1/2): the boundary crosses the box
        model[1].weight.copy_(torch.stack([-w, w]))
        model[1].bias.copy_(torch.stack([w.sum() / 2, -w.sum() / 2]))
    x = 0.5 + 0.2 * (torch.rand(12, 64, generator=g) - 0.5)
    z = (x - 0.5) @ w
    data = ArrayDataset(x.view(12, 1, 8, 8), (z > 0).long())
    oracle = LabelOracle(model)
    est = label_boundary_scores(oracle, data, iterations=8, seed=0)
    true = (z.abs() / w.norm()).double()
    assert torch.allclose(est, true, rtol=0.1), torch.stack([est, true], 1)
    assert (est >= true * (1 - 1e-4)).all()  # a point on the far side: never closer than truth
    assert oracle.queries > 12 * 8 * 100
    again = label_boundary_scores(model, data, iterations=8, seed=0)
    assert torch.equal(est, again)
    assert not torch.equal(est, label_boundary_scores(model, data, iterations=8, seed=1))


def test_label_only_attacks_beat_chance_on_an_overfit_cnn(overfit) -> None:
    model, audit, member = overfit
    noise = label_noise_scores(model, audit, SIGMAS, 8, seed=0)
    aug = label_augment_scores(model, audit, d=1)
    for s in (noise, aug):
        assert membership_metrics(s, member)["auc"] > 0.55
    assert membership_metrics(loss_scores(model, audit), member)["auc"] > 0.55


@pytest.fixture(scope="module")
def linear(overfit):
    """A random linear model on 24 digits, labelled with its own predictions (all correct)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(256, 10))
    x = overfit[1].x[90:114]
    with torch.no_grad():
        y = model(x).argmax(-1)
    return model, ArrayDataset(x, y)


def test_the_registered_hook_scores_an_audit(linear) -> None:
    model, data = linear
    data = data.subset(torch.arange(4))
    for name in ("label-only", "label-only-hsj", "label-only-augment"):
        card = PRIVACY_ATTACKS.get(name)
        assert card.meta["shadows"] is False and card.paper and card.threat
        job = MembershipAudit(model, data, data, data, torch.arange(4), progress=False)
        scores = card.meta["audit"](job)
        assert scores.shape == (4,) and scores.dtype == torch.float64
        assert job.extra["label_queries"] >= 4
    expected = label_noise_scores(model, data, seed=0)
    assert torch.equal(PRIVACY_ATTACKS.get("label-only").meta["audit"](job), expected)


def test_scores_are_seeded_and_do_not_depend_on_batching(linear, overfit) -> None:
    model, data = linear
    kw = {"sigmas": SIGMAS, "samples": 70}  # two noise blocks, the second partial
    a = label_noise_scores(model, data, seed=5, **kw)
    assert torch.equal(a, label_noise_scores(model, data, seed=5, batch_size=33, **kw))
    assert not torch.equal(a, label_noise_scores(model, data, seed=6, **kw))
    # an example's score does not depend on the others scored with it
    part = label_noise_scores(model, data.subset(torch.arange(5, 15)), seed=5, **kw)
    assert torch.equal(part, a[5:15])
    assert float(a.min()) < 1  # the noise changes some labels
    cnn, audit = overfit[0], overfit[1].subset(torch.arange(92, 112))
    aug = label_augment_scores(cnn, audit, d=2, flip=True)
    assert torch.equal(aug, label_augment_scores(cnn, audit, d=2, flip=True, batch_size=7))


def test_translations_follow_the_authors_set() -> None:
    assert translations(0) == [(0, 0)]
    assert translations(1) == [(0, 0), (1, 0), (0, -1), (-1, 0), (0, 1)]
    two = translations(2)
    assert len(two) == 9 and len(set(two)) == 9
    assert all(abs(a) + abs(b) == 2 for a, b in two[1:])


def test_bad_input_is_refused() -> None:
    model = Threshold()
    data = ArrayDataset(torch.rand(3, 1, 2, 2), torch.tensor([0, 1, 1]))
    for sigmas in ((), (0.1, -0.2), (0.0,), 0.1, (float("nan"),)):
        with pytest.raises(InputError, match="sigmas"):
            label_noise_scores(model, data, sigmas)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="samples"):
        label_noise_scores(model, data, samples=0)
    with pytest.raises(InputError, match="batch_size"):
        label_noise_scores(model, data, batch_size=0)
    with pytest.raises(InputError, match="d must be"):
        label_augment_scores(model, data, d=2)  # as large as the 2x2 image
    with pytest.raises(InputError, match="images"):
        label_augment_scores(model, ArrayDataset(torch.rand(3, 4), torch.tensor([0, 1, 1])))
    for bad in ({"iterations": 0}, {"initial_evals": 0}, {"gamma": 0.0}, {"chunk": 0}):
        with pytest.raises(InputError, match=next(iter(bad))):
            label_boundary_scores(model, data, **bad)
    with pytest.raises(InputError, match="integer label"):
        gap_scores(LabelOracle(lambda x: torch.rand(len(x))), data)
    with pytest.raises(InputError, match="callable"):
        LabelOracle("model")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="logits"):
        gap_scores(nn.Flatten(0), data)
