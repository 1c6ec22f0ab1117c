"""The model zoo: shapes, gradients, the features/classifier and residual/shortcut conventions,
deterministic init, parameter counts and input errors."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from trustlab.errors import InputError
from trustlab.models import (
    create_model,
    list_models,
    num_parameters,
    residual_branches,
)
from trustlab.models.densenet import DenseLayer
from trustlab.models.resnet import BasicBlock, PadShortcut, PreActBlock
from trustlab.registry import MODELS

IMAGE_MODELS = [
    "mlp",
    "cnn-small",
    "cnn8",
    "resnet8",
    "resnet20",
    "resnet18",
    "wrn-16-4",
    "densenet-small",
    "vgg11",
    "vgg13",
    "vgg16",
    "vgg19",
]
VIDEO_MODELS = ["c3d-small"]

# (name, kwargs): every model once at its default configuration (batch of 2).
SPECS = [(n, {}) for n in IMAGE_MODELS if n not in ("vgg13", "vgg16")] + [
    ("resnet18", {"preact": True}),
    ("c3d-small", {}),
]
RESIDUAL_SPECS = [
    ("resnet8", {}, 3),
    ("resnet20", {}, 9),
    ("resnet18", {}, 8),
    ("resnet18", {"preact": True}, 8),
    ("wrn-16-4", {}, 6),
    ("densenet-small", {}, 18),
]


def _input(name: str, n: int = 2, channels: int = 3, size: int = 32, frames: int = 8):
    if MODELS.get(name).meta["kind"] == "video":
        return torch.rand(n, channels, frames, size, size)
    return torch.rand(n, channels, size, size)


def _spec_id(spec: tuple) -> str:
    name, kwargs = spec[0], spec[1]
    return name + "".join(f"-{k}={v}" for k, v in kwargs.items())


def test_every_model_is_registered_with_kind_and_description() -> None:
    names = set(MODELS.names())
    assert set(IMAGE_MODELS + VIDEO_MODELS) <= names
    for name in IMAGE_MODELS + VIDEO_MODELS:
        entry = MODELS.get(name)
        assert entry.description and "\n" not in entry.description
        assert entry.meta["kind"] == ("video" if name in VIDEO_MODELS else "image")


@pytest.mark.parametrize("spec", SPECS, ids=_spec_id)
def test_shapes_backward_and_features_convention(spec: tuple) -> None:
    name, kwargs = spec
    torch.manual_seed(0)
    model = create_model(name, **kwargs)
    x = _input(name)

    model.train()
    out = model(x)
    assert out.shape == (2, 10) and out.dtype == torch.float32
    assert torch.isfinite(out).all()
    nn.functional.cross_entropy(out, torch.tensor([0, 1])).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, f"parameters without gradient: {missing}"
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())

    model.eval()
    with torch.no_grad():
        out = model(x)
        feats = model.features(x)
    assert out.shape == (2, 10)
    assert isinstance(model.classifier, nn.Linear)
    assert model.classifier.out_features == 10
    assert feats.shape == (2, model.classifier.in_features)
    torch.testing.assert_close(model.classifier(feats), out)


@pytest.mark.parametrize(
    ("name", "channels", "size", "kwargs"),
    [
        ("mlp", 1, (16, 16), {"hidden": (32,)}),
        ("cnn-small", 1, (28, 28), {"dropout": 0.25}),
        ("cnn-small", 1, (6, 6), {}),
        ("cnn8", 1, (24, 40), {}),
        ("resnet20", 1, (16, 16), {}),
        ("resnet18", 3, (8, 12), {}),
        ("wrn-16-4", 3, (16, 16), {"dropout": 0.3}),
        ("densenet-small", 3, (16, 24), {"depth": 22, "growth_rate": 6}),
        ("vgg11", 1, (32, 48), {}),
        ("c3d-small", 1, (16, 16), {"frames": 4}),
    ],
)
def test_other_sizes_channels_and_options(name: str, channels: int, size, kwargs) -> None:
    torch.manual_seed(0)
    model = create_model(name, num_classes=3, in_channels=channels, image_size=size, **kwargs)
    if MODELS.get(name).meta["kind"] == "video":
        x = torch.rand(2, channels, kwargs["frames"], *size)
    else:
        x = torch.rand(2, channels, *size)
    assert model(x).shape == (2, 3)
    model.eval()
    assert model(x).shape == (2, 3)
    assert model.config["image_size"] == list(size)


def test_c3d_takes_longer_clips_than_its_frames_argument() -> None:
    model = create_model("c3d-small", num_classes=4, frames=8).eval()
    assert model(torch.rand(1, 3, 16, 32, 32)).shape == (1, 4)


def test_c3d_width_multiplier() -> None:
    half = create_model("c3d-small", num_classes=4, width=0.5).eval()
    assert half.body.conv1a.out_channels == 16 and half.body.conv4a.out_channels == 128
    assert half(torch.rand(2, 3, 8, 32, 32)).shape == (2, 4)
    full = create_model("c3d-small", num_classes=4)
    assert sum(p.numel() for p in half.parameters()) < sum(p.numel() for p in full.parameters())
    with pytest.raises(InputError, match="width must be in"):
        create_model("c3d-small", width=0)


@pytest.mark.parametrize("name", [n for n in IMAGE_MODELS + VIDEO_MODELS if n[:4] != "vgg1"])
def test_init_is_deterministic_given_the_seed(name: str) -> None:
    torch.manual_seed(123)
    a = create_model(name).state_dict()
    torch.manual_seed(123)
    b = create_model(name).state_dict()
    torch.manual_seed(124)
    c = create_model(name).state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a if a[k].is_floating_point())


def test_same_seed_same_outputs() -> None:
    x = torch.rand(2, 3, 32, 32)
    outs = []
    for _ in range(2):
        torch.manual_seed(7)
        outs.append(create_model("resnet20")(x))
    torch.testing.assert_close(outs[0], outs[1], rtol=0, atol=0)


# ----------------------------------------------------------------- residual / shortcut convention


@pytest.mark.parametrize("spec", RESIDUAL_SPECS, ids=_spec_id)
def test_residual_branches_are_named(spec: tuple) -> None:
    name, kwargs, count = spec
    model = create_model(name, **kwargs)
    branches = residual_branches(model)
    assert len(branches) == count
    modules = dict(model.named_modules())
    for branch_name, branch in branches:
        parent = modules[branch_name.rsplit(".", 1)[0]]
        assert parent.residual is branch
        assert isinstance(parent.shortcut, nn.Module)


@pytest.mark.parametrize("name", ["mlp", "cnn-small", "cnn8", "vgg11", "c3d-small"])
def test_plain_networks_have_no_residual_branches(name: str) -> None:
    assert residual_branches(create_model(name)) == []


def test_resnet20_uses_option_a_shortcuts_and_resnet18_projections() -> None:
    r20 = create_model("resnet20")
    shortcuts = [type(m.shortcut) for _, m in r20.named_modules() if isinstance(m, BasicBlock)]
    assert shortcuts.count(PadShortcut) == 2 and shortcuts.count(nn.Identity) == 7
    r18 = create_model("resnet18")
    assert isinstance(r18.layer2[0].shortcut, nn.Sequential)
    assert isinstance(r18.layer2[0].shortcut.conv, nn.Conv2d)
    pre = create_model("resnet18", preact=True)
    assert all(isinstance(b, PreActBlock) for b in pre.layer1)


def test_pad_shortcut_subsamples_and_zero_pads() -> None:
    x = torch.randn(2, 16, 8, 8)
    y = PadShortcut(16, 32, 2)(x)
    assert y.shape == (2, 32, 4, 4)
    torch.testing.assert_close(y[:, 8:24], x[:, :, ::2, ::2])
    assert y[:, :8].abs().sum() == 0 and y[:, 24:].abs().sum() == 0


def _block_io(model: nn.Module, x: torch.Tensor, zero_residual: bool) -> list[tuple]:
    """Run ``model`` once; per residual block return (block, residual out, shortcut out, out)."""
    records: dict[nn.Module, dict[str, torch.Tensor]] = {}
    handles = []
    blocks = [m for m in model.modules() if hasattr(m, "residual") and hasattr(m, "shortcut")]
    for block in blocks:
        rec = records.setdefault(block, {})

        def save(key: str, rec=rec, zero: bool = False):
            def hook(module, args, output):
                rec[key] = output
                return torch.zeros_like(output) if zero else None

            return hook

        handles.append(block.residual.register_forward_hook(save("r", zero=zero_residual)))
        handles.append(block.shortcut.register_forward_hook(save("s")))
        handles.append(block.register_forward_hook(save("out")))
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return [(b, records[b]["r"], records[b]["s"], records[b]["out"]) for b in blocks]


def _combine(block: nn.Module, r: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    if isinstance(block, BasicBlock):
        return torch.relu(r + s)
    if isinstance(block, PreActBlock):
        return r + s
    assert isinstance(block, DenseLayer)
    return torch.cat([s, r], dim=1)


@pytest.mark.parametrize("spec", RESIDUAL_SPECS, ids=_spec_id)
def test_block_output_is_residual_plus_shortcut(spec: tuple) -> None:
    name, kwargs, count = spec
    torch.manual_seed(0)
    model = create_model(name, image_size=16, **kwargs).eval()
    x = torch.rand(2, 3, 16, 16)
    io = _block_io(model, x, zero_residual=False)
    assert len(io) == count
    for block, r, s, out in io:
        torch.testing.assert_close(out, _combine(block, r, s))
    # Zeroing every residual branch leaves the shortcut path alone.
    for block, r, s, out in _block_io(model, x, zero_residual=True):
        torch.testing.assert_close(out, _combine(block, torch.zeros_like(r), s))


def _input_grad(block: nn.Module, x: torch.Tensor, g: torch.Tensor, gamma: float | None):
    handle = None
    if gamma is not None:

        def scale(module, grad_input, grad_output):
            return tuple(None if gi is None else gi * gamma for gi in grad_input)

        handle = block.residual.register_full_backward_hook(scale)
    x = x.clone().requires_grad_(True)
    out = block(x)
    (grad,) = torch.autograd.grad(out, x, g)
    if handle is not None:
        handle.remove()
    return out.detach(), grad


@pytest.mark.parametrize("kind", ["basic", "preact", "dense"])
def test_backward_hook_on_residual_scales_only_the_branch_gradient(kind: str) -> None:
    """The SGM contract: a full backward hook on ``residual`` scales the branch's share of
    d out / d x and leaves the skip path's share untouched."""
    torch.manual_seed(0)
    block = {"basic": BasicBlock(8, 8), "preact": PreActBlock(8, 8), "dense": DenseLayer(8, 4)}
    block = block[kind].eval()
    shape = (2, 8, 6, 6)
    x = torch.randn(shape)
    with torch.no_grad():
        g = torch.randn_like(block(x))
    gamma = 0.2
    out, full = _input_grad(block, x, g, None)
    _, scaled = _input_grad(block, x, g, gamma)
    if isinstance(block, BasicBlock):
        skip = g * (out > 0)  # identity shortcut behind the final ReLU
    elif isinstance(block, PreActBlock):
        skip = g
    else:
        skip = g[:, : shape[1]]
    torch.testing.assert_close(scaled - skip, gamma * (full - skip), rtol=1e-4, atol=1e-5)
    assert not torch.allclose(scaled, full)


