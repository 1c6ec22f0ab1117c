"""CIFAR-style residual networks: ``resnet8``, ``resnet20``, ``resnet18`` (optionally pre-act),
``wrn-16-4``.

Every block exposes its residual branch as the sub-module ``residual`` and its skip path as
``shortcut`` (``nn.Identity`` when there is none):

* post-activation :class:`BasicBlock` (He et al., CVPR 2016):
  ``out = act(residual(x) + shortcut(x))``;
* pre-activation :class:`PreActBlock` (He et al., ECCV 2016; Zagoruyko & Komodakis, BMVC 2016):
  ``h = preact(x)`` (BatchNorm + ReLU), then ``out = residual(h) + shortcut(x)`` for an identity
  shortcut and ``out = residual(h) + shortcut(h)`` for a projection, which is where the official
  pre-activation and wide-ResNet code apply the projection. ``preact`` feeds the branch only
  (identity blocks) or both paths (projection blocks), so scaling the gradient that leaves
  ``residual`` scales exactly the branch's share of the input gradient.

The Skip Gradient Method puts full backward hooks on the ``residual`` modules
(:func:`trustlab.models.wrappers.residual_branches`). Initialisation: Kaiming-normal convolutions
(fan-out, ReLU), BatchNorm weight 1 and bias 0, PyTorch's default for the final Linear.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from trustlab.errors import InputError
from trustlab.models.cnn import Classifier, check_min_size, check_probability
from trustlab.registry import MODELS

__all__ = ["BasicBlock", "PadShortcut", "PreActBlock", "ResNet"]


def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)


class PadShortcut(nn.Module):
    """Option A shortcut of He et al., used for their CIFAR ResNets: parameter-free.

    He, Zhang, Ren, Sun, "Deep Residual Learning for Image Recognition", CVPR 2016. Subsamples
    spatially by ``stride`` and zero-pads the new channels (split evenly before and after the
    existing ones).

    Args:
        in_channels: input channels.
        out_channels: output channels (``>= in_channels``).
        stride: spatial subsampling step.

    Shapes: ``(N, in_channels, H, W)`` -> ``(N, out_channels, ceil(H / stride), ceil(W / stride))``.

    Example:
        >>> shortcut = PadShortcut(16, 32, stride=2)
        >>> shortcut(torch.rand(2, 16, 32, 32)).shape
        torch.Size([2, 32, 16, 16])
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        extra = out_channels - in_channels
        self.pad_before, self.pad_after = extra // 2, extra - extra // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, self.pad_before, self.pad_after))

    def extra_repr(self) -> str:
        return f"stride={self.stride}, pad=({self.pad_before}, {self.pad_after})"


class BasicBlock(nn.Module):
    """Post-activation basic block: ``act(residual(x) + shortcut(x))``.

    He, Zhang, Ren, Sun, "Deep Residual Learning for Image Recognition", CVPR 2016.
    ``residual`` = conv3x3(stride) - BN - ReLU - conv3x3 - BN. When the shape changes the shortcut
    is option ``"A"`` (:class:`PadShortcut`) or ``"B"`` (1x1 conv + BN projection); otherwise
    identity.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        stride: stride of the first convolution (and of the shortcut); default 1.
        shortcut: ``"A"`` or ``"B"``; default ``"B"`` (the paper's CIFAR networks use ``"A"``,
            which ``resnet8`` / ``resnet20`` pass).

    Shapes: ``(N, in_channels, H, W)`` -> ``(N, out_channels, ceil(H / stride), ceil(W / stride))``.

    Example:
        >>> block = BasicBlock(16, 32, stride=2, shortcut="A")
        >>> block(torch.rand(2, 16, 32, 32)).shape
        torch.Size([2, 32, 16, 16])
    """

    def __init__(
        self, in_channels: int, out_channels: int, stride: int = 1, shortcut: str = "B"
    ) -> None:
        super().__init__()
        self.residual = nn.Sequential(
            OrderedDict(
                conv1=_conv3x3(in_channels, out_channels, stride),
                bn1=nn.BatchNorm2d(out_channels),
                relu1=nn.ReLU(),
                conv2=_conv3x3(out_channels, out_channels),
                bn2=nn.BatchNorm2d(out_channels),
            )
        )
        self.shortcut: nn.Module
        if stride == 1 and in_channels == out_channels:
            self.shortcut = nn.Identity()
        elif shortcut == "A":
            self.shortcut = PadShortcut(in_channels, out_channels, stride)
        else:
            self.shortcut = nn.Sequential(
                OrderedDict(
                    conv=nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                    bn=nn.BatchNorm2d(out_channels),
                )
            )
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.residual(x) + self.shortcut(x))


