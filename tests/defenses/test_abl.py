"""ABL: the LGA loss by hand, the isolation of a planted BadNets backdoor (720 digits, 10%
poisoned, cnn-small trained 3 epochs with the per-sample LGA; one module-scoped fixture), the
unlearning, and the dataset-filter protocol."""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from trustlab.attacks.backdoor.artifact import evaluate_backdoor
from trustlab.attacks.backdoor.poison import PoisonedDataset
from trustlab.attacks.backdoor.triggers import Trigger
from trustlab.data import ArrayDataset, load_dataset
from trustlab.defenses.backdoor.abl import ABL, lga_loss
from trustlab.defenses.backdoor.base import DatasetFilter, FilterReport
from trustlab.errors import InputError
from trustlab.models.spec import ModelSpec
from trustlab.registry import BACKDOORS
from trustlab.train import TrainSettings


def test_lga_loss_flips_sign_at_gamma() -> None:
    y = torch.tensor([0, 1])
    confident = torch.tensor([[5.0, 0.0], [0.0, 5.0]])  # CE ~0.0067 < 0.5: ascend
    unsure = torch.zeros(2, 2)  # CE = log 2 ~0.69 > 0.5: descend
    assert lga_loss(confident, y, 0.5) == pytest.approx(-float(F.cross_entropy(confident, y)))
    assert lga_loss(unsure, y, 0.5) == pytest.approx(math.log(2))
    assert lga_loss(unsure, y, 1.0) == pytest.approx(-math.log(2))  # gamma above the loss
    # the gradient is the cross-entropy's, with the sign of (CE - gamma)
    for gamma, sign in ((0.5, 1.0), (1.0, -1.0)):
        z = unsure.clone().requires_grad_(True)
        (g_lga,) = torch.autograd.grad(lga_loss(z, y, gamma), z)
        (g_ce,) = torch.autograd.grad(F.cross_entropy(z, y), z)
        assert torch.allclose(g_lga, sign * g_ce)
    # per sample (the paper's expectation): each sample's own sign
    mixed = torch.tensor([[5.0, 0.0], [0.0, 0.0]])
    each = F.cross_entropy(mixed, y, reduction="none")
    expected = float((-each[0] + each[1]) / 2)
    assert lga_loss(mixed, y, 0.5, per_sample=True) == pytest.approx(expected)


@dataclass
class Run:
    data: PoisonedDataset
    test: ArrayDataset
    trigger: Trigger
    policy: object
    abl: ABL
    report: FilterReport
    isolation_model: nn.Module


@pytest.fixture(scope="module")
def run() -> Run:
    torch.set_num_threads(1)
    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    recipe = BACKDOORS.build("badnets")
    trigger, policy = recipe.trigger(train), recipe.policy(0, train.num_classes)
    data = recipe.poison(train.subset(torch.arange(720)), trigger, policy, rate=0.1, seed=0)
    torch.manual_seed(1)
    fresh = ModelSpec.for_data("cnn-small", train).build()
    settings = TrainSettings(epochs=3, lr=0.05, batch_size=16, seed=0)
    abl = ABL(fresh, settings, finetune_epochs=0, unlearn_lr=1e-2, lga="sample", seed=0)
    report = abl.analyze(data)
    assert abl.isolation_model is not None
    return Run(data, test, trigger, policy, abl, report, copy.deepcopy(abl.isolation_model))


def test_isolation_picks_mostly_poisoned_samples(run: Run) -> None:
    assert isinstance(run.abl, DatasetFilter)
    flagged = run.report.flagged
    assert flagged.dtype == torch.int64 and len(flagged) == int(0.01 * len(run.data))  # 7
    assert torch.equal(flagged, torch.sort(flagged).values)
    m = run.report.metrics
    # measured: precision 1.0 (7 of 7; the base rate is 0.10), score AUROC 0.79
    assert m["precision"] >= 0.7 and m["auroc"] > 0.6
    assert run.report.scores.shape == (len(run.data),)
    assert run.report.extra["lga"] == "sample"


def test_unlearning_lowers_asr_and_keeps_accuracy(run: Run) -> None:
    before = evaluate_backdoor(run.isolation_model, run.test, run.trigger, run.policy)
    model = copy.deepcopy(run.isolation_model)
    assert run.abl.finetune_and_unlearn(model, run.data, run.report.flagged) is model
    after = evaluate_backdoor(model, run.test, run.trigger, run.policy)
    # measured: ASR 0.98 -> 0.30, clean accuracy 0.942 -> 0.939 (5 ascent steps at lr 1e-2)
    assert after["asr"] < before["asr"] - 0.2
    assert after["clean_acc"] > before["clean_acc"] - 0.05
    assert len(run.abl._histories["unlearn"]) == 5


def test_abl_settings_and_bad_input() -> None:
    net = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    abl = ABL(net)  # the authors' defaults
    assert abl.settings.epochs == 20 and abl.settings.lr == 0.1 and abl.settings.nesterov
    assert abl.finetune is not None and abl.finetune.epochs == 60
    assert abl.finetune.step_milestones() == [40]
    assert abl.unlearn is not None and abl.unlearn.lr == 5e-4 and abl.unlearn.epochs == 5
    budget = ABL(net, TrainSettings(epochs=2, lr=0.05))
    assert budget.finetune is not None and budget.finetune.epochs == 2
    with pytest.raises(InputError, match="isolation_ratio"):
        ABL(net, isolation_ratio=0)
    with pytest.raises(InputError, match="lga"):
        ABL(net, lga="global")
