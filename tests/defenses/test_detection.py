"""Detectors: AUC on indistinguishable vs separable data, the protocol's sets, fit/score."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from trustlab.attacks.evasion import PGD
from trustlab.defenses.detection import (
    DeepFeatureDetector,
    DetectionSet,
    InputDetector,
    KDBUDetector,
    LIDDetector,
    build_detection_set,
    evaluate_detector,
    noise_like,
)
from trustlab.errors import InputError
from trustlab.models import create_model


def _model():
    torch.manual_seed(0)
    return create_model("resnet8", num_classes=3, in_channels=3, image_size=(8, 8)).eval()


def _set(n: int, shift: float, seed: int = 0) -> DetectionSet:
    g = torch.Generator().manual_seed(seed)
    clean = torch.rand(n, 3, 8, 8, generator=g) * 0.5
    noisy = torch.rand(n, 3, 8, 8, generator=g) * 0.5
    adv = torch.rand(n, 3, 8, 8, generator=g) * 0.5 + shift
    return DetectionSet(clean, noisy, adv, torch.zeros(n, dtype=torch.long), 1.0, n)


@pytest.mark.parametrize("make", [
    lambda m: DeepFeatureDetector(m),
    lambda m: DeepFeatureDetector(m, classifier="rf"),
    lambda m: LIDDetector(m, k=10, batch_size=50),
])  # fmt: skip
def test_auc_half_when_indistinguishable_one_when_separable(make) -> None:
    model = _model()
    same = evaluate_detector(make(model), _set(150, 0.0), splits=3)
    assert abs(same.mean_auc - 0.5) < 0.15, same.aucs
    apart = evaluate_detector(make(model), _set(150, 0.5), splits=3)
    assert apart.mean_auc > 0.95, apart.aucs
    assert len(apart.aucs) == 3 and len(apart.roc) == 3


def test_kd_bu_features_and_separable_auc() -> None:
    model = _model()
    train_x = torch.rand(60, 3, 8, 8) * 0.5
    det = KDBUDetector(model, train_x, torch.arange(60) % 3, mc_samples=5)
    assert det.bandwidth > 0
    f = det.features_of(train_x[:7])
    assert f.shape == (7, 2) and np.isfinite(f).all() and (f[:, 1] >= 0).all()
    assert evaluate_detector(det, _set(100, 0.5), splits=2).mean_auc > 0.9


def test_fit_and_score_follow_the_input_detector_protocol() -> None:
    model = _model()
    data = _set(100, 0.5)
    for det in (DeepFeatureDetector(model), LIDDetector(model, k=10, batch_size=50)):
        assert isinstance(det, InputDetector)
        with pytest.raises(InputError, match="not fitted"):
            det.score(data.clean)
        det.fit(data.clean, data.adversarial, data.noisy)
        s_adv, s_clean = det.score(data.adversarial[:20]), det.score(data.clean[:20])
        assert s_adv.shape == (20,) and float(s_adv.mean()) > float(s_clean.mean())


def test_cross_attack_transfer_runs() -> None:
    model = _model()
    rep = evaluate_detector(
        DeepFeatureDetector(model), _set(100, 0.5), splits=2, transfer_to=_set(100, 0.4, seed=1)
    )
    assert rep.mean_auc > 0.9


def test_lid_detector_takes_the_authors_exclusion_rule() -> None:
    model = _model()
    sets = _set(100, 0.5)
    a = LIDDetector(model, k=10, batch_size=50)
    b = LIDDetector(model, k=10, batch_size=50, exclude="nearest")
    fa, fb = (
        a.features(sets.clean, sets.noisy, sets.adversarial),
        b.features(sets.clean, sets.noisy, sets.adversarial),
    )
    assert np.allclose(fa[0], fb[0])  # clean points: both rules drop the point itself
    assert fa[2].shape == fb[2].shape
    with pytest.raises(InputError, match="exclusion rule"):
        LIDDetector(model, exclude="self")


def test_detection_set_keeps_successes_and_matches_noise_norms() -> None:
    torch.manual_seed(0)
    model = create_model("mlp", num_classes=3, in_channels=1, image_size=(4, 4)).eval()
    x = torch.rand(200, 1, 4, 4, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        y = model(x).argmax(1)
    y[:20] = (y[:20] + 1) % 3  # misclassified: never attacked
    ds = build_detection_set(model, x, y, PGD(model, eps=0.3, alpha=0.05, steps=10))
    assert ds.n_correct == 180 and len(ds.adversarial) == len(ds.clean) == len(ds.noisy)
    with torch.no_grad():
        assert (model(ds.adversarial).argmax(1) != ds.labels).all()
        assert (model(ds.clean).argmax(1) == ds.labels).all()
    z = noise_like(ds.clean, ds.adversarial, torch.Generator().manual_seed(0))
    unclipped = (z - ds.clean).flatten(1).norm(dim=1)
    want = (ds.adversarial - ds.clean).flatten(1).norm(dim=1)
    assert bool((unclipped <= want + 1e-5).all())  # equal before clipping to [0, 1]
    with pytest.raises(InputError, match="fooled only"):
        build_detection_set(model, x, y, PGD(model, eps=1e-4, alpha=1e-5, steps=1))


def test_detectors_are_registered_at_their_classes() -> None:
    from trustlab.registry import DETECTORS

    assert DETECTORS.names() == ["lid", "kd-bu", "deep-features"]
    classes = {"lid": LIDDetector, "kd-bu": KDBUDetector, "deep-features": DeepFeatureDetector}
    for card in DETECTORS:
        assert card.factory is classes[card.name] and card.paper and card.inputs[0] == "model"
    assert DETECTORS.get("kd-bu").inputs == ("model", "train_x", "train_y")


def test_make_detector_builds_by_name_with_the_same_numbers() -> None:
    from trustlab.data import ArrayDataset
    from trustlab.defenses.detection import make_detector

    model = _model()
    train = ArrayDataset(torch.rand(60, 3, 8, 8) * 0.5, torch.arange(60) % 3, ["a", "b", "c"])
    data = _set(100, 0.5)
    lid = make_detector("lid", model, classifier="rf", seed=2)
    assert isinstance(lid, LIDDetector) and lid.classifier == "rf" and lid.seed == 2
    assert isinstance(make_detector("deep-features", model), DeepFeatureDetector)
    kd = make_detector("kd-bu", model, train=train, seed=1)
    ref = KDBUDetector(model, train.x, train.y, seed=1)
    assert isinstance(kd, KDBUDetector) and kd.bandwidth == ref.bandwidth
    assert np.array_equal(kd.features_of(data.clean[:5]), ref.features_of(data.clean[:5]))


@pytest.mark.parametrize(
    ("name", "kw", "message"),
    [
        ("magic", {}, "unknown detector 'magic'"),
        ("kd-bu", {}, "fits on the training split: pass train="),
        ("lid", {"classifier": "svm"}, "unknown classifier 'svm'"),
    ],
)
def test_make_detector_errors(name: str, kw: dict, message: str) -> None:
    from trustlab.defenses.detection import make_detector

    with pytest.raises(InputError, match=message):
        make_detector(name, _model(), **kw)
