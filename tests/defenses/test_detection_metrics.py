"""Detection metrics on constructed score vectors: AUROC and the ROC curve against scikit-learn,
TPR at a fixed FPR and precision/recall of flagged indices by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score
from sklearn.metrics import roc_curve as sk_roc_curve

from trustlab.errors import InputError
from trustlab.metrics import auroc, flag_precision_recall, roc_curve, tpr_at_fpr


def test_auroc_extremes_and_a_hand_case() -> None:
    labels = torch.tensor([0, 0, 1, 1])
    assert auroc(torch.tensor([0.1, 0.2, 0.8, 0.9]), labels) == 1.0
    assert auroc(torch.tensor([0.9, 0.8, 0.2, 0.1]), labels) == 0.0
    assert auroc(torch.ones(4), labels) == 0.5  # all tied: one half
    # positives 0.3, 0.7; negatives 0.1, 0.5: pairs won 1, 1, 0, 1 -> 3/4
    assert auroc(torch.tensor([0.1, 0.5, 0.3, 0.7]), labels) == pytest.approx(0.75)
    # a tie between a positive and a negative counts one half: (1 + 0.5) / 2
    assert auroc([0.1, 0.5, 0.5, 0.7], [0, 0, 1, 1]) == pytest.approx(1.0 - 0.5 / 4)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_roc_and_auroc_match_scikit_learn_with_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, 300)
    scores = np.round(rng.normal(labels * 0.8, 1.0), 1)  # rounding makes many ties
    assert auroc(torch.from_numpy(scores), torch.from_numpy(labels)) == pytest.approx(
        roc_auc_score(labels, scores), abs=1e-12
    )
    fpr, tpr, thr = roc_curve(torch.from_numpy(scores), torch.from_numpy(labels).bool())
    f2, t2, th2 = sk_roc_curve(labels, scores, drop_intermediate=False)
    np.testing.assert_allclose(fpr.numpy(), f2)
    np.testing.assert_allclose(tpr.numpy(), t2)
    np.testing.assert_allclose(thr.numpy()[1:], th2[1:])
    assert thr[0] == float("inf")


def test_tpr_at_fpr() -> None:
    neg = torch.arange(100, dtype=torch.float64)  # negatives score 0..99
    pos = torch.tensor([96.5, 97.5, 150.0, 160.0, 50.0])
    scores, labels = torch.cat([neg, pos]), torch.cat([torch.zeros(100), torch.ones(5)])
    # thresholds above 95.5 keep FPR <= 5%: positives 96.5, 97.5, 150, 160 -> 4/5
    assert tpr_at_fpr(scores, labels) == pytest.approx(0.8)
    assert tpr_at_fpr(scores, labels, fpr=0.0) == pytest.approx(0.4)  # only 150 and 160
    assert tpr_at_fpr(scores, labels, fpr=1.0) == 1.0
    # against scikit-learn's curve
    f, t, _ = sk_roc_curve(labels.numpy(), scores.numpy(), drop_intermediate=False)
    assert tpr_at_fpr(scores, labels, 0.05) == pytest.approx(t[f <= 0.05].max())


def test_flag_precision_recall_by_hand() -> None:
    truth = torch.zeros(10, dtype=torch.bool)
    truth[[1, 2, 3, 4]] = True
    out = flag_precision_recall(torch.tensor([2, 3, 7]), truth)
    assert out["precision"] == pytest.approx(2 / 3) and out["recall"] == pytest.approx(2 / 4)
    assert out["f1"] == pytest.approx(2 * (2 / 3) * 0.5 / (2 / 3 + 0.5))
    assert (out["flagged"], out["true_positives"], out["positives"]) == (3, 2, 4)
    mask = torch.zeros(10, dtype=torch.bool)
    mask[[2, 3, 7]] = True
    assert flag_precision_recall(mask, truth) == out  # a mask is the same as its indices
    assert flag_precision_recall([3, 2, 7, 7], truth.int()) == out  # duplicates count once
    none = flag_precision_recall(torch.zeros(0, dtype=torch.long), truth)
    assert none["precision"] == 0.0 and none["recall"] == 0.0 and none["f1"] == 0.0
    clean = flag_precision_recall([0], torch.zeros(10, dtype=torch.bool))
    assert clean["precision"] == 0.0 and clean["recall"] == 0.0


def test_bad_input() -> None:
    with pytest.raises(InputError, match="positives and negatives"):
        auroc(torch.rand(5), torch.ones(5))
    with pytest.raises(InputError, match="5 scores but 4"):
        auroc(torch.rand(5), torch.tensor([0, 1, 0, 1]))
    with pytest.raises(InputError, match="NaN"):
        auroc(torch.tensor([0.1, float("nan")]), torch.tensor([0, 1]))
    with pytest.raises(InputError, match="0/1"):
        auroc(torch.rand(3), torch.tensor([0, 1, 2]))
    with pytest.raises(InputError, match="fpr must be"):
        tpr_at_fpr(torch.rand(4), torch.tensor([0, 1, 0, 1]), fpr=1.5)
    with pytest.raises(InputError, match="span"):
        flag_precision_recall(torch.tensor([0, 12]), torch.zeros(10, dtype=torch.bool))
    with pytest.raises(InputError, match="same length"):
        flag_precision_recall(torch.zeros(3, dtype=torch.bool), torch.zeros(10, dtype=torch.bool))