@pytest.mark.parametrize("spec", RESIDUAL_SPECS[:1] + RESIDUAL_SPECS[2:], ids=_spec_id)
def test_full_backward_hooks_on_every_branch_work_in_train_mode(spec: tuple) -> None:
    name, kwargs, _ = spec
    torch.manual_seed(0)
    model = create_model(name, image_size=16, **kwargs)
    x = torch.rand(2, 3, 16, 16, requires_grad=True)
    y = torch.tensor([1, 2])
    grads = {}
    for gamma in (None, 1.0, 0.5):
        handles = [
            m.register_full_backward_hook(
                lambda mod, gi, go, gamma=gamma: tuple(None if t is None else t * gamma for t in gi)
            )
            for _, m in residual_branches(model)
            if gamma is not None
        ]
        try:
            loss = nn.functional.cross_entropy(model(x), y)
            (grads[gamma],) = torch.autograd.grad(loss, x)
        finally:
            for h in handles:
                h.remove()
    torch.testing.assert_close(grads[1.0], grads[None])
    assert not torch.allclose(grads[0.5], grads[None])
    assert all(not m._backward_hooks for m in model.modules())


# ------------------------------------------------------------------------------- list_models


def test_list_models_reports_parameter_counts() -> None:
    rows = {row["name"]: row for row in list_models()}
    assert set(rows) == set(MODELS.names())
    for row in rows.values():
        assert set(row) == {"name", "description", "kind", "params"}
        assert isinstance(row["params"], int) and row["params"] > 0
    assert rows["resnet8"]["params"] == 75_290  # 6n+2, n=1: a third of ResNet-20's blocks
    assert rows["resnet20"]["params"] == 269_722  # He et al.: 0.27M
    assert rows["resnet18"]["params"] == 11_173_962  # 11.2M
    assert rows["wrn-16-4"]["params"] == 2_748_890  # Zagoruyko & Komodakis: 2.7M
    assert rows["vgg11"]["params"] == 9_231_114
    assert 0.1e6 < rows["densenet-small"]["params"] < 0.3e6
    assert rows["c3d-small"]["kind"] == "video"
    assert rows["mlp"]["params"] == 3 * 32 * 32 * 256 + 256 + 256 * 256 + 256 + 256 * 10 + 10


