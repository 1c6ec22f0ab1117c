"""Neural Cleanse: the anomaly index, reverse engineering on a planted trigger, unlearning."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from trustlab.data import ArrayDataset
from trustlab.defenses.backdoor import NeuralCleanse, anomaly_index, flagged_classes
from trustlab.defenses.backdoor.neural_cleanse import apply_reversed
from trustlab.errors import InputError


def _mad_index(n: list[float]) -> np.ndarray:
    a = np.asarray(n, dtype=np.float64)
    med = np.median(a)
    return np.abs(a - med) / (1.4826 * np.median(np.abs(a - med)))


def test_anomaly_index_matches_the_formula_on_hand_made_norms() -> None:
    norms = [1.0, 10.0, 10.5, 11.0, 9.0, 10.0, 12.0, 8.5, 10.0, 9.5]
    # median 10, |dev| = 9, 0, .5, 1, 1, 0, 2, 1.5, 0, .5 -> MAD = median = .75
    expect = np.abs(np.asarray(norms) - 10.0) / (1.4826 * 0.75)
    np.testing.assert_allclose(anomaly_index(torch.tensor(norms)).numpy(), expect, rtol=1e-12)
    np.testing.assert_allclose(anomaly_index(torch.tensor(norms)).numpy(), _mad_index(norms))
    assert flagged_classes(torch.tensor(norms)) == [0]
    # a large outlier is anomalous too, but NC flags only the small side
    big = [30.0, *norms[1:]]
    assert anomaly_index(torch.tensor(big))[0] > 2 and flagged_classes(torch.tensor(big)) == []
    # even counts take the mean of the two middle values, as NumPy does
    four = [1.0, 2.0, 4.0, 10.0]
    np.testing.assert_allclose(anomaly_index(torch.tensor(four)).numpy(), _mad_index(four))


def test_anomaly_index_edge_cases() -> None:
    same = anomaly_index(torch.tensor([3.0, 3.0, 3.0, 1.0]))
    assert same[:3].eq(0).all() and torch.isinf(same[3])
    assert flagged_classes(torch.tensor([3.0, 3.0, 3.0, 1.0])) == [3]
    with pytest.raises(InputError, match="at least two"):
        anomaly_index(torch.tensor([1.0]))


class Planted(nn.Module):
    """A linear classifier of 8x8 grey images: class ``k`` in 1..3 reads the brightness of rows
    ``2k-2, 2k-1``; class 0 fires on a bright bottom-right pixel (a planted backdoor)."""

    def __init__(self, strength: float = 20.0) -> None:
        super().__init__()
        self.linear = nn.Linear(64, 4)
        with torch.no_grad():
            w = torch.zeros(4, 64)
            for k in (1, 2, 3):
                w[k, 16 * (k - 1) : 16 * k] = 1.0
            w[0, 63] = strength
            self.linear.weight.copy_(w)
            self.linear.bias.copy_(torch.tensor([2.0 - strength / 2, 0.0, 0.0, 0.0]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.flatten(1))


def _clean(n: int = 128, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Images of classes 1..3: noise in [0, 0.5], the class's rows brightened by 0.3."""
    g = torch.Generator().manual_seed(seed)
    y = 1 + torch.arange(n) % 3
    x = 0.5 * torch.rand(n, 1, 8, 8, generator=g)
    rows = (torch.arange(8)[None, :] // 2 + 1 == y[:, None]).float()  # (n, 8)
    return (x + 0.3 * rows[:, None, :, None]).clamp(0, 1), y


def test_reverse_engineering_finds_the_planted_pixel_and_flags_its_class() -> None:
    model = Planted()
    nc = NeuralCleanse(epochs=30, batch_size=32, init_cost=1e-2, seed=0)
    x, _ = _clean()
    report = nc.inspect(model, x)
    assert report.flagged == [0]
    mask = report.masks[0]
    assert mask.flatten().argmax() == 63 and float(mask.sum()) < 3
    assert float(report.success[0]) >= 0.99
    with torch.no_grad():
        pred = model(apply_reversed(x, report.masks[0], report.patterns[0])).argmax(1)
    assert bool((pred == 0).all())
    doc = report.to_dict()
    assert doc["flagged"] == report.flagged and len(doc["norms"]) == 4
    # deterministic for a seed
    again = NeuralCleanse(epochs=30, batch_size=32, init_cost=1e-2, seed=0).inspect(model, x)
    assert torch.equal(again.masks, report.masks)


def test_repair_unlearns_the_planted_trigger() -> None:
    model = Planted()
    x, y = _clean(256)
    data = ArrayDataset(x, y, list("abcd"))
    nc = NeuralCleanse(epochs=30, batch_size=32, init_cost=1e-2, seed=0)
    report = nc.inspect(model, x)
    trig = x[y != 0].clone()
    trig[..., -1, -1] = 1.0
    with torch.no_grad():
        before = (model(trig).argmax(1) == 0).float().mean()
    nc.repair(model, data, report, epochs=3, lr=0.05)
    with torch.no_grad():
        after = (model(trig).argmax(1) == 0).float().mean()
        acc = (model(x).argmax(1) == y).float().mean()
    assert before == 1.0 and after < 0.2 and acc > 0.8


def test_bad_arguments() -> None:
    with pytest.raises(InputError, match=">= 1"):
        NeuralCleanse(epochs=0)
    with pytest.raises(InputError, match="cost_multiplier"):
        NeuralCleanse(cost_multiplier=1.0)
    with pytest.raises(InputError, match="clean images"):
        NeuralCleanse().inspect(Planted(), torch.rand(4, 64))
    with pytest.raises(InputError, match="classes must be"):
        NeuralCleanse(classes=[0, 9]).inspect(Planted(), _clean()[0])