class PreActBlock(nn.Module):
    """Pre-activation basic block (the wide-ResNet block with ``dropout``).

    He, Zhang, Ren, Sun, "Identity Mappings in Deep Residual Networks", ECCV 2016; Zagoruyko &
    Komodakis, "Wide Residual Networks", BMVC 2016.
    ``preact`` = BN - ReLU; ``residual`` = conv3x3(stride) - BN - ReLU - dropout - conv3x3;
    ``shortcut`` = identity, or a 1x1 convolution applied to the pre-activated input when the
    shape changes. ``out = residual(preact(x)) + shortcut(x or preact(x))``.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        stride: stride of the first convolution (and of the projection); default 1.
        dropout: dropout between the two convolutions; default 0 (WRN also uses 0.3).

    Shapes: ``(N, in_channels, H, W)`` -> ``(N, out_channels, ceil(H / stride), ceil(W / stride))``.

    Example:
        >>> block = PreActBlock(16, 64, stride=1, dropout=0.0)
        >>> block(torch.rand(2, 16, 32, 32)).shape
        torch.Size([2, 64, 32, 32])
    """

    def __init__(
        self, in_channels: int, out_channels: int, stride: int = 1, dropout: float = 0.0
    ) -> None:
        super().__init__()
        self.preact = nn.Sequential(OrderedDict(bn=nn.BatchNorm2d(in_channels), relu=nn.ReLU()))
        self.residual = nn.Sequential(
            OrderedDict(
                conv1=_conv3x3(in_channels, out_channels, stride),
                bn2=nn.BatchNorm2d(out_channels),
                relu2=nn.ReLU(),
                dropout=nn.Dropout(dropout),
                conv2=_conv3x3(out_channels, out_channels),
            )
        )
        self.projects = stride != 1 or in_channels != out_channels
        self.shortcut: nn.Module = (
            nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)
            if self.projects
            else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.preact(x)
        return self.residual(h) + self.shortcut(h if self.projects else x)


