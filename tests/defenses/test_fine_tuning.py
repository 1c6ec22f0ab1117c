"""Fine-tuning (BackdoorBench's ``ft``): defaults, the repair on a planted backdoor, errors."""

from __future__ import annotations

import copy

import pytest
import torch

from trustlab.attacks.backdoor.artifact import evaluate_backdoor
from trustlab.defenses.backdoor.fine_tuning import FT_SETTINGS, FineTuning, fine_tune
from trustlab.errors import InputError
from trustlab.registry import DEFENSES
from trustlab.train import TrainSettings


def test_defaults_are_backdoorbench_ft() -> None:
    s = FineTuning().settings
    assert s == FT_SETTINGS
    assert (s.epochs, s.batch_size, s.lr, s.optimizer) == (100, 256, 0.01, "sgd")
    assert (s.momentum, s.weight_decay, s.schedule) == (0.9, 5e-4, "cosine")
    card = DEFENSES.get("fine-tuning")
    assert card.meta["protocol"] == "repairer" and card.meta["budget"] == "settings"


def test_lowers_asr_keeps_clean_accuracy(planted) -> None:
    art, clean, ev = planted
    before = evaluate_backdoor(art.model, ev, art.trigger, art.policy)
    assert before["asr"] > 0.9
    params = [p.detach().clone() for p in art.model.parameters()]
    ft = FineTuning(TrainSettings(epochs=5, lr=0.05, batch_size=32))
    model = ft.repair(copy.deepcopy(art.model), clean)
    after = evaluate_backdoor(model, ev, art.trigger, art.policy)
    assert after["asr"] < before["asr"] - 0.2  # measured: 100% -> 63%
    assert after["clean_acc"] >= before["clean_acc"] - 0.05
    assert ft.report is not None and set(ft.report) >= {"accuracy_before", "accuracy_after"}
    # the artefact's model is untouched and the repaired one keeps its state-dict keys
    assert all(torch.equal(a, b) for a, b in zip(params, art.model.parameters(), strict=True))
    assert model.state_dict().keys() == art.model.state_dict().keys()


def test_same_seed_same_weights(planted) -> None:
    art, clean, _ = planted
    s = TrainSettings(epochs=1, lr=0.05, batch_size=64, seed=3)
    a = fine_tune(copy.deepcopy(art.model), clean, s)
    b = fine_tune(copy.deepcopy(art.model), clean, s)
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters(), strict=True))


def test_run_case_uses_the_bench_budget(planted) -> None:
    from trustlab.defenses.backdoor.case import DefenseCase

    art, clean, ev = planted
    before = evaluate_backdoor(art.model, ev, art.trigger, art.policy)
    keep: dict = {}
    budget = TrainSettings(epochs=1, lr=0.05, batch_size=64)
    case = DefenseCase(art, None, clean, ev, before, budget, 0, {}, False, keep)
    out = FineTuning.run_case(case)
    assert set(out) == {"clean_acc_after", "asr_after", "der"}
    assert keep["report"]["settings"]["epochs"] == 1


def test_errors(planted) -> None:
    art, clean, _ = planted
    with pytest.raises(InputError, match="TrainSettings"):
        FineTuning(settings={"epochs": 1})  # type: ignore[arg-type]
    with pytest.raises(InputError, match="batch_size"):
        FineTuning(batch_size=0)
    with pytest.raises(InputError, match="empty"):
        FineTuning().repair(copy.deepcopy(art.model), clean.subset([]))
    with pytest.raises(InputError, match="no parameters"):
        fine_tune(torch.nn.Identity(), clean, TrainSettings(epochs=1))
