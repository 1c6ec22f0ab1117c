"""Dataset filters on planted poison: spectral signatures and activation clustering on constructed
features and a toy model, the adversarial-training filter and filter-then-retrain on a toy whose
poison the threat model covers, and their error paths."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from trustlab.data import ArrayDataset
from trustlab.defenses.backdoor import (
    ActivationClustering,
    AdversarialFilter,
    DatasetFilter,
    SpectralSignatures,
    cluster_activations,
    filter_then_retrain,
    spectral_filter,
    spectral_scores,
)
from trustlab.errors import InputError
from trustlab.metrics import flag_precision_recall
from trustlab.models import create_model
from trustlab.train import TrainSettings


def _planted(n: int = 200, planted: int = 20, d: int = 20, shift: float = 6.0, seed: int = 0):
    """Two classes of standard-normal features; ``planted`` extra points of class 0 shifted by
    ``shift`` along one direction. Returns features, labels and the planted mask."""
    g = torch.Generator().manual_seed(seed)
    f = torch.randn(2 * n + planted, d, generator=g, dtype=torch.float64)
    direction = torch.randn(d, generator=g, dtype=torch.float64)
    f[2 * n :] += shift * direction / direction.norm()
    y = torch.cat([torch.zeros(n), torch.ones(n), torch.zeros(planted)]).long()
    mask = torch.zeros(len(y), dtype=torch.bool)
    mask[2 * n :] = True
    return f, y, mask


def test_spectral_scores_single_out_the_planted_cluster() -> None:
    f, y, mask = _planted()
    s = spectral_scores(f, y)
    cls0 = y == 0
    # every planted point outscores every clean point of its class
    assert s[mask].min() > s[cls0 & ~mask].max()
    # hand check of one class: squared projection on the top right singular vector
    r = f[y == 1] - f[y == 1].mean(0)
    v = torch.linalg.svd(r, full_matrices=False).Vh[0]
    torch.testing.assert_close(s[y == 1], (r @ v) ** 2)
    rep = spectral_filter(f, y, eps=0.1)
    assert rep.per_class[0]["removed"] == round(1.5 * 0.1 * 220)  # 33
    assert rep.per_class[1]["removed"] == 30
    flagged = set(rep.flagged.tolist())
    assert set(torch.nonzero(mask).flatten().tolist()) <= flagged  # recall 1
    assert rep.evaluate(mask)["recall"] == 1.0
    assert rep.evaluate(mask)["precision"] == pytest.approx(20 / 63)


def test_activation_clustering_flags_exactly_the_planted_cluster() -> None:
    f, y, mask = _planted()
    for reduce in ("pca", "ica"):
        rep = cluster_activations(f, y, reduce=reduce, seed=0)
        assert torch.equal(rep.flagged, torch.nonzero(mask).flatten()), reduce
        assert rep.per_class[0]["flagged"] and not rep.per_class[1]["flagged"]
        assert rep.per_class[0]["relative_size"] == pytest.approx(20 / 220)
        assert rep.per_class[0]["silhouette"] > rep.per_class[1]["silhouette"]
        assert (rep.scores[mask] > rep.scores[~mask].max()).all()  # 1 - relative cluster size
    again = cluster_activations(f, y, reduce="ica", seed=0)
    assert torch.equal(again.scores, rep.scores)  # seeded


class Flat(nn.Module):
    """A toy classifier whose penultimate representation is its flattened input."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.classifier = nn.Linear(d, 2)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def _poisoned_images(seed: int = 0) -> ArrayDataset:
    """Images (1, 4, 5) of noise in [0, 0.5]; 20 of class 0 carry a bright 2x2 corner trigger;
    the dataset records the poison mask as a PoisonedDataset does."""
    f, y, mask = _planted(seed=seed)
    g = torch.Generator().manual_seed(seed + 1)
    x = 0.5 * torch.rand(len(y), 1, 4, 5, generator=g)
    x[mask, :, :2, :2] = 1.0
    data = ArrayDataset(x, y, ["a", "b"])
    data.poison_mask = mask
    return data


def test_the_filters_on_a_model_report_precision_recall_against_the_mask() -> None:
    data = _poisoned_images()
    model = Flat(20)
    truth = data.poison_mask
    for flt in (SpectralSignatures(model, eps=0.1), ActivationClustering(model)):
        assert isinstance(flt, DatasetFilter)
        rep = flt.analyze(data)
        assert torch.equal(flt.flag(data), rep.flagged)
        assert rep.metrics["recall"] == 1.0 and rep.metrics["auroc"] > 0.99
        assert rep.metrics == rep.evaluate(truth)
    assert torch.equal(ActivationClustering(model).flag(data), torch.nonzero(truth).flatten())
    doc = ActivationClustering(model).analyze(data).to_dict()
    assert doc["n_flagged"] == 20 and doc["metrics"]["precision"] == 1.0


