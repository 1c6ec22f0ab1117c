"""The worst-case cascade: never above any single attack, resumable, state checked."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from trustlab.attacks.evasion import FGSM, PGD, evaluate_robustness
from trustlab.data import ArrayDataset
from trustlab.errors import InputError


def setup():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    g = torch.Generator().manual_seed(1)
    x = torch.rand(120, 1, 4, 4, generator=g)
    data = ArrayDataset(x, model(x).argmax(1).detach(), ["a", "b", "c"])
    data.y[:10] = (data.y[:10] + 1) % 3  # a few misclassified points
    return model, data


def test_worst_case_is_at_most_every_attack() -> None:
    model, data = setup()
    attacks = {"fgsm": FGSM(model, eps=0.05), "pgd": PGD(model, eps=0.05, steps=10)}
    rep = evaluate_robustness(model, data, attacks, batch_size=32)
    assert rep.clean_accuracy == pytest.approx(110 / 120)
    singles = [evaluate_robustness(model, data, {k: v}).robust_accuracy for k, v in attacks.items()]
    assert rep.robust_accuracy <= min(singles) + 1e-9
    assert list(rep.after_attack) == ["fgsm", "pgd"]
    assert rep.after_attack["fgsm"] >= rep.after_attack["pgd"] == rep.robust_accuracy
    assert rep.robust_accuracy < rep.clean_accuracy
    assert int(rep.robust_mask.sum()) == round(rep.robust_accuracy * 120)


def test_resumes_from_state(tmp_path, monkeypatch) -> None:
    model, data = setup()
    state = tmp_path / "state.safetensors"
    calls = []
    atk = PGD(model, eps=0.05, steps=5)
    orig = PGD.__call__

    def counting(self, x, y, target=None):
        calls.append(x.shape[0])
        if len(calls) == 2:
            raise KeyboardInterrupt
        return orig(self, x, y, target)

    monkeypatch.setattr(PGD, "__call__", counting)
    with pytest.raises(KeyboardInterrupt):
        evaluate_robustness(model, data, {"pgd": atk}, batch_size=40, state_path=state)
    assert state.exists()
    calls.clear()
    monkeypatch.setattr(PGD, "__call__", orig)
    resumed = evaluate_robustness(model, data, {"pgd": atk}, batch_size=40, state_path=state)
    fresh = evaluate_robustness(model, data, {"pgd": atk}, batch_size=40)
    assert resumed.robust_accuracy == fresh.robust_accuracy
    with pytest.raises(InputError, match="another evaluation"):
        evaluate_robustness(model, data.subset(range(50)), {"pgd": atk}, state_path=state)
    with pytest.raises(InputError):
        evaluate_robustness(model, data, {})


def test_report_carries_the_imbalanced_gradient_diagnostic() -> None:
    from trustlab.attacks.evasion.md import imbalance_ratio

    model, data = setup()
    attacks = {"fgsm": FGSM(model, eps=0.05)}
    rep = evaluate_robustness(model, data, attacks, batch_size=32)
    clean = model(data.x).argmax(1) == data.y
    want = float(imbalance_ratio(model, data.x[clean], data.y[clean]).median())
    assert rep.imbalance == pytest.approx(want)
    assert rep.imbalance >= 1
    assert rep.to_dict()["imbalance"] == pytest.approx(want)
    flagged = evaluate_robustness(model, data, attacks, imbalance_threshold=0.5)
    assert flagged.imbalance_flag and "overestimated" in flagged.to_dict()["warning"]
    calm = evaluate_robustness(model, data, attacks, imbalance_threshold=float("inf"))
    assert not calm.imbalance_flag and "warning" not in calm.to_dict()
    off = evaluate_robustness(model, data, attacks, diagnostic=False)
    assert off.imbalance is None and not off.imbalance_flag
