"""A small DenseNet-BC for 32x32 images (``densenet-small``).

Huang, Liu, van der Maaten & Weinberger, "Densely Connected Convolutional Networks", CVPR 2017.
DenseNet-BC: bottleneck layers (BN-ReLU-conv1x1 to ``4k`` channels, BN-ReLU-conv3x3 to ``k``) and
transitions that compress the channels by ``compression`` (BN-ReLU-conv1x1-avgpool 2x2).

Default: depth 40, growth rate ``k = 12``, compression 0.5, i.e. three dense blocks of
``(40 - 4) / 6 = 6`` bottleneck layers, 24-channel 3x3 stem, ~0.18M parameters. The paper's smallest
BC model is depth 100 (0.8M); depth 40 keeps the same design while staying cheap on a CPU.

Each dense layer names its new-feature path ``residual`` and its (identity) skip ``shortcut``; the
output is ``cat([shortcut(x), residual(x)], dim=1)``, so SGM's hooks on ``residual`` scale only the
gradient through the new features. Initialisation: Kaiming-normal convolutions (fan-out, as the
authors' code), BatchNorm 1/0, Linear bias 0.
"""

from __future__ import annotations

import operator
from collections import OrderedDict

import torch
from torch import nn

from trustlab.errors import InputError
from trustlab.models.cnn import Classifier, check_min_size
from trustlab.registry import MODELS

__all__ = ["DenseLayer", "DenseNet", "Transition"]


class DenseLayer(nn.Module):
    """Bottleneck dense layer of DenseNet-BC: ``cat([shortcut(x), residual(x)], 1)``.

    Huang, Liu, van der Maaten, Weinberger, "Densely Connected Convolutional Networks", CVPR 2017.
    ``residual`` adds ``growth`` channels through
    BN-ReLU-conv1x1(``bottleneck * growth``)-BN-ReLU-conv3x3(``growth``); ``shortcut`` is the
    identity.

    Args:
        in_channels: input channels.
        growth: new channels ``k``.
        bottleneck: width of the 1x1 bottleneck in multiples of ``growth``; default 4 (the paper's
            ``4k``).

    Shapes: ``(N, in_channels, H, W)`` -> ``(N, in_channels + growth, H, W)``.

    Example:
        >>> layer = DenseLayer(24, growth=12)
        >>> layer(torch.rand(2, 24, 8, 8)).shape
        torch.Size([2, 36, 8, 8])
    """

    def __init__(self, in_channels: int, growth: int, bottleneck: int = 4) -> None:
        super().__init__()
        inner = bottleneck * growth
        self.residual = nn.Sequential(
            OrderedDict(
                bn1=nn.BatchNorm2d(in_channels),
                relu1=nn.ReLU(),
                conv1=nn.Conv2d(in_channels, inner, 1, bias=False),
                bn2=nn.BatchNorm2d(inner),
                relu2=nn.ReLU(),
                conv2=nn.Conv2d(inner, growth, 3, padding=1, bias=False),
            )
        )
        self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.shortcut(x), self.residual(x)], dim=1)