def test_list_models_counts_match_real_models_and_leave_the_rng_alone() -> None:
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    rows = {row["name"]: row["params"] for row in list_models()}
    torch.testing.assert_close(torch.rand(3), expected)
    assert rows["cnn8"] == num_parameters(create_model("cnn8"))
    assert rows["c3d-small"] == num_parameters(create_model("c3d-small"))


def test_config_rebuilds_the_model() -> None:
    model = create_model("wrn-16-4", num_classes=5, image_size=(16, 24), dropout=0.1)
    config = json.loads(json.dumps(model.config))
    assert config == {
        "name": "wrn-16-4",
        "num_classes": 5,
        "in_channels": 3,
        "image_size": [16, 24],
        "dropout": 0.1,
    }
    again = create_model(**config)
    assert again.state_dict().keys() == model.state_dict().keys()


# ------------------------------------------------------------------------------------ errors


def test_unknown_model_name_suggests_the_closest() -> None:
    with pytest.raises(InputError, match="resnet20"):
        create_model("resnet21")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_classes": 1}, "num_classes must be an integer >= 2, got 1. A classifier"),
        ({"num_classes": True}, "num_classes"),
        ({"num_classes": 2.5}, "num_classes"),
        ({"in_channels": 0}, "in_channels must be an integer >= 1, got 0. Use 1 for"),
        ({"image_size": 0}, r"image_size must be an integer >= 1, got 0. Pass an int"),
        ({"image_size": (32,)}, "has 1 entries"),
        ({"image_size": (32, 32, 3)}, "has 3 entries"),
        ({"image_size": "32"}, "image_size"),
        ({"image_size": (32, -1)}, r"image_size=\(32, -1\): each entry .* got -1"),
    ],
)
def test_bad_common_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(InputError, match=match):
        create_model("resnet20", **kwargs)


