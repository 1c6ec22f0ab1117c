"""The classifier convention of the zoo, and the small networks ``mlp``, ``cnn-small``, ``cnn8``.

Conventions every trustlab classifier follows (later modules rely on them):

* ``model.features(x)`` returns the penultimate representation ``(N, D)`` and
  ``model.classifier`` is the final :class:`torch.nn.Linear`, with
  ``forward(x) == classifier(features(x))``.
* No in-place activations anywhere, so that a forward hook on any layer
  (:func:`trustlab.models.wrappers.feature_taps`) sees that layer's own output and full backward
  hooks (SGM) can be put on any sub-module.
* Weights are drawn from torch's global RNG only: the same ``torch.manual_seed`` gives the same
  initial weights.
* Inputs are images ``(N, C, H, W)`` in ``[0, 1]`` (video models: ``(N, C, T, H, W)``);
  normalisation lives in :class:`trustlab.models.wrappers.Normalized`.
"""

from __future__ import annotations

import math
import operator
from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import nn

from trustlab.errors import InputError
from trustlab.registry import MODELS

__all__ = [
    "CNN8",
    "MLP",
    "Classifier",
    "SmallCNN",
    "check_min_size",
    "check_probability",
]


class Classifier(nn.Module):
    """Base class of trustlab's classifiers: ``forward(x) == classifier(features(x))``.

    Subclasses define ``features(x) -> (N, D)`` (the penultimate representation) and
    ``self.classifier`` (the final :class:`torch.nn.Linear`, ``D -> K``); later modules (feature
    taps, SGM, detectors) rely on this split. ``input_ndim`` is 4 for image models and 5 for video
    models; :meth:`check_input` turns a tensor of the wrong rank into an :class:`InputError` instead
    of a cryptic conv error.

    Attributes:
        input_ndim: rank of the input, 4 (``(N, C, H, W)``, default) or 5 (``(N, C, T, H, W)``).
        classifier: the final ``nn.Linear``; set by every subclass.

    Shapes: input ``(N, C, H, W)`` (video ``(N, C, T, H, W)``) floats in ``[0, 1]``; output
    ``(N, K)`` logits.

    Example:
        >>> model = SmallCNN(in_channels=1, image_size=(28, 28))
        >>> model.classifier(model.features(torch.rand(2, 1, 28, 28))).shape
        torch.Size([2, 10])
    """

    input_ndim: int = 4
    classifier: nn.Linear

    def features(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))

    def check_input(self, x: torch.Tensor) -> None:
        if x.dim() != self.input_ndim:
            want = "(N, C, H, W) images" if self.input_ndim == 4 else "(N, C, T, H, W) clips"
            raise InputError(
                f"{type(self).__name__} expects {want}, got a tensor of shape {tuple(x.shape)}. "
                "Add the batch dimension for a single sample (x.unsqueeze(0))."
            )


def check_min_size(model: str, image_size: tuple[int, int], minimum: int, why: str) -> None:
    """Raise :class:`InputError` when ``image_size`` is smaller than ``minimum`` on either side."""
    h, w = image_size
    if h < minimum or w < minimum:
        raise InputError(
            f"model {model!r} needs images of at least {minimum}x{minimum} ({why}); got {h}x{w}. "
            "Resize the inputs (e.g. torch.nn.functional.interpolate) or choose a model for "
            "small images such as 'cnn-small' or 'mlp'."
        )


def check_probability(model: str, name: str, value: float) -> float:
    """A dropout-like probability in ``[0, 1)``, else :class:`InputError`."""
    try:
        p = float(value)
    except (TypeError, ValueError):
        p = math.nan
    if not 0.0 <= p < 1.0:
        raise InputError(f"model {model!r}: {name}={value!r} must be a number in [0, 1).")
    return p


