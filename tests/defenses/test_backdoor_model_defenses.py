"""STRIP and fine-pruning on a smoke BadNets model (cnn-small trained 3 epochs on digits, 10% of
the training set poisoned, one module-scoped fixture), fine-pruning's channel surgery on the
other architectures, and the error paths."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import pytest
import torch
from torch import nn

from trustlab.attacks.backdoor.artifact import BackdoorArtifact, evaluate_backdoor, train_backdoor
from trustlab.data import ArrayDataset, load_dataset
from trustlab.defenses.backdoor import STRIP, FinePruning, Repairer, last_conv, superimpose
from trustlab.defenses.detection import InputDetector
from trustlab.errors import InputError
from trustlab.metrics import auroc, tpr_at_fpr
from trustlab.models import create_model
from trustlab.models.spec import ModelSpec
from trustlab.train import Trainer, TrainSettings


@dataclass
class Smoke:
    art: BackdoorArtifact
    defend: ArrayDataset  # clean data the defender holds (half the test split)
    held_out: ArrayDataset  # the other half, to measure


@pytest.fixture(scope="module")
def smoke() -> Smoke:
    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    torch.manual_seed(0)
    net = ModelSpec.for_data("cnn-small", train).build()
    settings = TrainSettings(epochs=3, lr=0.05, batch_size=32, seed=0)
    art = train_backdoor("badnets", train, test, net, settings, rate=0.1, target=0, seed=0)
    assert art.metrics["asr"] > 0.9 and art.metrics["clean_acc"] > 0.9
    idx = torch.arange(len(test))
    return Smoke(art, test.subset(idx[::2]), test.subset(idx[1::2]))


def test_strip_entropy_is_lower_on_triggered_inputs(smoke: Smoke) -> None:
    model = smoke.art.model
    strip = STRIP(model, overlays=20, seed=0)
    assert isinstance(strip, InputDetector)
    assert strip.fit(smoke.defend.x[:100]) is strip  # fit(clean) alone, the unsupervised form
    x = smoke.held_out.x[smoke.held_out.y != 0][:60]
    xt = smoke.art.trigger(x)
    h_clean, h_trig = strip.entropy(x), strip.entropy(xt)
    assert h_clean.shape == (60,) and (h_clean >= 0).all()
    assert h_trig.mean() < 0.25 * h_clean.mean()  # measured: ~0.06 vs ~0.89 bits
    scores = torch.cat([strip.score(x), strip.score(xt)])
    labels = torch.cat([torch.zeros(60), torch.ones(60)])
    assert auroc(scores, labels) > 0.95 and tpr_at_fpr(scores, labels, 0.05) > 0.9
    # the boundary sits at the clean distribution's low tail: most triggered inputs fall below
    assert strip.threshold is not None and strip.threshold < float(strip.clean_entropy.mean())
    assert strip.detect(xt).float().mean() > 0.9 and strip.detect(x).float().mean() < 0.1
    # seeded: the same inputs give the same entropies
    assert torch.equal(strip.entropy(x), h_clean)
    # the other blend and the empirical quantile work too
    avg = STRIP(model, overlays=10, blend="average", threshold="quantile").fit(smoke.defend)
    assert avg.entropy(xt).mean() < avg.entropy(x).mean()
    assert avg.threshold == pytest.approx(float(torch.quantile(avg.clean_entropy.double(), 0.01)))


def test_superimpose() -> None:
    x, o = torch.full((1, 1, 2, 2), 0.7), torch.full((1, 1, 2, 2), 0.5)
    assert torch.equal(superimpose(x, o, "add"), torch.ones(1, 1, 2, 2))
    assert torch.allclose(superimpose(x, o, "average"), torch.full((1, 1, 2, 2), 0.6))


def test_fine_pruning_lowers_asr_more_than_fine_tuning_alone(smoke: Smoke) -> None:
    art, clean, held = smoke.art, smoke.defend, smoke.held_out
    before = evaluate_backdoor(art.model, held, art.trigger, art.policy)
    fp = FinePruning()
    assert isinstance(fp, Repairer)
    model = copy.deepcopy(art.model)
    assert fp.repair(model, clean) is model
    after = evaluate_backdoor(model, held, art.trigger, art.policy)
    rep = fp.report
    assert rep is not None and rep.mode == "conv" and rep.layer == last_conv(art.model)
    assert rep.layer == "inner.body.conv2" and rep.channels == 64
    assert rep.accuracy_pruned >= rep.accuracy_before - 0.04 and 0 < rep.fraction <= 0.9
    conv = model.inner.body.conv2
    assert conv.weight[rep.pruned].abs().sum() == 0 and conv.bias[rep.pruned].abs().sum() == 0
    # the same fine-tuning without pruning, for comparison (the paper's baseline)
    tuned = copy.deepcopy(art.model)
    Trainer(tuned, fp.settings, device="cpu", progress=False).fit(clean)
    tuned_only = evaluate_backdoor(tuned, held, art.trigger, art.policy)
    # measured: ASR 1.00 -> 0.47 (fine-tuning alone: 0.97), clean accuracy 0.99 -> 0.96
    assert before["asr"] > 0.95
    assert after["asr"] < before["asr"] - 0.3
    assert after["asr"] < tuned_only["asr"] - 0.2
    assert after["clean_acc"] > 0.9


def _data(n: int, shape: tuple[int, ...], classes: int = 3, seed: int = 0) -> ArrayDataset:
    g = torch.Generator().manual_seed(seed)
    return ArrayDataset(torch.rand(n, *shape, generator=g), torch.arange(n) % classes)


@pytest.mark.parametrize(
    ("name", "size", "mode", "layer"),
    [
        ("resnet8", (8, 8), "head", "classifier"),
        ("vgg11", (32, 32), "conv", "body.conv5_2"),
        ("cnn-small", (8, 8), "conv", "body.conv2"),
    ],
)
def test_pruning_silences_the_channels_on_each_architecture(name, size, mode, layer) -> None:
    torch.manual_seed(0)
    kw = {"width": 0.125} if name == "vgg11" else {}
    model = create_model(name, num_classes=3, in_channels=3, image_size=size, **kw)
    keys = set(model.state_dict())
    data = _data(24, (3, *size))
    fp = FinePruning(tolerance=0.99, max_fraction=0.5, step=2,
                     settings=TrainSettings(epochs=1, lr=0.01, batch_size=8))  # fmt: skip
    fp.repair(model, data)
    rep = fp.report
    assert rep is not None and (rep.mode, rep.layer) == (mode, layer)
    assert len(rep.pruned) == rep.channels // 2 and set(model.state_dict()) == keys
    pruned = torch.tensor(rep.pruned)
    model.eval()
    with torch.no_grad():
        if mode == "head":  # the classifier ignores the pruned channels of the final map
            assert model.classifier.weight[:, pruned].abs().sum() == 0
        else:  # the pruned channels' (BatchNorm) outputs are exactly zero, after fine-tuning too
            seen = {}
            silenced = layer.replace("conv", "bn") if name == "vgg11" else layer  # BN follows
            tap = dict(model.named_modules())[silenced]
            h = tap.register_forward_hook(lambda m, i, o: seen.setdefault("out", o))
            model(data.x[:4])
            h.remove()
            assert seen["out"][:, pruned].abs().sum() == 0
            assert seen["out"].abs().sum() > 0


def test_bad_input() -> None:
    mlp = create_model("mlp", num_classes=3, in_channels=1, image_size=(4, 4))
    with pytest.raises(InputError, match="no convolutional layer"):
        FinePruning().prune(mlp, _data(6, (1, 4, 4)))
    cnn = create_model("cnn-small", num_classes=3, in_channels=1, image_size=(8, 8))
    with pytest.raises(InputError, match="not a convolution"):
        FinePruning(layer="body.relu2").prune(cnn, _data(6, (1, 8, 8)))
    with pytest.raises(InputError, match="max_fraction"):
        FinePruning(max_fraction=1.0)
    with pytest.raises(InputError, match="not fitted"):
        STRIP(cnn).score(torch.rand(2, 1, 8, 8))
    with pytest.raises(InputError, match="unknown blend"):
        STRIP(cnn, blend="multiply")
    with pytest.raises(InputError, match="frr"):
        STRIP(cnn, frr=0.0)
    strip = STRIP(cnn, overlays=2).fit(torch.rand(4, 1, 8, 8))
    with pytest.raises(InputError, match="clean images are"):
        strip.entropy(torch.rand(2, 1, 9, 9))
    with pytest.raises(InputError, match="NaN"):
        strip.entropy(torch.full((2, 1, 8, 8), float("nan")))
    with pytest.raises(InputError, match="at least 2"):
        STRIP(cnn).fit(torch.rand(1, 1, 8, 8))


class _NoHead(nn.Module):
    """A residual network without features/classifier: fine-pruning needs layer=..."""

    def __init__(self) -> None:
        super().__init__()
        self.residual = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1))
        self.out = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out((x + self.residual(x)).mean((2, 3)))


def test_residual_network_without_a_head_asks_for_a_layer() -> None:
    with pytest.raises(InputError, match="residual branch"):
        FinePruning().prune(_NoHead(), _data(6, (1, 4, 4)))
    rep = FinePruning(layer="residual.0", tolerance=0.99, max_fraction=0.5).prune(
        _NoHead(), _data(6, (1, 4, 4))
    )
    assert rep.mode == "conv" and len(rep.pruned) == 2