@pytest.mark.parametrize(
    ("name", "size", "kwargs", "match"),
    [
        ("vgg11", 16, {}, "at least 32x32"),
        ("cnn8", (32, 4), {}, "at least 8x8"),
        ("resnet18", 4, {}, "at least 8x8"),
        ("cnn-small", 5, {}, "at least 6x6"),
        ("densenet-small", 2, {}, "at least 4x4"),
        ("c3d-small", 4, {}, "at least 8x8"),
        ("c3d-small", 32, {"frames": 2}, "frames=2"),
    ],
)
def test_images_too_small_for_the_architecture(name, size, kwargs, match) -> None:
    with pytest.raises(InputError, match=match):
        create_model(name, image_size=size, **kwargs)


@pytest.mark.parametrize(
    ("name", "kwargs", "match"),
    [
        ("resnet20", {"dropout": 0.1}, r"does not take 'dropout'; its extra options are: none"),
        ("wrn-16-4", {"widen": 8}, r"'widen'.*options are: dropout"),
        ("resnet18", {"frames": 8}, r"'frames'.*options are: preact"),
        ("c3d-small", {"preact": True}, r"options are: frames, dropout"),
        ("wrn-16-4", {"dropout": 1.5}, r"dropout=1.5 must be a number in \[0, 1\)"),
        ("cnn-small", {"dropout": "high"}, r"dropout='high'"),
        ("resnet18", {"preact": "yes"}, r"preact='yes' must be True or False"),
        ("mlp", {"hidden": []}, "hidden=.*non-empty"),
        ("mlp", {"hidden": (64, 0)}, "positive integer"),
        ("densenet-small", {"depth": 41}, r"depth=41"),
        ("densenet-small", {"growth_rate": 0}, r"growth_rate=0"),
        ("densenet-small", {"compression": 0.0}, r"compression=0.0"),
    ],
)
def test_bad_model_options(name: str, kwargs: dict, match: str) -> None:
    with pytest.raises(InputError, match=match):
        create_model(name, **kwargs)


def test_input_of_the_wrong_rank_is_an_input_error() -> None:
    with pytest.raises(InputError, match=r"\(N, C, H, W\).*unsqueeze"):
        create_model("cnn8")(torch.rand(3, 32, 32))
    with pytest.raises(InputError, match=r"\(N, C, T, H, W\)"):
        create_model("c3d-small")(torch.rand(2, 3, 32, 32))
    assert issubclass(InputError, ValueError)


def test_vgg_width_multiplier() -> None:
    quarter = create_model("vgg11", width=0.25)
    convs = [m.out_channels for m in quarter.modules() if isinstance(m, nn.Conv2d)]
    assert convs == [16, 32, 64, 64, 128, 128, 128, 128]
    assert quarter.classifier.in_features == 128
    assert quarter(torch.rand(2, 3, 32, 32)).shape == (2, 10)
    with pytest.raises(InputError, match="width must be in"):
        create_model("vgg11", width=0)
