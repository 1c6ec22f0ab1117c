"""The detector's train/test split keeps the clean, noisy and adversarial copies of one input on
one side (split by source input, as the LID authors' block_split), also across attacks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from trustlab.attacks.evasion import PGD
from trustlab.defenses.detection import (
    DetectionSet,
    FeatureDetector,
    build_detection_set,
    evaluate_detector,
)
from trustlab.defenses.detection.base import split_rows
from trustlab.errors import InputError
from trustlab.models import create_model


class _Recorder:
    """A stand-in classifier that records the (source, copy) of every row it sees."""

    def __init__(self, log: list) -> None:
        self.log = log

    def fit(self, x: np.ndarray, t: np.ndarray) -> _Recorder:
        self.log.append(("fit", x.copy()))
        return self

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        self.log.append(("predict", x.copy()))
        p = (x[:, 1] == 2).astype(float) * 0.8 + 0.1
        return np.stack([1 - p, p], 1)


class _IdentityDetector(FeatureDetector):
    """Features ``[source index, copy (0 clean, 1 noisy, 2 adversarial)]`` read from the set."""

    name = "identity"

    def __init__(self, sources_of: dict[int, np.ndarray]) -> None:
        super().__init__()
        self.sources_of, self.log = sources_of, []

    def features(self, clean, noisy, adversarial):
        ids = self.sources_of[id(clean)]
        return tuple(np.stack([ids, np.full(len(ids), k)], 1).astype(float) for k in range(3))

    def _new_pipeline(self):
        return _Recorder(self.log)


def _set(m: int, sources: torch.Tensor | None = None) -> DetectionSet:
    x = torch.rand(m, 1, 2, 2, generator=torch.Generator().manual_seed(m))
    return DetectionSet(x, x, x, torch.zeros(m, dtype=torch.long), 1.0, m, sources=sources)


def _pairs(log: list) -> list[tuple[set, set]]:
    fits = [set(x[:, 0].astype(int)) for kind, x in log if kind == "fit"]
    tests = [set(x[:, 0].astype(int)) for kind, x in log if kind == "predict"]
    return list(zip(fits, tests, strict=True))


def test_no_source_input_is_on_both_sides_of_a_split() -> None:
    data = _set(60)
    det = _IdentityDetector({id(data.clean): np.arange(60)})
    rep = evaluate_detector(det, data, splits=3, seed=0)
    pairs = _pairs(det.log)
    assert len(pairs) == 3
    for train, test in pairs:
        assert not train & test and len(train | test) == 60 and len(test) == 12
    for kind, x in det.log:  # every source's three copies together
        counts = np.unique(x[:, 0], return_counts=True)[1]
        assert (counts == 3).all(), kind
    assert rep.mean_auc == 1.0


def test_the_row_split_leaks_and_is_kept_to_measure_it() -> None:
    data = _set(60)
    det = _IdentityDetector({id(data.clean): np.arange(60)})
    evaluate_detector(det, data, splits=1, seed=0, split="row")
    ((train, test),) = _pairs(det.log)
    assert train & test  # twins of test rows were trained on
    with pytest.raises(InputError, match="unknown split"):
        evaluate_detector(det, data, split="pixel")


def test_split_rows_sizes_and_blocks() -> None:
    rng = np.random.default_rng(0)
    train, test = split_rows(np.arange(10), 0.2, rng)
    assert len(train) == 24 and len(test) == 6 and not set(train) & set(test)
    assert set(test % 10) == set(test[test < 10]) and len(set(test % 10)) == 2


def test_cross_attack_test_avoids_the_training_inputs() -> None:
    main = _set(40, torch.arange(0, 80, 2))  # sources 0, 2, ..., 78
    other = _set(30, torch.arange(30, 60))  # another attack on the same x: 30 .. 59
    det = _IdentityDetector(
        {id(main.clean): main.sources.numpy(), id(other.clean): other.sources.numpy()}
    )
    evaluate_detector(det, main, splits=2, seed=1, transfer_to=other)
    for train, test in _pairs(det.log):
        assert test and not train & test and test <= set(range(30, 60))


def test_misaligned_or_repeated_sources_are_refused() -> None:
    data = _set(10)
    data.noisy = data.noisy[:9]
    det = _IdentityDetector({id(data.clean): np.arange(10)})
    with pytest.raises(InputError, match="aligned"):
        evaluate_detector(det, data)
    with pytest.raises(InputError, match="distinct"):
        evaluate_detector(det, _set(10, torch.zeros(10, dtype=torch.long)))


def test_build_detection_set_records_each_rows_source() -> None:
    torch.manual_seed(0)
    model = create_model("mlp", num_classes=3, in_channels=1, image_size=(4, 4)).eval()
    x = torch.rand(120, 1, 4, 4, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        y = model(x).argmax(1)
    y[:15] = (y[:15] + 1) % 3  # misclassified: never attacked, never a source
    ds = build_detection_set(model, x, y, PGD(model, eps=0.3, alpha=0.05, steps=10))
    assert ds.sources is not None and ds.sources.dtype == torch.long
    assert len(ds.sources) == len(ds.clean) and int(ds.sources.min()) >= 15
    assert torch.equal(x[ds.sources], ds.clean) and torch.equal(y[ds.sources], ds.labels)