class ResNet(Classifier):
    """A CIFAR-style ResNet: 3x3 stem (no max-pool), stages ``layer1..layerK``, global average pool.

    He, Zhang, Ren, Sun, "Deep Residual Learning for Image Recognition", CVPR 2016
    (post-activation); He et al., "Identity Mappings in Deep Residual Networks", ECCV 2016
    (``preact=True``); Zagoruyko & Komodakis, "Wide Residual Networks", BMVC 2016 (``wrn-16-4``:
    pre-activation, ``dropout``).
    The registered ``resnet8``, ``resnet20``, ``resnet18`` and ``wrn-16-4`` are instances.

    Args:
        widths: channels of each stage; stage ``i > 0`` starts with stride 2.
        depths: blocks per stage.
        num_classes: output classes; default 10.
        in_channels: input channels; default 3.
        stem_width: channels of the stem convolution; default None (``widths[0]``).
        preact: pre-activation blocks (:class:`PreActBlock`, final BN-ReLU before pooling) instead
            of post-activation :class:`BasicBlock` (stem conv-BN-ReLU); default False.
        shortcut: ``"A"`` (zero-padding) or ``"B"`` (projection, default) for post-activation
            blocks; pre-activation blocks always project with a 1x1 convolution. The paper's CIFAR
            ResNets (``resnet8``, ``resnet20``) use ``"A"``.
        dropout: dropout between the two convolutions of pre-activation blocks (wide ResNets);
            default 0.

    Shapes: input ``(N, in_channels, H, W)`` floats in ``[0, 1]``; features ``(N, widths[-1])``;
    output ``(N, num_classes)`` logits.

    Example:
        >>> model = ResNet((16, 32, 64), (3, 3, 3), num_classes=10, shortcut="A")  # ResNet-20
        >>> model(torch.rand(2, 3, 32, 32)).shape
        torch.Size([2, 10])
    """

    def __init__(
        self,
        widths: Sequence[int],
        depths: Sequence[int],
        *,
        num_classes: int = 10,
        in_channels: int = 3,
        stem_width: int | None = None,
        preact: bool = False,
        shortcut: str = "B",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        c = stem_width or widths[0]
        if preact:
            self.stem = nn.Sequential(OrderedDict(conv=_conv3x3(in_channels, c)))
        else:
            self.stem = nn.Sequential(
                OrderedDict(conv=_conv3x3(in_channels, c), bn=nn.BatchNorm2d(c), relu=nn.ReLU())
            )
        self.num_stages = len(widths)
        for i, (width, depth) in enumerate(zip(widths, depths, strict=True)):
            blocks: list[nn.Module] = []
            for j in range(depth):
                stride = 2 if i > 0 and j == 0 else 1
                if preact:
                    blocks.append(PreActBlock(c, width, stride, dropout))
                else:
                    blocks.append(BasicBlock(c, width, stride, shortcut))
                c = width
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
        self.final: nn.Module = (
            nn.Sequential(OrderedDict(bn=nn.BatchNorm2d(c), relu=nn.ReLU()))
            if preact
            else nn.Identity()
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)
        self.classifier = nn.Linear(c, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        x = self.stem(x)
        for i in range(1, self.num_stages + 1):
            x = getattr(self, f"layer{i}")(x)
        return self.flatten(self.pool(self.final(x)))


@MODELS.register(
    "resnet8",
    "ResNet-8 for CIFAR (He et al. 2016, 6n+2 with n=1), 16/32/64 channels, 75K",
    kind="image",
    paper="He, Zhang, Ren, Sun. Deep Residual Learning for Image Recognition. CVPR 2016.",
)
def resnet8(
    *, num_classes: int = 10, in_channels: int = 3, image_size: tuple[int, int] = (32, 32)
) -> ResNet:
    """ResNet-8: the smallest of He et al.'s CIFAR family ResNet-(6n+2) (CVPR 2016, section
    4.2), n = 1: 3 stages x 1 basic block, 16/32/64 channels, option A shortcuts, ~75K
    parameters, about a third of ResNet-20's compute. The residual model for experiments that
    must train several (adversarially trained) networks on a CPU in minutes."""
    check_min_size("resnet8", image_size, 4, "two stride-2 stages")
    return ResNet(
        (16, 32, 64), (1, 1, 1), num_classes=num_classes, in_channels=in_channels, shortcut="A"
    )


@MODELS.register(
    "resnet20",
    "ResNet-20 for CIFAR (He et al. 2016), 16/32/64 channels, 0.27M",
    kind="image",
    paper="He, Zhang, Ren, Sun. Deep Residual Learning for Image Recognition. CVPR 2016.",
)
def resnet20(
    *, num_classes: int = 10, in_channels: int = 3, image_size: tuple[int, int] = (32, 32)
) -> ResNet:
    """ResNet-20 of He et al. (CVPR 2016, section 4.2): 3 stages x 3 basic blocks, 16/32/64
    channels, option A shortcuts (identity with zero-padding for the extra channels, as the paper
    uses on CIFAR-10), ~0.27M parameters. Needs images of at least 4x4."""
    check_min_size("resnet20", image_size, 4, "two stride-2 stages")
    return ResNet(
        (16, 32, 64), (3, 3, 3), num_classes=num_classes, in_channels=in_channels, shortcut="A"
    )


@MODELS.register(
    "resnet18",
    "ResNet-18, CIFAR-style (3x3 stem, no max-pool), 11.2M params; preact=True for PreAct",
    kind="image",
    paper="He, Zhang, Ren, Sun. Deep Residual Learning for Image Recognition. CVPR 2016 "
    "(preact=True: He et al. Identity Mappings in Deep Residual Networks. ECCV 2016).",
)
def resnet18(
    *,
    num_classes: int = 10,
    in_channels: int = 3,
    image_size: tuple[int, int] = (32, 32),
    preact: bool = False,
) -> ResNet:
    """ResNet-18 (He et al., CVPR 2016) in its CIFAR form: 3x3 stem without max-pool, 64/128/256/
    512 channels, [2, 2, 2, 2] basic blocks, projection (option B) shortcuts, ~11.17M parameters.
    ``preact=True`` (default False) uses pre-activation blocks (He et al., ECCV 2016) with a final
    BN-ReLU. Needs images of at least 8x8."""
    check_min_size("resnet18", image_size, 8, "three stride-2 stages")
    if not isinstance(preact, bool):
        raise InputError(f"model 'resnet18': preact={preact!r} must be True or False.")
    return ResNet(
        (64, 128, 256, 512),
        (2, 2, 2, 2),
        num_classes=num_classes,
        in_channels=in_channels,
        preact=preact,
        shortcut="B",
    )


@MODELS.register(
    "wrn-16-4",
    "Wide ResNet 16-4 (Zagoruyko & Komodakis 2016), pre-activation, 2.7M params",
    kind="image",
    paper="Zagoruyko, Komodakis. Wide Residual Networks. BMVC 2016.",
)
def wrn_16_4(
    *,
    num_classes: int = 10,
    in_channels: int = 3,
    image_size: tuple[int, int] = (32, 32),
    dropout: float = 0.0,
) -> ResNet:
    """WRN-16-4 (Zagoruyko & Komodakis, BMVC 2016): 16-channel stem, 3 stages of 2 pre-activation
    blocks with 64/128/256 channels, dropout between the convolutions (default 0; the paper also
    uses 0.3), final BN-ReLU, ~2.75M parameters. Needs images of at least 4x4."""
    check_min_size("wrn-16-4", image_size, 4, "two stride-2 stages")
    p = check_probability("wrn-16-4", "dropout", dropout)
    return ResNet(
        (64, 128, 256),
        (2, 2, 2),
        num_classes=num_classes,
        in_channels=in_channels,
        stem_width=16,
        preact=True,
        dropout=p,
    )
