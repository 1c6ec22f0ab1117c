"""AdvCam: its losses, the region mask, the EOT transformations, and that it optimises."""

from __future__ import annotations

import pytest
import torch

from trustlab.attacks.evasion.advcam import (
    AdvCam,
    default_layers,
    gram,
    random_transform,
    total_variation,
)
from trustlab.data.synthetic import bundled_image
from trustlab.errors import InputError
from trustlab.models import create_model


def _setup():
    torch.manual_seed(0)
    model = create_model("resnet8", num_classes=4, in_channels=3, image_size=(16, 16)).eval()
    x = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    y = torch.tensor([0, 1, 2, 3])
    return model, x, y


def test_gram_and_total_variation_by_hand() -> None:
    f = torch.arange(8.0).view(1, 2, 2, 2)
    flat = f.view(2, 4)
    torch.testing.assert_close(gram(f)[0], flat @ flat.T / (2 * 4))
    half = torch.zeros(1, 1, 2, 2)
    half[..., 0, :] = 1  # the mask keeps the top row
    top = flat.view(2, 2, 2)[:, 0, :]
    torch.testing.assert_close(gram(f, half)[0], top @ top.T / (2 * 2))
    assert float(total_variation(torch.full((2, 3, 5, 5), 0.3)).abs().max()) == 0
    step = torch.zeros(1, 1, 2, 2)
    step[..., 1] = 1  # one vertical edge: horizontal differences 1 in both rows
    torch.testing.assert_close(total_variation(step), torch.tensor([1.0]))


def test_default_layers() -> None:
    assert default_layers(create_model("resnet20")) == (
        ["stem", "layer1", "layer2", "layer3"],
        "layer3",
    )
    style, content = default_layers(create_model("vgg11"))
    assert style == ["body.relu1_1", "body.relu2_1", "body.relu3_2", "body.relu4_2", "body.relu5_2"]
    assert content == "body.relu4_2"
    with pytest.raises(InputError, match="no default AdvCam layers"):
        default_layers(create_model("mlp"))


def test_random_transform_is_seeded_in_range_and_identity_at_zero() -> None:
    x = torch.rand(3, 3, 16, 16)
    a = random_transform(x, torch.Generator().manual_seed(0))
    b = random_transform(x, torch.Generator().manual_seed(0))
    assert torch.equal(a, b) and a.shape == x.shape
    assert float(a.min()) >= 0 and float(a.max()) <= 1
    same = random_transform(
        x, None, scale=(1.0, 1.0), rotation=0.0, translation=0.0, brightness=0.0
    )
    torch.testing.assert_close(same, x, atol=1e-5, rtol=0)
    mask = torch.zeros(1, 1, 16, 16)
    bg = torch.ones(2, 3, 16, 16)
    pasted = random_transform(
        x, None, (1.0, 1.0), 0.0, 0.0, 0.0, background=bg, mask=mask.expand(3, 1, 16, 16)
    )
    torch.testing.assert_close(pasted, torch.ones_like(x))  # all background


def test_advcam_lowers_its_loss_changes_only_the_region_and_fools() -> None:
    model, x, y = _setup()
    mask = torch.zeros(16, 16)
    mask[4:12, 4:12] = 1
    atk = AdvCam(model, bundled_image("chelsea"), mask=mask, steps=60, lr=4 / 255)
    adv = atk(x, y)
    h = atk.history_
    assert len(h) == 60 and h[-1]["total"] < h[0]["total"]
    outside = (mask == 0).expand_as(x)
    assert torch.equal(adv[outside], x[outside])
    assert float(adv.min()) >= 0 and float(adv.max()) <= 1
    with torch.no_grad():
        assert (model(adv).argmax(1) != y).float().mean() > (model(x).argmax(1) != y).float().mean()
    assert atk.style_loss(adv).shape == (4,)
    assert model.training is False and all(p.requires_grad for p in model.parameters())


def test_targeted_and_eot_run() -> None:
    model, x, y = _setup()
    target = (y + 1) % 4
    atk = AdvCam(model, bundled_image("coffee"), steps=5, targeted=True, eot=True,
                 backgrounds=torch.rand(3, 3, 16, 16))  # fmt: skip
    adv = atk(x, y, target)
    assert adv.shape == x.shape and len(atk.history_) == 5
    with pytest.raises(InputError, match="needs target classes"):
        atk(x, y)


def test_bad_input() -> None:
    model, x, y = _setup()
    with pytest.raises(InputError, match="style exemplar"):
        AdvCam(model, torch.rand(3, 8))
    with pytest.raises(InputError, match=r"\[0, 1\]"):
        AdvCam(model, torch.full((3, 8, 8), 2.0))
    with pytest.raises(InputError, match="does not match"):
        AdvCam(model, torch.rand(3, 8, 8), mask=torch.ones(5, 5), steps=1)(x, y)
    with pytest.raises(InputError, match="weights"):
        AdvCam(model, torch.rand(3, 8, 8), style_weight=-1)