class Transition(nn.Sequential):
    """DenseNet transition BN-ReLU-conv1x1-avgpool(2): halves the resolution, compresses channels.

    Huang, Liu, van der Maaten, Weinberger, "Densely Connected Convolutional Networks", CVPR 2017.

    Args:
        in_channels: input channels.
        out_channels: output channels (``int(in_channels * compression)`` in :class:`DenseNet`).

    Shapes: ``(N, in_channels, H, W)`` -> ``(N, out_channels, H // 2, W // 2)``.

    Example:
        >>> trans = Transition(96, 48)
        >>> trans(torch.rand(2, 96, 32, 32)).shape
        torch.Size([2, 48, 16, 16])
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            OrderedDict(
                bn=nn.BatchNorm2d(in_channels),
                relu=nn.ReLU(),
                conv=nn.Conv2d(in_channels, out_channels, 1, bias=False),
                pool=nn.AvgPool2d(2),
            )
        )


class DenseNet(Classifier):
    """DenseNet-BC with three dense blocks (``block1..3``, ``trans1..2``) for small images.

    Huang, Liu, van der Maaten, Weinberger, "Densely Connected Convolutional Networks", CVPR 2017.
    Stem: a 3x3 convolution to ``2 * growth_rate`` channels; then ``(depth - 4) / 6`` bottleneck
    layers per block, transitions compressing by ``compression``, final BN-ReLU, global average pool
    and ``Linear(classes)``. The paper's smallest BC model is depth 100; trustlab's default depth 40
    keeps the same design while staying cheap on a CPU (see the module docstring).

    Args:
        depth: total depth, ``(depth - 4) % 6 == 0``; default 40 (6 layers per block).
        growth_rate: ``k``; default 12.
        compression: transition compression ``theta`` in ``(0, 1]``; default 0.5.
        num_classes: output classes; default 10.
        in_channels: input channels; default 3.

    Shapes: input ``(N, in_channels, H, W)`` floats in ``[0, 1]``, at least 4x4; output
    ``(N, num_classes)`` logits.

    Example:
        >>> model = DenseNet(depth=40, growth_rate=12, compression=0.5, num_classes=10)
        >>> model(torch.rand(2, 3, 32, 32)).shape
        torch.Size([2, 10])
    """

    def __init__(
        self,
        depth: int = 40,
        growth_rate: int = 12,
        compression: float = 0.5,
        *,
        num_classes: int = 10,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        n = (depth - 4) // 6
        c = 2 * growth_rate
        self.stem = nn.Sequential(
            OrderedDict(conv=nn.Conv2d(in_channels, c, 3, padding=1, bias=False))
        )
        for b in (1, 2, 3):
            layers = [DenseLayer(c + i * growth_rate, growth_rate) for i in range(n)]
            self.add_module(f"block{b}", nn.Sequential(*layers))
            c += n * growth_rate
            if b < 3:
                out = max(1, int(c * compression))
                self.add_module(f"trans{b}", Transition(c, out))
                c = out
        self.final = nn.Sequential(OrderedDict(bn=nn.BatchNorm2d(c), relu=nn.ReLU()))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)
        self.classifier = nn.Linear(c, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        x = self.trans1(self.block1(self.stem(x)))
        x = self.block3(self.trans2(self.block2(x)))
        return self.flatten(self.pool(self.final(x)))


@MODELS.register(
    "densenet-small",
    "DenseNet-BC depth 40, growth 12, compression 0.5 (Huang et al. 2017), 0.18M params",
    kind="image",
    paper="Huang, Liu, van der Maaten, Weinberger. Densely Connected Convolutional Networks. "
    "CVPR 2017.",
)
def densenet_small(
    *,
    num_classes: int = 10,
    in_channels: int = 3,
    image_size: tuple[int, int] = (32, 32),
    depth: int = 40,
    growth_rate: int = 12,
    compression: float = 0.5,
) -> DenseNet:
    """:class:`DenseNet` (DenseNet-BC, defaults depth 40, growth 12, compression 0.5). Needs images
    of at least 4x4 (two 2x2 average pools)."""
    check_min_size("densenet-small", image_size, 4, "two 2x2 average-pooling transitions")
    try:
        d, k = operator.index(depth), operator.index(growth_rate)
    except TypeError:
        d, k = -1, -1
    if d < 10 or (d - 4) % 6 != 0:
        raise InputError(
            f"model 'densenet-small': depth={depth!r} must be an integer >= 10 with "
            "(depth - 4) divisible by 6, e.g. 40 or 100."
        )
    if k < 1:
        raise InputError(
            f"model 'densenet-small': growth_rate={growth_rate!r} must be a positive integer."
        )
    if not isinstance(compression, int | float) or not 0.0 < float(compression) <= 1.0:
        raise InputError(
            f"model 'densenet-small': compression={compression!r} must be a number in (0, 1]."
        )
    return DenseNet(d, k, float(compression), num_classes=num_classes, in_channels=in_channels)