def _toy_backdoor(n: int = 100, poisoned: int = 10, seed: int = 0) -> ArrayDataset:
    """Class 0 near 0.2, class 1 near 0.8 (1x4x4 images, noise +-0.05); ``poisoned`` extra
    class-1 images with a one-pixel trigger (0.8 -> 1.0) labelled 0. The trigger and the
    classes' spread lie well inside eps = 0.25, the class gap (0.5) outside 2 * eps."""
    g = torch.Generator().manual_seed(seed)
    base = torch.cat([torch.full((n,), 0.2), torch.full((n + poisoned,), 0.8)])
    x = base[:, None, None, None] + 0.1 * (torch.rand(len(base), 1, 4, 4, generator=g) - 0.5)
    x[2 * n :, :, 0, 0] = 1.0
    y = torch.cat([torch.zeros(n), torch.ones(n), torch.zeros(poisoned)]).long()
    data = ArrayDataset(x.clamp(0, 1), y, ["dark", "bright"])
    data.poison_mask = torch.arange(len(y)) >= 2 * n
    return data


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return create_model("mlp", num_classes=2, in_channels=1, image_size=(4, 4), hidden=(32,))


def test_adversarial_filter_precision_recall_and_filter_then_retrain() -> None:
    data = _toy_backdoor()
    settings = TrainSettings(epochs=15, lr=0.1, batch_size=32, seed=0)
    init = _mlp()
    start = {k: v.clone() for k, v in init.state_dict().items()}
    flt = AdversarialFilter(init, settings, eps=0.25, alpha=0.1, steps=3, seed=0)
    rep = flt.analyze(data)
    # the filter trains a copy: the given network is untouched
    assert all(torch.equal(v, init.state_dict()[k]) for k, v in start.items())
    # precision/recall by hand from the flagged set and the mask
    flagged, truth = set(rep.flagged.tolist()), set(range(200, 210))
    tp = len(flagged & truth)
    assert rep.metrics["precision"] == pytest.approx(tp / len(flagged))
    assert rep.metrics["recall"] == pytest.approx(tp / len(truth))
    assert rep.metrics == flag_precision_recall(rep.flagged, data.poison_mask) | {
        "auroc": rep.metrics["auroc"]
    }
    # the robust model cannot fit the poison: it is what gets flagged
    assert rep.metrics["recall"] == 1.0 and rep.metrics["precision"] >= 0.9
    assert rep.scores.shape == (len(data),) and rep.metrics["auroc"] > 0.95
    # "loss" flags the 10% highest robust losses: 21 points, so precision and recall differ
    top = AdversarialFilter(init, settings, 0.25, 0.1, 3, criterion="loss", fraction=0.1).analyze(
        data
    )
    hits = len(set(top.flagged.tolist()) & truth)
    assert top.flagged.numel() == 21 and hits == 10
    assert top.metrics["precision"] == pytest.approx(10 / 21) and top.metrics["recall"] == 1.0
    assert torch.equal(top.flagged, torch.argsort(top.scores, descending=True)[:21].sort().values)

    net = _mlp()
    out = filter_then_retrain(flt, data, net, TrainSettings(epochs=15, lr=0.1, batch_size=32))
    assert out.model is net and torch.equal(out.flagged, out.report.flagged)
    assert out.metrics["recall"] == 1.0
    with torch.no_grad():  # the retrained standard model sends the poison to its true class
        assert (net(data.x[200:]).argmax(1) == 1).all()
        assert (net(data.x[:200]).argmax(1) == data.y[:200]).float().mean() > 0.95


class Everything:
    def flag(self, dataset) -> torch.Tensor:
        return torch.arange(len(dataset))


def test_bad_input() -> None:
    f, y, _ = _planted()
    with pytest.raises(InputError, match="eps"):
        spectral_filter(f, y, eps=0.0)
    with pytest.raises(InputError, match="features \\(N, D\\) and labels"):
        spectral_scores(f, y[:5])
    bad = f.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(InputError, match="NaN"):
        cluster_activations(bad, y)
    with pytest.raises(InputError, match="unknown reduction"):
        ActivationClustering(Flat(20), reduce="tsne")
    with pytest.raises(InputError, match="size_threshold"):
        cluster_activations(f, y, size_threshold=0.7)
    with pytest.raises(InputError, match="bare tensor"):
        SpectralSignatures(Flat(20)).flag(torch.rand(4, 1, 4, 5))
    with pytest.raises(InputError, match="fraction"):
        AdversarialFilter(_mlp(), criterion="loss")
    with pytest.raises(InputError, match="unknown criterion"):
        AdversarialFilter(_mlp(), criterion="vote")
    with pytest.raises(InputError, match="nothing is left"):
        filter_then_retrain(Everything(), _toy_backdoor(), _mlp(), TrainSettings(epochs=1))
    with pytest.raises(InputError, match="not a dataset filter"):
        filter_then_retrain(object(), _toy_backdoor(), _mlp(), TrainSettings(epochs=1))  # type: ignore[arg-type]
