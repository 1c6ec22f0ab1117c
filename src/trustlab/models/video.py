"""A small C3D-style 3D-convolutional video classifier (``c3d-small``).

Tran, Bourdev, Fergus, Torresani & Paluri, "Learning Spatiotemporal Features with 3D
Convolutional Networks" (C3D), ICCV 2015: 3x3x3 convolutions (stride 1, padding 1) throughout,
a first pool of 1x2x2 that keeps the early temporal signal, then 2x2x2 pools, and a wide FC layer
before the classifier.

Scaled down for ``(N, 3, 8, 32, 32)`` clips (C3D uses 16x112x112 and eight convolutions with
64-512 channels): ``conv1a 32 - pool1 (1,2,2) - conv2a 64 - pool2 (2,2,2) - conv3a 128 -
conv3b 128 - pool3 (2,2,2) - conv4a 256 - global average pool - fc6 256 (ReLU, dropout) -
Linear(classes)``. Unlike the original we put BatchNorm after every convolution so the network
trains from scratch on a few thousand clips; the global average pool (instead of the original
flatten) lets it take any clip length >= 4 frames and any frame size >= 8x8.
Inputs are ``(N, C, T, H, W)``. Initialisation: Kaiming-normal convolutions (fan-out, ReLU),
BatchNorm 1/0, PyTorch's default Linear. ``width`` (default 1) multiplies every convolution's
channels (``width=0.5``: about a quarter of the compute, for CPU budgets).
"""

from __future__ import annotations

import operator
from collections import OrderedDict

import torch
from torch import nn

from trustlab.errors import InputError
from trustlab.models.cnn import Classifier, check_min_size, check_probability
from trustlab.registry import MODELS

__all__ = ["C3DSmall"]


class C3DSmall(Classifier):
    """Small C3D: five 3x3x3 conv-BN-ReLU layers, four pools, ``fc6`` 256, ``classifier``.

    Tran, Bourdev, Fergus, Torresani, Paluri, "Learning Spatiotemporal Features with 3D
    Convolutional Networks", ICCV 2015; scaled down, with BatchNorm and a global average pool (see
    the module docstring for where it differs from C3D).

    Args:
        num_classes: output classes; default 10.
        in_channels: input channels; default 3.
        dropout: dropout after ``fc6``; default 0 (C3D uses 0.5).
        width: multiplies the convolutions' channels; default 1.

    Shapes: input ``(N, in_channels, T, H, W)`` clips in ``[0, 1]`` with ``T >= 4`` and
    ``H, W >= 8``; features ``(N, 256)``; output ``(N, num_classes)`` logits.

    Example:
        >>> model = C3DSmall(num_classes=10, width=0.5)
        >>> model(torch.rand(2, 3, 8, 32, 32)).shape
        torch.Size([2, 10])
    """

    input_ndim = 5

    def __init__(
        self,
        *,
        num_classes: int = 10,
        in_channels: int = 3,
        dropout: float = 0.0,
        width: float = 1.0,
    ):
        super().__init__()
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        plan = (
            ("1a", 32, (1, 2, 2)),
            ("2a", 64, (2, 2, 2)),
            ("3a", 128, None),
            ("3b", 128, (2, 2, 2)),
            ("4a", 256, None),
        )
        c = in_channels
        for tag, channels, pool in plan:
            k = max(1, round(channels * width))
            layers[f"conv{tag}"] = nn.Conv3d(c, k, 3, padding=1, bias=False)
            layers[f"bn{tag}"] = nn.BatchNorm3d(k)
            layers[f"relu{tag}"] = nn.ReLU()
            if pool is not None:
                layers[f"pool{tag[0]}"] = nn.MaxPool3d(pool, pool)
            c = k
        self.body = nn.Sequential(layers)
        self.pool = nn.AdaptiveAvgPool3d(1)
        self.flatten = nn.Flatten(1)
        self.fc6 = nn.Sequential(
            OrderedDict(linear=nn.Linear(c, 256), relu=nn.ReLU(), dropout=nn.Dropout(dropout))
        )
        self.classifier = nn.Linear(256, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv3d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm3d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return self.fc6(self.flatten(self.pool(self.body(x))))


@MODELS.register(
    "c3d-small",
    "small C3D-style 3D CNN (Tran et al. 2015) for (N, 3, 8, 32, 32) clips",
    kind="video",
    paper="Tran, Bourdev, Fergus, Torresani, Paluri. Learning Spatiotemporal Features with 3D "
    "Convolutional Networks. ICCV 2015.",
)
def c3d_small(
    *,
    num_classes: int = 10,
    in_channels: int = 3,
    image_size: tuple[int, int] = (32, 32),
    frames: int = 8,
    dropout: float = 0.0,
    width: float = 1.0,
) -> C3DSmall:
    """:class:`C3DSmall` for clips of ``frames`` (default 8) frames of ``image_size``; needs at
    least 4 frames (two temporal 2x pools) of at least 8x8 (three spatial 2x pools)."""
    try:
        t = operator.index(frames)
    except TypeError:
        t = -1
    if isinstance(frames, bool) or t < 4:
        raise InputError(
            f"model 'c3d-small': frames={frames!r} must be an integer >= 4 (two temporal 2x "
            "max-pools); sample or repeat frames to reach 4."
        )
    check_min_size("c3d-small", image_size, 8, "three spatial 2x2 max-pools")
    p = check_probability("c3d-small", "dropout", dropout)
    if isinstance(width, bool) or not isinstance(width, int | float) or not 0 < width <= 4:
        raise InputError(f"model 'c3d-small': width must be in (0, 4], got {width!r}.")
    return C3DSmall(num_classes=num_classes, in_channels=in_channels, dropout=p, width=width)
