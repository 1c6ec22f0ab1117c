"""LiRA: phi, the Gaussian scores on constructed values, the shadow assignment and cache, and the
attack end to end on a toy problem (tiny MLPs memorising random labels of digits)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from trustlab.attacks.privacy import (
    LiRA,
    ShadowRecipe,
    lira_scores,
    logit_confidence,
    membership_masks,
    train_shadows,
)
from trustlab.data import load_dataset
from trustlab.data.datasets import ArrayDataset
from trustlab.errors import InputError
from trustlab.metrics.privacy import membership_metrics
from trustlab.models.spec import ModelSpec
from trustlab.train import TrainSettings


def test_phi_is_the_logit_of_the_true_class_probability_and_stable() -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(50, 10, generator=g) * 3
    y = torch.randint(0, 10, (50,), generator=g)
    p = logits.double().softmax(1).gather(1, y[:, None]).squeeze(1)
    assert torch.allclose(logit_confidence(logits, y), torch.log(p / (1 - p)), atol=1e-9)
    # where p_y rounds to 1 (or 0) the direct formula fails; phi stays finite and exact
    big = torch.tensor([[800.0, 0.0, 0.0], [0.0, 900.0, 0.0]])
    extreme = logit_confidence(big, torch.tensor([0, 0]))
    assert extreme[0] == pytest.approx(800 - torch.log(torch.tensor(2.0)).item())
    assert extreme[1] == pytest.approx(-900.0)
    with pytest.raises(InputError, match="K >= 2"):
        logit_confidence(torch.zeros(3, 1), torch.zeros(3, dtype=torch.long))


def test_balanced_masks_put_every_example_in_half_the_shadows() -> None:
    masks = membership_masks(1000, 16, seed=3)
    assert masks.shape == (16, 1000) and masks.dtype == torch.bool
    assert (masks.sum(0) == 8).all()
    assert (masks.sum(1) - 500).abs().max() < 60  # each shadow trains on about half
    assert torch.equal(masks, membership_masks(1000, 16, seed=3))
    assert not torch.equal(masks, membership_masks(1000, 16, seed=4))
    half = membership_masks(101, 3, seed=0, scheme="half")
    assert (half.sum(1) == 50).all()
    with pytest.raises(InputError, match="scheme"):
        membership_masks(10, 2, seed=0, scheme="thirds")  # type: ignore[arg-type]


def _gaussian_world(n_shadows: int, m: int = 400, gap: float = 3.0, seed: int = 0):
    """Per-example OUT means spread widely (hard and easy examples), IN means ``gap`` higher,
    unit noise; the target's phi comes from IN for the first half of the examples."""
    g = torch.Generator().manual_seed(seed)
    mu = torch.randn(m, generator=g, dtype=torch.float64) * 5
    mask = membership_masks(m, n_shadows, seed)
    shadow = mu + gap * mask + torch.randn(n_shadows, m, generator=g, dtype=torch.float64)
    member = torch.arange(m) < m // 2
    target = mu + gap * member + torch.randn(m, generator=g, dtype=torch.float64)
    return target, shadow, mask, member


@pytest.mark.parametrize(
    ("offline", "fix_variance"), [(False, True), (False, False), (True, True), (True, False)]
)
def test_lira_scores_separate_constructed_gaussians(offline: bool, fix_variance: bool) -> None:
    target, shadow, mask, member = _gaussian_world(16)
    scores = lira_scores(target, shadow, mask, offline=offline, fix_variance=fix_variance)
    assert scores.shape == (400,) and scores.dtype == torch.float64
    m = membership_metrics(scores, member)
    assert m["auc"] > 0.9
    # the per-example calibration is what beats a global threshold on phi
    assert m["auc"] > membership_metrics(target, member)["auc"] + 0.1


