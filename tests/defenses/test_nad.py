"""NAD (Li et al., ICLR 2021): the attention map and AT loss by hand, the layers, the repair."""

from __future__ import annotations

import copy

import pytest
import torch

from trustlab.attacks.backdoor.artifact import evaluate_backdoor
from trustlab.defenses.backdoor.nad import NAD, NAD_SETTINGS, at_loss, attention_map, nad_layers
from trustlab.errors import InputError
from trustlab.train import TrainSettings


def test_attention_map_by_hand() -> None:
    a = torch.tensor([[[[1.0, -2.0], [0.0, 3.0]], [[2.0, 0.0], [-1.0, 1.0]]]])  # (1, 2, 2, 2)
    s = torch.tensor([1.0 + 4, 4 + 0, 0 + 1, 9 + 1])  # sum over channels of a^2
    want = s / (s.norm() + 1e-6)
    assert torch.allclose(attention_map(a), want.unsqueeze(0))
    # mean over channels gives the same normalised map (up to the 1e-6)
    m = a.pow(2).mean(1).flatten(1)
    assert torch.allclose(attention_map(a), m / m.norm(), atol=1e-6)
    b = torch.zeros_like(a)
    b[0, 0, 0, 0] = 1.0  # map: one-hot at (0, 0)
    mb = torch.tensor([1.0, 0, 0, 0]) / (1 + 1e-6)
    assert torch.allclose(at_loss(a, b), ((want - mb) ** 2).mean())
    assert float(at_loss(a, a)) == 0.0


def test_at_loss_gradient_reaches_the_student_only() -> None:
    s = torch.randn(2, 3, 4, 4, requires_grad=True)
    t = torch.randn(2, 3, 4, 4, requires_grad=True)
    at_loss(s, t).backward()
    assert s.grad is not None and float(s.grad.abs().sum()) > 0 and t.grad is None


def test_defaults_and_layers() -> None:
    from trustlab.models import create_model

    n = NAD()
    s = n.settings
    assert s == NAD_SETTINGS and (s.epochs, s.batch_size, s.lr, s.weight_decay) == (
        20,
        64,
        0.1,
        1e-4,
    )
    assert [s.lr_at(e) for e in (0, 1, 2, 19)] == pytest.approx([0.1, 0.1, 0.01, 0.01])
    assert n.p == 2.0
    r8 = create_model("resnet8", in_channels=1, image_size=16)
    assert nad_layers(r8) == ["layer1", "layer2", "layer3"]
    assert n._plan(r8) == (["layer1", "layer2", "layer3"], [500.0, 1000.0, 1000.0])
    small = create_model("cnn-small", in_channels=1, image_size=16)
    assert nad_layers(small) == ["body.relu1", "body.relu2"]
    assert nad_layers(create_model("cnn8", in_channels=1, image_size=16)) == [
        "block1",
        "block2",
        "block3",
    ]


def test_lowers_asr_keeps_clean_accuracy(planted) -> None:
    art, clean, ev = planted
    before = evaluate_backdoor(art.model, ev, art.trigger, art.policy)
    params = [p.detach().clone() for p in art.model.parameters()]
    nad = NAD(betas=[50, 100, 100], settings=TrainSettings(epochs=4, lr=0.05, batch_size=32))
    model = nad.repair(copy.deepcopy(art.model), clean)
    after = evaluate_backdoor(model, ev, art.trigger, art.policy)
    assert after["asr"] < before["asr"] - 0.2  # measured: 100% -> 18%
    assert after["clean_acc"] >= before["clean_acc"] - 0.05
    assert nad.report is not None and nad.report["layers"] == ["layer1", "layer2", "layer3"]
    assert all(torch.equal(a, b) for a, b in zip(params, art.model.parameters(), strict=True))
    assert model.state_dict().keys() == art.model.state_dict().keys()
    # no hook is left behind
    assert all(not m._forward_hooks for m in model.modules())


def test_errors(planted) -> None:
    art, clean, _ = planted
    with pytest.raises(InputError, match="one beta per layer"):
        NAD(betas=[1, 2], layers=["layer1"])
    with pytest.raises(InputError, match="one beta per layer"):
        NAD(betas=[1, 2])._plan(art.model)
    with pytest.raises(InputError, match="betas"):
        NAD(betas=[-1.0])
    with pytest.raises(InputError, match="p must"):
        NAD(p=0)
    with pytest.raises(InputError, match="teacher_epochs"):
        NAD(teacher_epochs=0)
    with pytest.raises(InputError, match="empty"):
        NAD(layers=[])
    with pytest.raises(InputError, match="spatial"):
        NAD(layers=["classifier"]).repair(copy.deepcopy(art.model), clean)
    with pytest.raises(InputError, match="no layer"):
        NAD(layers=["layer9"]).repair(copy.deepcopy(art.model), clean)
    with pytest.raises(InputError, match="attention layers"):
        nad_layers(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2)))
    with pytest.raises(InputError, match="empty"):
        NAD().repair(copy.deepcopy(art.model), clean.subset([]))
