"""SCALE-UP: the scaled prediction consistency by hand on a model that reads brightness, the
data-limited standardisation by hand, the boundary, determinism, the error paths, and a smoke
BadNets model (cnn-small, 3 epochs on digits) where triggered inputs keep their prediction
under amplification more often than clean ones."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from trustlab.attacks.backdoor.artifact import BackdoorArtifact, train_backdoor
from trustlab.data import ArrayDataset, load_dataset
from trustlab.defenses.backdoor.case import DefenseCase
from trustlab.defenses.backdoor.scale_up import ScaleUp, scaled_predictions
from trustlab.defenses.detection import InputDetector
from trustlab.errors import InputError
from trustlab.metrics import auroc
from trustlab.models.spec import ModelSpec
from trustlab.train import TrainSettings


class Brightness(nn.Module):
    """Predicts the quarter of [0, 1] that the mean pixel value falls in (4 classes)."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))  # a parameter, so device_of/frozen apply
        self.centres = torch.tensor([0.125, 0.375, 0.625, 0.875])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = self.scale * x.mean((1, 2, 3))
        return -((m[:, None] - self.centres) ** 2)


def _const(*values: float) -> torch.Tensor:
    return torch.tensor(values).view(-1, 1, 1, 1).expand(-1, 1, 3, 3).contiguous()


# brightness c -> class of c and of clip(n c) for n = 3, 5, 7, 9, 11 (no value near a boundary)
# 0.02: 0 | .06 .10 .14 .18 .22 -> 0 0 0 0 0   SPC 1
# 0.03: 0 | .09 .15 .21 .27 .33 -> 0 0 0 1 1   SPC 0.6
# 0.04: 0 | .12 .20 .28 .36 .44 -> 0 0 1 1 1   SPC 0.4
# 0.26: 1 | .78 1 1 1 1         -> 3 3 3 3 3   SPC 0
# 0.30: 1 | .90 1 1 1 1         -> 3 3 3 3 3   SPC 0
# 0.90: 3 | 1 1 1 1 1           -> 3 3 3 3 3   SPC 1
LEVELS = (0.02, 0.03, 0.04, 0.26, 0.30, 0.90)
SPC = torch.tensor([1.0, 0.6, 0.4, 0.0, 0.0, 1.0])


def test_spc_by_hand_on_a_brightness_model() -> None:
    model, x = Brightness(), _const(*LEVELS)
    preds = scaled_predictions(model, x, (3, 5, 7, 9, 11))
    assert preds.shape == (6, 6) and preds[:, 0].tolist() == [0, 0, 0, 1, 1, 3]
    assert preds[1].tolist() == [0, 0, 0, 0, 1, 1] and preds[3].tolist() == [1, 3, 3, 3, 3, 3]
    det = ScaleUp(model).fit(x)
    assert isinstance(det, InputDetector)
    s = det.score(x)
    assert torch.allclose(s, SPC) and s.dtype == torch.float32
    assert float(s.min()) >= 0 and float(s.max()) <= 1  # data-free: a fraction
    assert torch.equal(det.spc(x), s) and det.clean_spc is None  # data-free: nothing to fit
    assert det.detect(x).tolist() == [True, True, False, False, False, True]  # SPC >= 0.5
    # chunking (one input per forward) and the scale set change nothing but the grouping
    assert torch.equal(ScaleUp(model, batch_size=1).fit(x).score(x), s)
    one = ScaleUp(model, scales=(3,)).fit(x)
    assert torch.equal(one.score(x), (preds[:, 1] == preds[:, 0]).float())
    # the original prediction reads the unscaled input; scaled copies are clipped to [0, 1]
    assert ScaleUp(model, scales=(1000,)).fit(x).score(_const(0.9)).item() == 1.0


def test_data_limited_standardises_per_predicted_class_by_hand() -> None:
    model, x = Brightness(), _const(*LEVELS)
    det = ScaleUp(model, variant="data-limited").fit(x)
    pooled_mean, pooled_std = float(SPC.double().mean()), float(SPC.double().std())
    c0 = SPC[:3].double()  # class 0: three samples with spread
    # class 1: two samples, both SPC 0 (no spread) -> pooled; class 3: one sample -> pooled
    assert det.class_mean is not None and det.class_std is not None
    means = torch.tensor([c0.mean(), pooled_mean, pooled_mean, pooled_mean]).double()
    stds = torch.tensor([c0.std(), pooled_std, pooled_std, pooled_std]).double()
    assert torch.allclose(det.class_mean, means) and torch.allclose(det.class_std, stds)
    expect = torch.cat([(c0 - c0.mean()) / c0.std(), (SPC[3:].double() - pooled_mean) / pooled_std])
    assert torch.allclose(det.score(x), expect.float(), atol=1e-6)
    assert torch.allclose(det.clean_scores, expect.float(), atol=1e-6)
    assert torch.allclose(det.spc(x), SPC)  # the plain view stays available
    # a class never predicted on the clean set (class 2: brightness 0.6 -> 1.8 -> class 3, SPC 0)
    fit_on_0 = ScaleUp(model, variant="data-limited").fit(_const(0.02, 0.03, 0.04))
    assert fit_on_0.class_mean is not None and len(fit_on_0.class_mean) == 1
    z = fit_on_0.score(_const(0.6))
    assert z.item() == pytest.approx((0 - c0.mean().item()) / c0.std().item(), abs=1e-6)