def test_lira_scores_by_hand_and_bad_shapes() -> None:
    # one example, shadows IN at 1 and 3, OUT at -1 and -3: mu_in 2, mu_out -2, pooled sd
    # sqrt((1 + 1 + 1 + 1) / 2) = sqrt(2); online score (linear, shared variance):
    # ((t - mu_out)^2 - (t - mu_in)^2) / (2 s^2) = 8 t / 4 = 2 t
    shadow = torch.tensor([[1.0], [3.0], [-1.0], [-3.0]])
    mask = torch.tensor([[True], [True], [False], [False]])
    assert lira_scores(torch.tensor([0.5]), shadow, mask).item() == pytest.approx(1.0)
    # offline: -log Pr[Z > t] with Z ~ N(-2, sd_out^2), sd_out pooled over OUT only = sqrt(2)
    z = (0.5 + 2) / 2**0.5
    expected = -torch.special.log_ndtr(torch.tensor(-z, dtype=torch.float64)).item()
    assert lira_scores(torch.tensor([0.5]), shadow, mask, offline=True).item() == pytest.approx(
        expected
    )
    # N = 2: one shadow per side has no within-example spread; the code falls back, finitely
    two = lira_scores(torch.tensor([0.0, 1.0]), torch.tensor([[1.0, 2.0], [0.0, 0.5]]),
                      torch.tensor([[True, False], [False, True]]))  # fmt: skip
    assert torch.isfinite(two).all()
    with pytest.raises(InputError, match="shapes do not fit"):
        lira_scores(torch.zeros(3), torch.zeros(4, 2), torch.ones(4, 2, dtype=torch.bool))
    with pytest.raises(InputError, match="no OUT shadow"):
        lira_scores(torch.zeros(1), torch.zeros(2, 1), torch.ones(2, 1, dtype=torch.bool))
    with pytest.raises(InputError, match="per-example variances"):
        lira_scores(torch.zeros(1), shadow[1:], mask[1:], fix_variance=False)


# -- end to end on a toy problem ------------------------------------------------------------


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """200 digits with random labels; the target MLP memorises the first 100 (train accuracy 1,
    non-members at chance), so membership is (nearly) perfectly separable."""
    digits = load_dataset("digits", "train")
    g = torch.Generator().manual_seed(0)
    pop = ArrayDataset(
        digits.x[:200], torch.randint(0, 10, (200,), generator=g), digits.classes,
        digits.mean, digits.std, name="toy",
    )  # fmt: skip
    recipe = ShadowRecipe(
        ModelSpec.for_data("mlp", pop),
        TrainSettings(epochs=40, lr=0.1, batch_size=25, weight_decay=0.0),
    )
    member = torch.arange(200) < 100
    target = recipe.train(pop.subset(torch.arange(100)), seed=12345, device="cpu")
    cache = tmp_path_factory.mktemp("shadows")
    lira = LiRA(recipe, pop, 8, seed=0, cache=cache, device="cpu", progress=False).fit()
    return pop, recipe, target, member, lira, cache


@pytest.mark.slow
def test_lira_finds_memorised_members_and_not_an_untrained_models(toy) -> None:
    pop, recipe, target, member, lira, _ = toy
    assert lira.fix_variance and lira.queries == 1  # defaults: 8 shadows, no flip in the recipe
    assert lira.shadow_phi is not None and lira.shadow_phi.shape == (8, 200, 1)
    for offline in (False, True):
        m = membership_metrics(lira.score(target, offline=offline), member)
        assert m["auc"] > 0.95 and m["tpr_at_1fpr"] > 0.3, (offline, m)
    torch.manual_seed(7)
    untrained = recipe.spec.build()
    m = membership_metrics(lira.score(untrained), member)
    assert abs(m["auc"] - 0.5) < 0.1, m


@pytest.mark.slow
def test_shadow_cache_trains_nothing_twice_and_resumes_the_missing_one(toy) -> None:
    pop, recipe, target, member, lira, cache = toy
    first = lira.score(target)
    again = LiRA(recipe, pop, 8, seed=0, cache=cache, device="cpu", progress=False).fit()
    assert again.shadow_models is not None and again.shadow_models.trained == 0
    assert torch.equal(again.score(target), first)
    # a run killed before shadow 5 was written: only that one is trained, to the same weights
    sm = again.shadow_models
    sm.path(5).unlink()
    sm.path(5).with_suffix(".json").unlink()
    resumed = train_shadows(recipe, pop, 8, seed=0, cache=cache, device="cpu", progress=False)
    assert resumed.trained == 1 and len(list(sm.folder.glob("shadow-*.safetensors"))) == 8
    before, after = lira.shadow_models.model(5).state_dict(), resumed.model(5).state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    # a damaged file is retrained, never trusted
    sm.path(2).write_bytes(b"not a checkpoint")
    damaged = train_shadows(recipe, pop, 8, seed=0, cache=cache, device="cpu", progress=False)
    assert damaged.trained == 1
    # another seed is another set
    assert (
        lira.shadow_models.folder
        != train_shadows(recipe, pop, 2, seed=1, cache=cache, device="cpu", progress=False).folder
    )


def test_recipe_with_its_own_loss_needs_a_cache_key(tmp_path) -> None:
    data = load_dataset("digits", "test")
    recipe = ShadowRecipe(ModelSpec.for_data("mlp", data), loss_fn=F.cross_entropy)
    with pytest.raises(InputError, match="key="):
        train_shadows(recipe, data, 2, cache=tmp_path)
    with pytest.raises(InputError, match="shadows must be an integer >= 2"):
        LiRA(recipe, data, 1)
