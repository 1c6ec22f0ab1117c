"""RMIA: scores on hand-made probabilities (online, offline with a), invariances, the trimmed
mean, bad input, and the attack end to end on a tiny overfit cnn-small with LiRA's cached
shadows."""

from __future__ import annotations

import pytest
import torch

from trustlab.attacks.privacy import LiRA, ShadowRecipe
from trustlab.attacks.privacy.rmia import (
    OFFLINE_A_GRID,
    RMIA,
    rmia_scores,
    trimmed_mean,
    tune_offline_a,
)
from trustlab.data import load_dataset
from trustlab.errors import InputError
from trustlab.metrics.privacy import membership_metrics
from trustlab.models.spec import ModelSpec
from trustlab.registry import PRIVACY_ATTACKS
from trustlab.train import TrainSettings

# four examples (the last two are the population z), four reference models, each example IN
# for two of them
TARGET = torch.tensor([0.9, 0.5, 0.6, 0.2])
REF = torch.tensor(
    [[0.8, 0.3, 0.5, 0.4], [0.6, 0.5, 0.3, 0.2], [0.4, 0.2, 0.4, 0.3], [0.2, 0.4, 0.2, 0.1]]
)
IN = torch.tensor([[1, 0, 1, 0], [1, 1, 0, 0], [0, 1, 0, 1], [0, 0, 1, 1]]).bool()
Z = torch.tensor([False, False, True, True])


def test_online_scores_by_hand() -> None:
    # Pr(x) = mean over all four models (trim 0.2 cuts nothing from 4): 0.5, 0.35, 0.35, 0.25
    # LR = 0.9/0.5 = 1.8, 0.5/0.35 = 1.43, 0.6/0.35 = 1.71, 0.2/0.25 = 0.8; z = examples 2, 3
    # gamma 2: 1.8/1.71 no, 1.8/0.8 = 2.25 yes -> 1/2; 1.43/0.8 = 1.79 no -> 0;
    #          1.71/1.71 = 1 no, 1.71/0.8 = 2.14 yes -> 1/2; 0.8/. no -> 0
    s = rmia_scores(TARGET, REF, IN, Z)
    assert s.dtype == torch.float64 and s.tolist() == [0.5, 0.0, 0.5, 0.0]
    # gamma 1: 1.8 beats both; 1.43 beats 0.8 only; 1.71 beats 0.8 (not itself: 1 > 1 fails)
    assert rmia_scores(TARGET, REF, IN, Z, gamma=1.0).tolist() == [1.0, 0.5, 0.5, 0.0]
    # positions select the same population as the mask
    assert torch.equal(rmia_scores(TARGET, REF, IN, torch.tensor([2, 3])), s)


def test_offline_scores_by_hand_with_a() -> None:
    # OUT means: (0.4+0.2)/2 = 0.3, (0.3+0.4)/2 = 0.35, (0.3+0.4)/2 = 0.35, (0.4+0.2)/2 = 0.3
    # Pr(x) = ((1 + 0.3) Pr_OUT + 0.7) / 2 = 0.545, 0.5775, 0.5775, 0.545
    # LR = 1.651, 0.866, 1.039, 0.367
    # gamma 2: 1.651/1.039 = 1.59 no, 1.651/0.367 = 4.5 yes; 0.866/0.367 = 2.36 yes;
    #          1.039/0.367 = 2.83 yes; 0.367 beats nothing
    assert rmia_scores(TARGET, REF, IN, Z, offline=True).tolist() == [0.5, 0.5, 0.5, 0.0]
    # gamma 1.5: 1.59 now passes for example 0
    s = rmia_scores(TARGET, REF, IN, Z, offline=True, gamma=1.5)
    assert s.tolist() == [1.0, 0.5, 0.5, 0.0]
    # a = 1: Pr(x) = Pr_OUT: LR = 3, 1.43, 1.71, 0.67: 3/1.71 = 1.75 passes 1.5, 1.43/0.67 = 2.14
    s = rmia_scores(TARGET, REF, IN, Z, offline=True, gamma=1.5, offline_a=1.0)
    assert s.tolist() == [1.0, 0.5, 0.5, 0.0]
    # a = 0: Pr(x) = (Pr_OUT + 1) / 2 = 0.65, 0.675, 0.675, 0.65: LR = 1.385, 0.741, 0.889, 0.308
    # gamma 1.5: 1.385/0.889 = 1.56 yes, 1.385/0.308 = 4.5 yes; 0.741/0.308 = 2.41 yes; 2.89 yes
    s = rmia_scores(TARGET, REF, IN, Z, offline=True, gamma=1.5, offline_a=0.0)
    assert s.tolist() == [1.0, 0.5, 0.5, 0.0]
    assert rmia_scores(TARGET, REF, IN, Z, offline=True, gamma=1.6, offline_a=0.0)[0] == 0.5


