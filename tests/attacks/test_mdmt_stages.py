"""MDMT runs both stage-1 terms (-z_y, then z_t) for every target, as the reference MDMTAttack
(HanxunH/MDAttack attacks/MD.py) does."""

from __future__ import annotations

import torch
from torch import nn

from trustlab.attacks.evasion.md import MD, MDMT, stage_objective


def _linear(k: int = 5) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, k))


def test_every_target_gets_both_stage1_terms(monkeypatch) -> None:
    calls: list[tuple[int, torch.Tensor]] = []

    def spy(self, x, y, other, run, gen):
        calls.append((run, other.clone()))
        return x.clone(), torch.zeros(len(x), dtype=torch.bool)  # never fooled: every run runs

    monkeypatch.setattr(MD, "_run", spy)
    model = _linear()
    x = torch.rand(6, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    y = torch.arange(6) % 5
    MDMT(model, steps=4, switch=2, n_target_classes=3)(x, y)
    assert len(calls) == 6  # 2 runs per target
    with torch.no_grad():
        logits = model(x)
    order = logits.scatter(1, y[:, None], float("-inf")).argsort(1, descending=True)
    for i in range(3):
        (r0, t0), (r1, t1) = calls[2 * i], calls[2 * i + 1]
        assert torch.equal(t0, order[:, i]) and torch.equal(t1, order[:, i])
        assert {stage_objective(1, 2, r0), stage_objective(1, 2, r1)} == {"-z_y", "z_other"}