def test_boundary_from_the_clean_set() -> None:
    model, x = Brightness(), _const(*LEVELS)
    assert ScaleUp(model).fit(x).threshold == 0.5  # the authors' T
    low = ScaleUp(model, threshold=0.3).fit(x)
    assert low.detect(x).tolist() == [True, True, True, False, False, True]
    # frr: the smallest clean score flagging at most that fraction of the clean set
    det = ScaleUp(model, frr=0.5).fit(x)  # SPC 1, .6, .4, 0, 0, 1: >= 0.6 flags 3 of 6
    assert det.clean_spc is not None and torch.allclose(det.clean_spc, SPC)
    assert det.threshold == pytest.approx(0.6) and det.detect(x).float().mean() == 0.5
    # the top score is shared by a third of the set: nothing can be flagged at 10%
    det = ScaleUp(model, frr=0.1).fit(x)
    assert det.threshold > 1.0 and not det.detect(x).any()


def test_error_paths() -> None:
    model = Brightness()
    with pytest.raises(InputError, match="not fitted"):
        ScaleUp(model).score(torch.rand(2, 1, 3, 3))
    with pytest.raises(InputError, match="not fitted"):
        ScaleUp(model).detect(torch.rand(2, 1, 3, 3))
    with pytest.raises(InputError, match="unknown variant"):
        ScaleUp(model, variant="data-rich")
    with pytest.raises(InputError, match="scales"):
        ScaleUp(model, scales=())
    with pytest.raises(InputError, match="scales"):
        ScaleUp(model, scales=(3, -1))
    with pytest.raises(InputError, match="frr"):
        ScaleUp(model, frr=1.0)
    with pytest.raises(InputError, match="batch_size"):
        ScaleUp(model, batch_size=0)
    with pytest.raises(InputError, match="at least 2"):
        ScaleUp(model, variant="data-limited").fit(torch.rand(1, 1, 3, 3))
    with pytest.raises(InputError, match="non-empty batch"):
        ScaleUp(model).fit(torch.rand(0, 1, 3, 3))
    det = ScaleUp(model).fit(torch.rand(4, 1, 3, 3))
    with pytest.raises(InputError, match="clean images are"):
        det.score(torch.rand(2, 1, 4, 4))
    with pytest.raises(InputError, match="non-empty batch"):
        det.score(torch.rand(2, 9))
    with pytest.raises(InputError, match="NaN"):
        det.score(torch.full((2, 1, 3, 3), float("nan")))


@pytest.fixture(scope="module")
def smoke() -> tuple[BackdoorArtifact, ArrayDataset, ArrayDataset]:
    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    torch.manual_seed(0)
    net = ModelSpec.for_data("cnn-small", train).build()
    settings = TrainSettings(epochs=3, lr=0.05, batch_size=32, seed=0)
    art = train_backdoor("badnets", train, test, net, settings, rate=0.1, target=0, seed=0)
    assert art.metrics["asr"] > 0.9 and art.metrics["clean_acc"] > 0.9
    idx = torch.arange(len(test))
    return art, test.subset(idx[::2]), test.subset(idx[1::2])


def test_triggered_inputs_keep_their_prediction_under_amplification(smoke) -> None:
    art, defend, held = smoke
    model = art.model
    before = [p.detach().clone() for p in model.parameters()]
    x = held.x[held.y != 0]
    xt = art.trigger(x)
    det = ScaleUp(model).fit(defend.x)
    s_clean, s_trig = det.score(held.x), det.score(xt)
    # measured: SPC 0.90 on triggered vs 0.73 on clean inputs, AUROC 0.63 (STRIP, 10
    # overlays, on the same model and inputs: 0.998): digits are strokes on a black background,
    # which stays black under amplification, so the digit keeps its shape and clean SPC is high
    assert float(s_trig.mean()) > float(s_clean.mean()) + 0.1
    labels = torch.cat([torch.zeros(len(s_clean)), torch.ones(len(s_trig))])
    direct = auroc(torch.cat([s_clean, s_trig]), labels)
    assert direct > 0.58
    assert torch.equal(det.score(held.x), s_clean)  # deterministic: no randomness at all
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    was = model.training
    model.train()
    det.score(x[:2])
    assert model.training and all(p.requires_grad for p in model.parameters())  # restored
    model.train(was)
    # the bench's path (the same sets): numbers only, the same AUROC
    out = ScaleUp.run_case(DefenseCase(art, None, defend, held, {}, None, 0, {}, False, {}))
    assert set(out) == {"auroc", "tpr_at_5fpr", "tpr", "fpr"}
    assert all(isinstance(v, float) and not math.isnan(v) for v in out.values())
    assert out["auroc"] == pytest.approx(direct) and out["tpr"] > out["fpr"]
