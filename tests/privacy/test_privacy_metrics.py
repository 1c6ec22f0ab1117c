"""Membership-inference metrics on score vectors whose values are known by hand."""

from __future__ import annotations

import pytest
import torch

from trustlab.errors import InputError
from trustlab.metrics.privacy import (
    membership_advantage,
    membership_auc,
    membership_metrics,
    tpr_at_low_fpr,
)


def test_perfect_and_reversed_scores() -> None:
    member = [1, 1, 0, 0]
    assert membership_metrics([3.0, 2.0, 1.0, 0.0], member) == {
        "auc": 1.0, "tpr_at_1fpr": 1.0, "tpr_at_01fpr": 1.0, "advantage": 1.0,
    }  # fmt: skip
    worst = membership_metrics([0.0, 1.0, 2.0, 3.0], member)
    # the trivial thresholds (all or nothing a member) keep the advantage at 0, not -1
    assert worst == {"auc": 0.0, "tpr_at_1fpr": 0.0, "tpr_at_01fpr": 0.0, "advantage": 0.0}


def test_interleaved_scores_by_hand() -> None:
    scores = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4]
    member = [1, 0, 1, 0, 1, 0]
    # members beat 3, 2 and 1 of the 3 non-members: AUC 6/9
    assert membership_auc(scores, member) == pytest.approx(6 / 9)
    # thresholds 0.9, 0.7, 0.5 give (TPR, FPR) = (1/3, 0), (2/3, 1/3), (1, 2/3)
    assert membership_advantage(scores, member) == pytest.approx(1 / 3)
    assert tpr_at_low_fpr(scores, member, 0.01) == pytest.approx(1 / 3)
    assert tpr_at_low_fpr(scores, member, 0.34) == pytest.approx(2 / 3)


def test_ties_count_half_and_share_a_threshold() -> None:
    assert membership_auc([1.0, 1.0, 0.0], [1, 0, 0]) == pytest.approx(0.75)
    flat = membership_metrics([0.5] * 6, [1, 0, 1, 0, 1, 0])
    assert flat == {"auc": 0.5, "tpr_at_1fpr": 0.0, "tpr_at_01fpr": 0.0, "advantage": 0.0}
    # a tie between the top member and a non-member: no threshold separates them
    assert tpr_at_low_fpr([2.0, 2.0, 1.0, 0.0], [1, 0, 1, 0], 0.01) == 0.0


def test_low_fpr_resolution_follows_the_number_of_nonmembers() -> None:
    # 100 members, 2,000 non-members; the top 10 scores are members, then 2 non-members, then
    # 20 more members: at 0.1% FPR (2 of 2,000 false positives allowed) TPR is 30/100
    n_mem, n_non = 100, 2000
    scores = torch.cat(
        [torch.arange(10) + 1000.0, torch.tensor([900.0, 899.0]), torch.arange(20) + 800.0,
         torch.arange(70) - 100.0, torch.arange(n_non - 2) * 1e-3]
    )  # fmt: skip
    member = torch.cat(
        [torch.ones(10), torch.zeros(2), torch.ones(20), torch.ones(70), torch.zeros(n_non - 2)]
    ).bool()
    assert int(member.sum()) == n_mem
    m = membership_metrics(scores, member)
    assert m["tpr_at_01fpr"] == pytest.approx(0.30)
    assert m["tpr_at_1fpr"] == pytest.approx(0.30)  # the other 70 members score below 1,998
    # with fewer than 1,000 non-members the 0.1% point is the TPR at zero false positives
    few = torch.cat([scores[:32], scores[-500:]]), torch.cat([member[:32], member[-500:]])
    assert tpr_at_low_fpr(*few, 0.001) == pytest.approx(10 / 30)


def test_random_scores_are_near_chance() -> None:
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(20_000, generator=g)
    member = torch.rand(20_000, generator=g) < 0.5
    m = membership_metrics(scores, member)
    assert abs(m["auc"] - 0.5) < 0.02
    assert m["advantage"] < 0.03
    assert m["tpr_at_1fpr"] < 0.03


def test_bad_input_names_the_problem() -> None:
    with pytest.raises(InputError, match="NaN or inf"):
        membership_metrics([0.1, float("nan")], [1, 0])
    with pytest.raises(InputError, match="2 scores but 3"):
        membership_metrics([0.1, 0.2], [1, 0, 1])
    with pytest.raises(InputError, match="positives and negatives"):
        membership_metrics([0.1, 0.2], [1, 1])
    with pytest.raises(InputError, match="1-D"):
        membership_metrics(torch.zeros(2, 2), [1, 0])
    with pytest.raises(InputError, match="0/1"):
        membership_metrics([0.1, 0.2], [2, 0])
    with pytest.raises(InputError, match="fpr must be in"):
        tpr_at_low_fpr([0.1, 0.2], [1, 0], 1.5)