class MLP(Classifier):
    """Multi-layer perceptron: flatten -> Linear -> ReLU -> ... -> Linear(classes).

    Args:
        input_dim: ``C * H * W`` (required).
        hidden: hidden widths; default ``(256, 256)``.
        num_classes: output classes; default 10.

    Shapes: input ``(N, C, H, W)`` floats in ``[0, 1]`` with ``C * H * W == input_dim``; features
    ``(N, hidden[-1])``; output ``(N, num_classes)`` logits.

    Example:
        >>> model = MLP(3 * 32 * 32, hidden=(256, 256), num_classes=10)
        >>> model(torch.rand(2, 3, 32, 32)).shape
        torch.Size([2, 10])
    """

    def __init__(self, input_dim: int, hidden: Sequence[int] = (256, 256), num_classes: int = 10):
        super().__init__()
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        width = input_dim
        for i, h in enumerate(hidden, 1):
            layers[f"fc{i}"] = nn.Linear(width, h)
            layers[f"relu{i}"] = nn.ReLU()
            width = h
        self.flatten = nn.Flatten(1)
        self.layers = nn.Sequential(layers)
        self.classifier = nn.Linear(width, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return self.layers(self.flatten(x))


class SmallCNN(Classifier):
    """LeNet-like CNN for digits / MNIST, as in PyTorch's MNIST example.

    conv3x3(32) -> ReLU -> conv3x3(64) -> ReLU -> maxpool 2 -> [dropout] -> FC 128 -> ReLU ->
    [dropout] -> Linear(classes); convolutions unpadded (28x28 -> 12x12x64 = 9216 features).
    Source: https://github.com/pytorch/examples/blob/main/mnist/main.py

    Args:
        in_channels: input channels; default 1.
        image_size: ``(H, W)``; default ``(28, 28)``; at least 6x6.
        num_classes: output classes; default 10.
        dropout: probability of both dropout layers; default 0 (the example uses 0.25 / 0.5).

    Shapes: input ``(N, in_channels, H, W)`` floats in ``[0, 1]``; features ``(N, 128)``; output
    ``(N, num_classes)`` logits.

    Example:
        >>> model = SmallCNN(in_channels=1, image_size=(28, 28), num_classes=10)
        >>> model(torch.rand(2, 1, 28, 28)).shape
        torch.Size([2, 10])
    """

    def __init__(
        self,
        in_channels: int = 1,
        image_size: tuple[int, int] = (28, 28),
        num_classes: int = 10,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        h, w = ((image_size[0] - 4) // 2, (image_size[1] - 4) // 2)
        self.body = nn.Sequential(
            OrderedDict(
                conv1=nn.Conv2d(in_channels, 32, 3),
                relu1=nn.ReLU(),
                conv2=nn.Conv2d(32, 64, 3),
                relu2=nn.ReLU(),
                pool=nn.MaxPool2d(2),
                drop1=nn.Dropout(dropout),
                flatten=nn.Flatten(1),
            )
        )
        self.fc = nn.Sequential(
            OrderedDict(
                linear=nn.Linear(64 * h * w, 128), relu=nn.ReLU(), drop2=nn.Dropout(dropout)
            )
        )
        self.classifier = nn.Linear(128, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return self.fc(self.body(x))


def _conv_bn_relu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        OrderedDict(
            conv=nn.Conv2d(cin, cout, 3, padding=1), bn=nn.BatchNorm2d(cout), relu=nn.ReLU()
        )
    )


class CNN8(Classifier):
    """The 8-layer CIFAR-10 CNN of the Active-Passive Loss paper.

    Ma, Huang, Wang, Romano, Erfani, Bailey, "Normalized Loss Functions for Deep Learning with Noisy
    Labels", ICML 2020.

    Six 3x3 convolutions (padding 1, bias, each followed by BatchNorm and ReLU) with 64, 64,
    maxpool, 128, 128, maxpool, 196, 196, maxpool; then FC 256 + BatchNorm1d + ReLU and
    FC classes. The flatten size is ``196 * (H // 8) * (W // 8)`` (3136 for 32x32). Initialisation
    as in the authors' code (https://github.com/HanxunH/Active-Passive-Losses, ``models.py``):
    Kaiming-uniform (fan-in, ReLU) convolution weights, Xavier-uniform linear weights.

    Args:
        in_channels: input channels; default 3.
        image_size: ``(H, W)``; default ``(32, 32)``; at least 8x8.
        num_classes: output classes; default 10.

    Shapes: input ``(N, in_channels, H, W)`` floats in ``[0, 1]``; features ``(N, 256)``; output
    ``(N, num_classes)`` logits.

    Example:
        >>> model = CNN8(in_channels=3, image_size=(32, 32), num_classes=10)
        >>> model(torch.rand(2, 3, 32, 32)).shape
        torch.Size([2, 10])
    """

    def __init__(
        self, in_channels: int = 3, image_size: tuple[int, int] = (32, 32), num_classes: int = 10
    ) -> None:
        super().__init__()
        widths = ((64, 64), (128, 128), (196, 196))
        cin = in_channels
        for b, (w1, w2) in enumerate(widths, 1):
            block = nn.Sequential(
                OrderedDict(
                    conv1=_conv_bn_relu(cin, w1),
                    conv2=_conv_bn_relu(w1, w2),
                    pool=nn.MaxPool2d(2, 2),
                )
            )
            self.add_module(f"block{b}", block)
            cin = w2
        flat = cin * (image_size[0] // 8) * (image_size[1] // 8)
        self.flatten = nn.Flatten(1)
        self.fc = nn.Sequential(
            OrderedDict(linear=nn.Linear(flat, 256), bn=nn.BatchNorm1d(256), relu=nn.ReLU())
        )
        self.classifier = nn.Linear(256, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_uniform_(m.weight, mode="fan_in", nonlinearity="relu")
            elif isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        x = self.block3(self.block2(self.block1(x)))
        return self.fc(self.flatten(x))


@MODELS.register("mlp", "MLP: flatten -> 256 -> 256 -> classes, ReLU", kind="image")
def mlp(
    *,
    num_classes: int = 10,
    in_channels: int = 3,
    image_size: tuple[int, int] = (32, 32),
    hidden: Sequence[int] = (256, 256),
) -> MLP:
    """Multi-layer perceptron on flattened inputs; ``hidden`` widths default ``(256, 256)``."""
    if isinstance(hidden, int):
        hidden = (hidden,)
    try:
        widths = tuple(operator.index(h) for h in hidden)
        ok = len(widths) > 0 and all(w >= 1 and not isinstance(w, bool) for w in widths)
    except TypeError:
        ok = False
    if not ok:
        raise InputError(
            f"model 'mlp': hidden={hidden!r} must be a non-empty list of positive integer "
            "widths, e.g. hidden=(256, 256)."
        )
    return MLP(in_channels * image_size[0] * image_size[1], widths, num_classes)


@MODELS.register(
    "cnn-small", "LeNet-like conv32-conv64-maxpool-fc128 CNN for digits/MNIST", kind="image"
)
def cnn_small(
    *,
    num_classes: int = 10,
    in_channels: int = 3,
    image_size: tuple[int, int] = (32, 32),
    dropout: float = 0.0,
) -> SmallCNN:
    """:class:`SmallCNN`; needs images of at least 6x6 (two unpadded 3x3 convs, a 2x2 pool)."""
    check_min_size("cnn-small", image_size, 6, "two unpadded 3x3 convolutions and a 2x2 max-pool")
    p = check_probability("cnn-small", "dropout", dropout)
    return SmallCNN(in_channels, image_size, num_classes, p)


@MODELS.register(
    "cnn8",
    "8-layer CNN (6 conv + 2 FC) of the Active-Passive Loss paper, ICML 2020",
    kind="image",
    paper="Ma, Huang, Wang, Romano, Erfani, Bailey. Normalized Loss Functions for Deep Learning "
    "with Noisy Labels. ICML 2020.",
)
def cnn8(
    *, num_classes: int = 10, in_channels: int = 3, image_size: tuple[int, int] = (32, 32)
) -> CNN8:
    """:class:`CNN8`; needs images of at least 8x8 (three 2x2 max-pools)."""
    check_min_size("cnn8", image_size, 8, "three 2x2 max-pools")
    return CNN8(in_channels, image_size, num_classes)
