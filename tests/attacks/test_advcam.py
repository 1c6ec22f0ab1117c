"""AdvCam: its losses, the region mask, the EOT transformations, and that it optimises."""

from __future__ import annotations

import pytest
import torch

from trustlab.attacks.evasion.advcam import (
    AdvCam,
    default_layers,
    gram,
    photo_backgrounds,
    random_transform,
    total_variation,
)
from trustlab.data.synthetic import bundled_image
from trustlab.errors import InputError
from trustlab.models import create_model


def _setup():
    torch.manual_seed(0)
    model = create_model("resnet8", num_classes=4, in_channels=3, image_size=(16, 16)).eval()
    # smooth images (photographs): the TV term in 0..255 units dwarfs the others on pixel noise
    x = photo_backgrounds(["astronaut", "coffee", "rocket", "brick"], (16, 16))
    with torch.no_grad():
        y = model(x).argmax(1)  # the labels the (untrained) model gives: clean success 0
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


def test_total_variation_is_the_authors_sum_over_two_in_255_units() -> None:
    # advcam_physical_attack.py total_variation_loss: over pixels i < H-1, j < W-1,
    # ((x[i, j+1] - x[i, j])^2 + (x[i+1, j] - x[i, j])^2) summed, / 2, in 0..255 units
    step = torch.zeros(1, 1, 3, 3)
    step[..., 2] = 1  # a vertical edge between columns 1 and 2: only (i, 1) for i < 2 count
    torch.testing.assert_close(total_variation(step), torch.tensor([2 * 255.0**2 / 2]))
    x = torch.rand(2, 3, 6, 7, generator=torch.Generator().manual_seed(0))
    p = (x * 255).permute(0, 2, 3, 1).double()  # NHWC as the authors' TensorFlow code
    c = p[:, :-1, :-1, :]
    ref = ((c - p[:, :-1, 1:, :]) ** 2 + (c - p[:, 1:, :-1, :]) ** 2).sum((1, 2, 3)) / 2
    torch.testing.assert_close(total_variation(x).double(), ref, rtol=1e-5, atol=1e-3)
    # a 32x32 colour photograph: hundreds in these units, the scale of the style loss, not 1e-2
    photo = photo_backgrounds(["chelsea"], (32, 32))
    assert float(total_variation(photo)) > 100


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
    bg = torch.ones(2, 3, 16, 16)
    nothing = torch.zeros(16, 16)
    pasted = random_transform(x, None, (1.0, 1.0), 0.0, 0.0, 0.0, background=bg, paste=nothing)
    torch.testing.assert_close(pasted, torch.ones_like(x))  # all background
    with pytest.raises(InputError, match="do not match"):
        random_transform(x, None, background=torch.ones(2, 1, 16, 16))


def test_random_transform_is_the_authors_family() -> None:
    """physical_adaption_utils.py img_random_overlay: the image shrunk to 0.4-0.6 of the side,
    within +-25 degrees, inside the frame, on a background, brightness times 1 +- 0.3."""
    n = 200
    x = torch.ones(n, 1, 32, 32)
    bg = torch.zeros(1, 1, 32, 32)
    out = random_transform(x, torch.Generator().manual_seed(0), brightness=0.0, background=bg)
    area = out.flatten(1).sum(1) / 32**2  # the pasted image's share of the frame
    assert float(area.min()) > 0.4**2 - 0.03 and float(area.max()) < 0.6**2 + 0.03
    assert float(area.std()) > 0.02  # the scale varies
    # the unrotated shrunk image stays inside the frame, and moves around
    flat = random_transform(x, torch.Generator().manual_seed(1), rotation=0.0, brightness=0.0,
                            background=bg)  # fmt: skip
    assert float(flat.flatten(1).sum(1).min()) / 32**2 > 0.4**2 - 0.03
    centre = (flat[:, 0].sum(1) * torch.arange(32.0)).sum(1) / flat[:, 0].sum((1, 2))
    assert float(centre.min()) < 12 and float(centre.max()) > 19
    # a rotation of up to 25 degrees: a shrunk square's bounding box grows by up to
    # cos 25 + sin 25 = 1.33, never beyond (a 15 degree family stays below 1.23)
    sq, black = torch.ones(n, 1, 64, 64), torch.zeros(1, 1, 64, 64)
    rot = random_transform(sq, torch.Generator().manual_seed(2), scale=(0.5, 0.5),
                           translation=0.0, brightness=0.0, background=black)  # fmt: skip
    width = (rot[:, 0] > 0.5).any(1).sum(1).float() / 32  # bounding-box width over the side
    assert float(width.max()) > 1.26 and float(width.max()) < 1.37
    # brightness is a factor in [0.7, 1.3]
    grey = torch.full((n, 1, 8, 8), 0.5)
    b = random_transform(grey, torch.Generator().manual_seed(3), scale=(1.0, 1.0), rotation=0.0,
                         translation=0.0)  # fmt: skip
    factor = b.flatten(1).mean(1) / 0.5
    assert 0.7 - 1e-4 <= float(factor.min()) < 0.75 and 1.25 < float(factor.max()) <= 1.3 + 1e-4
    # only what ``paste`` covers is pasted
    half = torch.zeros(32, 32)
    half[:, :16] = 1
    cut = random_transform(x[:1], None, (1.0, 1.0), 0.0, 0.0, 0.0, background=bg, paste=half)
    assert torch.equal(cut[0, 0], half)


def test_photo_backgrounds() -> None:
    bg = photo_backgrounds(["coffee", "brick"], (12, 10))
    assert bg.shape == (2, 3, 12, 10) and float(bg.min()) >= 0 and float(bg.max()) <= 1
    assert photo_backgrounds(["coffee"], (8, 8), channels=1).shape == (1, 1, 8, 8)
    with pytest.raises(InputError, match="channels"):
        photo_backgrounds(["coffee"], (8, 8), channels=2)


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
    default = AdvCam(model, bundled_image("coffee"), steps=2, eot=True)(x, y)  # photo backgrounds
    assert default.shape == x.shape
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