def test_trimmed_mean_cuts_like_scipy() -> None:
    v = torch.tensor([[1.0, 5], [2, 6], [3, 7], [4, 8], [100, 9]]).unsqueeze(-1)
    everything = torch.ones(5, 2, dtype=torch.bool)
    # 5 values: floor(0.2 * 5) = 1 cut at each end; 4 values: nothing cut
    assert trimmed_mean(v, everything).squeeze(-1).tolist() == [3.0, 7.0]
    fewer = everything.clone()
    fewer[4, 1] = False
    assert trimmed_mean(v, fewer).squeeze(-1).tolist() == [3.0, 6.5]
    assert trimmed_mean(v, everything, trim=0.0).squeeze(-1).tolist() == [22.0, 7.0]
    # 10 values: 2 cut at each end (scipy.stats.trim_mean(values, 0.2))
    ten = torch.tensor([9.0, -50, 1, 2, 3, 4, 5, 6, 70, 0]).reshape(10, 1, 1)
    assert trimmed_mean(ten, torch.ones(10, 1, dtype=torch.bool)).item() == pytest.approx(3.5)


def test_scores_lie_in_unit_interval_and_grow_with_the_targets_confidence() -> None:
    g = torch.Generator().manual_seed(1)
    m, n = 60, 6
    ref = torch.rand(n, m, generator=g, dtype=torch.float64)
    mask = torch.rand(n, m, generator=g).argsort(0).argsort(0) < n // 2
    target = torch.rand(m, generator=g, dtype=torch.float64)
    z = torch.arange(m) >= 20
    for offline in (False, True):
        base = rmia_scores(target, ref, mask, z, offline=offline)
        assert ((base >= 0) & (base <= 1)).all()
        others = torch.arange(m) != 3
        seen = []
        for p in torch.linspace(0.0, 1.0, 11, dtype=torch.float64):  # raise example 3's confidence
            t = target.clone()
            t[3] = p
            s = rmia_scores(t, ref, mask, z, offline=offline)
            assert torch.equal(s[others], base[others])  # example 3 is not a population sample
            seen.append(float(s[3]))
        assert seen == sorted(seen) and seen[-1] > seen[0] == 0.0, seen


def test_queries_vote_by_strict_majority_and_chunks_agree() -> None:
    t = torch.stack([TARGET, TARGET], -1)
    ref = torch.stack([REF, REF], -1)
    assert torch.equal(rmia_scores(t, ref, IN, Z), rmia_scores(TARGET, REF, IN, Z))
    # the mirror query of example 0 fails every test: a 1-1 tie fails
    t2 = t.clone()
    t2[0, 1] = 0.01
    assert rmia_scores(t2, ref, IN, Z)[0] == 0.0
    # many examples: the chunked comparison equals a direct one
    g = torch.Generator().manual_seed(2)
    m = 3000
    ref = torch.rand(4, m, generator=g, dtype=torch.float64)
    mask = torch.rand(4, m, generator=g).argsort(0).argsort(0) < 2
    target = torch.rand(m, generator=g, dtype=torch.float64)
    z = torch.arange(m) % 2 == 0
    s = rmia_scores(target, ref, mask, z)
    lr = target / ref.mean(0)
    direct = (lr[:, None] / lr[z][None, :] > 2).double().mean(1)
    assert torch.allclose(s, direct)


