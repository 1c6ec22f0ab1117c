"""Refool's candidate pool and its selection by trial poisoning (Algorithm 1)."""

from __future__ import annotations

import statistics

import pytest
import torch
from torch import nn

from trustlab.attacks.backdoor import CleanLabel, PatchTrigger, PixelTrigger, poison_dataset
from trustlab.attacks.backdoor.artifact import evaluate_backdoor
from trustlab.attacks.backdoor.refool import (
    candidate_name,
    reflection_candidates,
    select_reflections,
)
from trustlab.data import ArrayDataset
from trustlab.errors import InputError


class Brightness(nn.Module):
    """Predicts class 0 when an image's mean exceeds ``threshold``, else its own class 1."""

    def __init__(self, threshold: float) -> None:
        super().__init__()
        self.threshold = threshold

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = 1000 * (x.flatten(1).mean(1) - self.threshold)
        return torch.stack([s, torch.zeros_like(s), torch.full_like(s, -1e3)], 1)


def _data(n: int = 60, seed: int = 0) -> ArrayDataset:
    g = torch.Generator().manual_seed(seed)
    x = 0.3 * torch.rand(n, 3, 16, 16, generator=g)
    y = torch.arange(n) % 3
    return ArrayDataset(x, y, ["a", "b", "c"])


def test_candidates_cover_images_and_models_and_are_deterministic() -> None:
    c = reflection_candidates(["chelsea", "camera"], size=(16, 16), seed=1)
    assert [candidate_name(t) for t in c] == [
        "chelsea/in-focus", "chelsea/out-of-focus", "chelsea/ghost",
        "camera/in-focus", "camera/out-of-focus", "camera/ghost",
    ]  # fmt: skip
    again = reflection_candidates(["chelsea", "camera"], size=(16, 16), seed=1)
    x = _data().x[:4]
    for a, b in zip(c, again, strict=True):
        assert torch.equal(a(x), b(x))
    with pytest.raises(InputError, match="reflection model"):
        reflection_candidates(["chelsea"], models=["mirror"])
    with pytest.raises(InputError, match="no reflection images"):
        reflection_candidates([])


def test_selection_weights_follow_algorithm_1() -> None:
    train, val = _data(60, 0), _data(30, 1)
    cands = reflection_candidates(["chelsea", "camera", "coins", "moon"], size=(16, 16))
    model = Brightness(0.3)  # brighter reflections fire more often
    calls = []

    def trial(data: ArrayDataset, r: int) -> nn.Module:
        calls.append((r, int(data.poison_mask.sum())))
        return model

    sel = select_reflections(cands, train, val, trial, rate=0.1, keep=3, rounds=2, seed=0)
    assert [c[0] for c in calls] == [0, 1] and all(k == 6 for _, k in calls)
    policy = CleanLabel(0, 3)
    last = sel.rounds[-1]
    asr = {i: evaluate_backdoor(model, val, cands[i], policy)["asr"] for i in last["used"]}
    assert [asr[i] for i in last["used"]] == last["asr"]
    med = statistics.median(asr.values())
    for i, w in enumerate(sel.weights):
        assert w == asr.get(i, med)
    assert sel.weights[sel.indices[0]] == max(sel.weights) and sel.best is sel.triggers[0]
    assert sorted(sel.indices) == list(range(len(cands)))
    # untried candidates are tried in the second round when the first round's ASRs are < 1
    assert set(sel.rounds[0]["used"]) != set(last["used"])
    again = select_reflections(cands, train, val, trial, rate=0.1, keep=3, rounds=2, seed=0)
    assert again.indices == sel.indices and again.weights == sel.weights


def test_selection_rejects_bad_arguments() -> None:
    cands = reflection_candidates(["chelsea"], size=(16, 16))
    with pytest.raises(InputError, match="at least one"):
        select_reflections([], _data(), _data(), lambda d, r: Brightness(0.3))
    with pytest.raises(InputError, match="keep and rounds"):
        select_reflections(cands, _data(), _data(), lambda d, r: Brightness(0.3), rounds=0)


def test_poison_with_a_set_of_triggers_spreads_them_in_turn() -> None:
    data = _data(60)
    triggers = [PatchTrigger(size=2, channels=3), PixelTrigger(channels=3)]
    out = poison_dataset(data, triggers, CleanLabel(0, 3), rate=0.1, seed=0)
    idx = out.poison_indices
    assert len(idx) == 6 and bool((out.y == data.y).all())
    for k, i in enumerate(idx.tolist()):
        expect = triggers[k % 2](data.x[i : i + 1])[0]
        assert torch.equal(out.x[i], expect)
    with pytest.raises(InputError, match="Trigger"):
        poison_dataset(data, [], CleanLabel(0, 3), rate=0.1)
