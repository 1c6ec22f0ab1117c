"""Normalized, unwrap, layer_names, residual_branches and feature_taps."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from trustlab.errors import InputError
from trustlab.models import (
    Normalized,
    create_model,
    feature_taps,
    layer_names,
    residual_branches,
    unwrap,
)

MEAN = (0.1, 0.2, 0.3)
STD = (0.5, 0.25, 2.0)


def _all_hooks_removed(model: nn.Module) -> bool:
    return all(not m._forward_hooks for m in model.modules())


# ------------------------------------------------------------------------------- Normalized


@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (2, 3, 4, 5, 5), (2, 3)], ids=["4d", "5d", "2d"])
def test_normalized_subtracts_mean_and_divides_by_std_per_channel(shape) -> None:
    x = torch.rand(shape)
    out = Normalized(nn.Identity(), MEAN, STD)(x)
    for c in range(3):
        torch.testing.assert_close(out[:, c], (x[:, c] - MEAN[c]) / STD[c])


def test_normalized_known_values_and_single_value_statistics() -> None:
    x = torch.full((1, 3, 2, 2), 0.6)
    out = Normalized(nn.Identity(), MEAN, STD)(x)
    torch.testing.assert_close(out[0, :, 0, 0], torch.tensor([1.0, 1.6, 0.15]))
    grey = Normalized(nn.Identity(), 0.5, 0.25)
    torch.testing.assert_close(grey(torch.ones(2, 1, 3, 3)), torch.full((2, 1, 3, 3), 2.0))
    # one value applies to every channel
    torch.testing.assert_close(grey(torch.ones(2, 3, 3, 3)), torch.full((2, 3, 3, 3), 2.0))


def test_normalized_wraps_a_classifier_and_exposes_features_and_classifier() -> None:
    torch.manual_seed(0)
    inner = create_model("cnn8").eval()
    model = Normalized(inner, MEAN, STD).eval()
    x = torch.rand(2, 3, 32, 32)
    z = (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(model(x), inner(z))
        torch.testing.assert_close(model.features(x), inner.features(z))
        torch.testing.assert_close(model.classifier(model.features(x)), model(x))
    assert model.inner is inner and model.classifier is inner.classifier
    assert set(model.state_dict()) >= {"mean", "std", "inner.classifier.weight"}


def test_normalized_video_model_and_input_gradient() -> None:
    torch.manual_seed(0)
    model = Normalized(create_model("c3d-small", num_classes=4), MEAN, STD).eval()
    x = torch.rand(1, 3, 8, 32, 32, requires_grad=True)
    assert model(x).shape == (1, 4)
    # gradients reach the [0, 1] input through the normalisation (attacks rely on it)
    ident = Normalized(nn.Identity(), MEAN, STD)
    y = torch.rand(2, 3, 4, 4, requires_grad=True)
    ident(y).sum().backward()
    torch.testing.assert_close(y.grad[:, 1], torch.full((2, 4, 4), 4.0))


def test_normalized_follows_the_input_dtype() -> None:
    model = Normalized(nn.Identity(), MEAN, STD)
    out = model(torch.rand(2, 3, 2, 2, dtype=torch.float64))
    assert out.dtype == torch.float64
    assert model.double().mean.dtype == torch.float64


@pytest.mark.parametrize(
    ("mean", "std", "match"),
    [
        (MEAN, (0.5, 0.0, 1.0), "positive"),
        (MEAN, (0.5, 0.5), "mean has 3 values and std 2"),
        ((0.1, float("nan"), 0.3), STD, "finite"),
        ((), STD, "finite"),
        ("abc", STD, "not a list of numbers"),
    ],
)
def test_normalized_rejects_bad_statistics(mean, std, match: str) -> None:
    with pytest.raises(InputError, match=match):
        Normalized(nn.Identity(), mean, std)


def test_normalized_input_and_inner_errors() -> None:
    with pytest.raises(InputError, match="torch.nn.Module"):
        Normalized(lambda x: x, MEAN, STD)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="does not have 3 channels"):
        Normalized(nn.Identity(), MEAN, STD)(torch.rand(2, 1, 4, 4))
    plain = Normalized(nn.Identity(), MEAN, STD)
    with pytest.raises(InputError, match="no features"):
        plain.features(torch.rand(2, 3, 4, 4))
    with pytest.raises(InputError, match="no .classifier"):
        _ = plain.classifier


# ------------------------------------------------------------------ unwrap, names, branches


def test_unwrap_goes_through_every_wrapper() -> None:
    inner = create_model("mlp", image_size=8)
    assert unwrap(inner) is inner
    assert unwrap(Normalized(Normalized(inner, 0.5, 0.5), 0.5, 0.5)) is inner
    assert unwrap(nn.DataParallel(Normalized(inner, MEAN, STD))) is inner

    class Compiled(nn.Module):  # what torch.compile returns keeps the model as _orig_mod
        def __init__(self, m: nn.Module) -> None:
            super().__init__()
            self._orig_mod = m

    assert unwrap(Compiled(Normalized(inner, MEAN, STD))) is inner


def test_layer_names_and_residual_branches() -> None:
    model = create_model("resnet20")
    names = layer_names(model)
    assert "" not in names
    assert names[0] == "stem"
    assert {"layer1.0.residual", "layer1.0.residual.conv1", "layer2.0.shortcut"} <= set(names)
    assert names[-1] == "classifier"
    wrapped = Normalized(model, MEAN, STD)
    branches = residual_branches(wrapped)
    assert [n for n, _ in branches][:2] == ["inner.layer1.0.residual", "inner.layer1.1.residual"]
    assert [m for _, m in branches] == [m for _, m in residual_branches(model)]


# ------------------------------------------------------------------------------ feature_taps


def test_feature_taps_record_each_forward_pass() -> None:
    torch.manual_seed(0)
    model = create_model("cnn8").eval()
    x1, x2 = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    with feature_taps(model, ["block1", "fc", "classifier"]) as feats:
        assert feats == {}
        out = model(x1)
        assert feats["block1"].shape == (2, 64, 16, 16)
        torch.testing.assert_close(feats["fc"], model.features(x1))
        torch.testing.assert_close(feats["classifier"], out)
        model(x2)
        torch.testing.assert_close(feats["classifier"], model(x2))
    assert _all_hooks_removed(model)
    assert set(feats) == {"block1", "fc", "classifier"}  # the dict keeps the last values
    model(x1)
    torch.testing.assert_close(feats["classifier"], model(x2))  # no longer updated


def test_feature_taps_see_each_layers_own_output() -> None:
    # No in-place ReLU: a BatchNorm output tapped before its ReLU keeps its negative values.
    torch.manual_seed(0)
    model = create_model("resnet20").eval()
    with feature_taps(model, ["layer1.0.residual.bn1", "layer1.0.residual.relu1"]) as feats:
        model(torch.rand(2, 3, 32, 32))
    assert (feats["layer1.0.residual.bn1"] < 0).any()
    torch.testing.assert_close(
        feats["layer1.0.residual.relu1"], feats["layer1.0.residual.bn1"].clamp_min(0)
    )


def test_feature_taps_through_normalized_accept_inner_names() -> None:
    torch.manual_seed(0)
    inner = create_model("resnet20").eval()
    model = Normalized(inner, MEAN, STD).eval()
    x = torch.rand(2, 3, 32, 32)
    with feature_taps(model, ["layer3", "inner.pool"]) as feats:
        model(x)
    assert feats["layer3"].shape == (2, 64, 8, 8)
    torch.testing.assert_close(feats["inner.pool"].flatten(1), model.features(x))
    assert _all_hooks_removed(model)


def test_feature_taps_gradients_and_detach() -> None:
    torch.manual_seed(0)
    model = create_model("cnn-small", in_channels=1, image_size=16).eval()
    x = torch.rand(2, 1, 16, 16, requires_grad=True)
    with feature_taps(model, "body.conv2") as feats:  # one string is one name
        model(x)
    feats["body.conv2"].sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    with feature_taps(model, ["body.conv2"], detach=True) as feats:
        model(x)
    assert not feats["body.conv2"].requires_grad


def test_feature_taps_remove_hooks_after_an_exception() -> None:
    model = create_model("densenet-small")
    with pytest.raises(RuntimeError, match="boom"), feature_taps(model, ["block1", "trans1"]):
        assert model.block1._forward_hooks and model.trans1._forward_hooks
        raise RuntimeError("boom")
    assert _all_hooks_removed(model)
    # a failing forward pass inside the block too
    with pytest.raises(RuntimeError), feature_taps(model, ["block2"]):
        model(torch.rand(2, 5, 32, 32))  # wrong channel count
    assert _all_hooks_removed(model)


def test_feature_taps_unknown_layer_lists_close_matches_and_registers_nothing() -> None:
    model = create_model("cnn8")
    with (
        pytest.raises(InputError, match=r"no layer 'blok1'.*Close matches: block1"),
        feature_taps(model, ["fc", "blok1"]),
    ):
        pass  # pragma: no cover
    assert _all_hooks_removed(model)
    with pytest.raises(InputError, match="at least one layer"), feature_taps(model, []):
        pass  # pragma: no cover