def test_bad_input_is_refused() -> None:
    with pytest.raises(InputError, match="shapes do not fit"):
        rmia_scores(TARGET, REF[:, :3], IN, Z)
    with pytest.raises(InputError, match=r"lie in \[0, 1\]"):
        rmia_scores(TARGET + 1, REF, IN, Z)
    with pytest.raises(InputError, match=r"lie in \[0, 1\]"):
        rmia_scores(TARGET, REF * float("nan"), IN, Z)
    with pytest.raises(InputError, match="population example"):
        rmia_scores(TARGET, REF, IN, torch.zeros(4, dtype=torch.bool))
    with pytest.raises(InputError, match="population indices"):
        rmia_scores(TARGET, REF, IN, torch.tensor([7]))
    with pytest.raises(InputError, match="gamma"):
        rmia_scores(TARGET, REF, IN, Z, gamma=0.0)
    with pytest.raises(InputError, match="offline_a"):
        rmia_scores(TARGET, REF, IN, Z, offline=True, offline_a=1.5)
    with pytest.raises(InputError, match="trim"):
        rmia_scores(TARGET, REF, IN, Z, trim=0.5)
    all_in = torch.ones_like(IN)
    with pytest.raises(InputError, match="no OUT reference"):
        rmia_scores(TARGET, REF, all_in, Z)
    with pytest.raises(InputError, match="no IN reference"):
        rmia_scores(TARGET, REF, ~all_in, Z)
    assert rmia_scores(TARGET, REF, ~all_in, Z, offline=True).shape == (4,)  # offline: OUT only
    data = load_dataset("digits", "test")
    recipe = ShadowRecipe(ModelSpec.for_data("mlp", data))
    with pytest.raises(InputError, match="shadows must be an integer >= 2"):
        RMIA(recipe, data, 1)
    with pytest.raises(InputError, match="queries"):
        RMIA(recipe, data, 2, queries=3)
    with pytest.raises(InputError, match="offline_a"):
        RMIA(recipe, data, 2, offline_a=1.5)
    with pytest.raises(InputError, match="fit"):
        RMIA(recipe, data, 2).score(recipe.spec.build())
    card = PRIVACY_ATTACKS.get("rmia")
    assert card.meta["shadows"] and card.meta["min_shadows"] == 2 and card.meta["offline"]


def test_tuned_a_is_the_grid_value_that_best_attacks_a_shadow() -> None:
    g = torch.Generator().manual_seed(3)
    n, m = 6, 300
    mask = torch.rand(n, m, generator=g).argsort(0).argsort(0) < n // 2
    base = torch.rand(m, generator=g, dtype=torch.float64) * 0.6
    ref = (base + 0.3 * mask + 0.05 * torch.rand(n, m, generator=g, dtype=torch.float64)).clamp(
        0, 1
    )
    a = tune_offline_a(ref, mask)
    assert a in OFFLINE_A_GRID
    aucs = [
        membership_metrics(
            rmia_scores(ref[0], ref[1:], mask[1:], ~mask[0], offline=True, offline_a=b), mask[0]
        )["auc"]
        for b in OFFLINE_A_GRID
    ]
    assert aucs[OFFLINE_A_GRID.index(a)] == max(aucs) > 0.8
    assert tune_offline_a(ref, mask, pseudo_target=2) in OFFLINE_A_GRID
    with pytest.raises(InputError, match=">= 3 shadow"):
        tune_offline_a(ref[:2], mask[:2])


# -- end to end on a tiny overfit model ------------------------------------------------------


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """cnn-small trained on the first 100 of 200 digits (memorised; about 0.9 accuracy on the
    rest); LiRA's 4 shadows on the 200, cached; RMIA then loads the same ones."""
    digits = load_dataset("digits", "train")
    pop = digits.subset(torch.arange(200))
    recipe = ShadowRecipe(
        ModelSpec.for_data("cnn-small", pop),
        TrainSettings(epochs=8, lr=0.1, batch_size=25, weight_decay=0.0),
    )
    member = torch.arange(200) < 100
    target = recipe.train(pop.subset(torch.arange(100)), seed=12345, device="cpu")
    cache = tmp_path_factory.mktemp("shadows")
    lira = LiRA(recipe, pop, 4, seed=0, cache=cache, device="cpu", progress=False).fit()
    return pop, recipe, target, member, lira, cache


@pytest.mark.slow
def test_rmia_reuses_liras_shadows_and_beats_chance(toy) -> None:
    pop, recipe, target, member, lira, cache = toy
    rmia = RMIA(recipe, pop, 4, seed=0, cache=cache, device="cpu", progress=False).fit()
    assert rmia.shadow_models is not None and rmia.shadow_models.trained == 0  # LiRA's cache
    assert rmia.shadow_models.folder == lira.shadow_models.folder
    assert rmia.reference_p is not None and rmia.reference_p.shape == (4, 200, 1)
    z = ~member  # the known non-members
    for offline in (False, True):
        r = membership_metrics(rmia.score(target, z, offline=offline), member)
        lr = membership_metrics(lira.score(target, offline=offline), member)
        assert r["auc"] > 0.6, (offline, r)
        assert r["auc"] > lr["auc"] - 0.1, (offline, r, lr)  # comparable to LiRA
    assert rmia.used_a in OFFLINE_A_GRID  # tuned on the 4 shadows (the default "tune")
    # same seed, same numbers; a fixed a is used as given
    again = RMIA(recipe, pop, 4, seed=0, cache=cache, offline_a=0.3, device="cpu", progress=False)
    again.fit()
    assert torch.equal(again.score(target, z), rmia.score(target, z))
    fixed = membership_metrics(again.score(target, z, offline=True), member)
    assert again.used_a == 0.3 and fixed["auc"] > 0.6
