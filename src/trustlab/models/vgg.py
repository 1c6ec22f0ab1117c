"""CIFAR-style VGG with BatchNorm: ``vgg11`` (and ``vgg13``, ``vgg16``, ``vgg19``).

Simonyan & Zisserman, "Very Deep Convolutional Networks for Large-Scale Image Recognition",
ICLR 2015, configurations A/B/D/E with BatchNorm after every 3x3 convolution (Ioffe & Szegedy
2015). CIFAR form (as in the widely used https://github.com/kuangliu/pytorch-cifar): five
conv stages each closed by a 2x2 max-pool, then a single ``Linear(512, classes)``; no 4096-wide
FC layers. For inputs larger than 32x32 the 512-channel map left after the five pools is
averaged by an adaptive pool (for 32x32 it is already 1x1, so the CIFAR network is unchanged).
VGG19 is the usual transfer target of the SGM paper (Wu et al., ICLR 2020).

Layers are named ``body.conv{stage}_{i}``, ``body.bn{stage}_{i}``, ``body.relu{stage}_{i}``,
``body.pool{stage}``. Initialisation: Kaiming-normal convolutions (fan-out, ReLU) with zero bias,
BatchNorm 1/0, PyTorch's default Linear.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence

import torch
from torch import nn

from trustlab.errors import InputError
from trustlab.models.cnn import Classifier, check_min_size
from trustlab.registry import MODELS

__all__ = ["CONFIGS", "VGG"]

CONFIGS: dict[str, tuple[tuple[int, ...], ...]] = {
    "vgg11": ((64,), (128,), (256, 256), (512, 512), (512, 512)),
    "vgg13": ((64, 64), (128, 128), (256, 256), (512, 512), (512, 512)),
    "vgg16": ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512)),
    "vgg19": (
        (64, 64),
        (128, 128),
        (256, 256, 256, 256),
        (512, 512, 512, 512),
        (512, 512, 512, 512),
    ),
}


class VGG(Classifier):
    """VGG-BN conv stack (``body``), adaptive average pool to 1x1, ``Linear(512, classes)``.

    Simonyan & Zisserman, "Very Deep Convolutional Networks for Large-Scale Image Recognition",
    ICLR 2015, with BatchNorm after every 3x3 convolution. CIFAR form: five conv stages each closed
    by a 2x2 max-pool and a single Linear; no 4096-wide FC layers (see the module docstring).

    Args:
        stages: channel widths of the convolutions of each stage, e.g. ``CONFIGS["vgg11"]``.
        num_classes: output classes; default 10.
        in_channels: input channels; default 3.

    Shapes: input ``(N, in_channels, H, W)`` floats in ``[0, 1]``, at least 32x32; features
    ``(N, stages[-1][-1])``; output ``(N, num_classes)`` logits.

    Example:
        >>> model = VGG(CONFIGS["vgg11"], num_classes=10, in_channels=3)
        >>> model(torch.rand(2, 3, 32, 32)).shape
        torch.Size([2, 10])
    """

    def __init__(
        self, stages: Sequence[Sequence[int]], *, num_classes: int = 10, in_channels: int = 3
    ) -> None:
        super().__init__()
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        c = in_channels
        for s, widths in enumerate(stages, 1):
            for i, w in enumerate(widths, 1):
                layers[f"conv{s}_{i}"] = nn.Conv2d(c, w, 3, padding=1)
                layers[f"bn{s}_{i}"] = nn.BatchNorm2d(w)
                layers[f"relu{s}_{i}"] = nn.ReLU()
                c = w
            layers[f"pool{s}"] = nn.MaxPool2d(2, 2)
        self.body = nn.Sequential(layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)
        self.classifier = nn.Linear(c, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return self.flatten(self.pool(self.body(x)))


def _register(name: str, depth: int) -> Callable[..., VGG]:
    stages = CONFIGS[name]

    def factory(
        *,
        num_classes: int = 10,
        in_channels: int = 3,
        image_size: tuple[int, int] = (32, 32),
        width: float = 1.0,
    ) -> VGG:
        check_min_size(name, image_size, 32, "five 2x2 max-pools")
        if not 0 < width <= 4:
            raise InputError(f"{name}: width must be in (0, 4], got {width}.")
        scaled = [[max(1, round(c * width)) for c in stage] for stage in stages]
        return VGG(scaled, num_classes=num_classes, in_channels=in_channels)

    factory.__name__ = factory.__qualname__ = name
    factory.__doc__ = (
        f"VGG-{depth} with BatchNorm, CIFAR-style (conv stack, Linear 512 -> classes). "
        "Needs images of at least 32x32 (five 2x2 max-pools). ``width`` multiplies every "
        "convolution's channels (default 1, the paper's; 0.25 is a CPU-sized VGG)."
    )
    role = "the SGM paper's transfer target" if name == "vgg19" else "CIFAR-style"
    description = f"VGG-{depth} with BatchNorm ({role}: conv stack, Linear 512 -> classes)"
    MODELS.register(
        name,
        description,
        kind="image",
        paper="Simonyan, Zisserman. Very Deep Convolutional Networks for Large-Scale Image "
        "Recognition. ICLR 2015.",
    )(factory)
    return factory


vgg11 = _register("vgg11", 11)
vgg13 = _register("vgg13", 13)
vgg16 = _register("vgg16", 16)
vgg19 = _register("vgg19", 19)
