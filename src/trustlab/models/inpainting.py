"""Networks of a GAN inpainting model: :class:`InpaintGenerator` (an encoder-decoder with dilated
convolutions in the middle) and :class:`InpaintDiscriminator` (a global and a local branch).

Iizuka, Simo-Serra, Ishikawa, "Globally and Locally Consistent Image Completion", SIGGRAPH 2017,
scaled to small images: the completion network downsamples twice with strided convolutions,
widens its receptive field with dilated 3x3 convolutions at the quarter resolution, and
upsamples back to the image; the discriminator judges the whole image (global branch) and a
window around the hole (local branch), each ending in a fully connected layer, the two
concatenated into one real/fake logit. Following Yu et al., "Generative Image Inpainting with
Contextual Attention", CVPR 2018, the generator uses ELU activations, no normalisation, and
nearest-neighbour upsampling followed by a convolution instead of transposed convolutions.

Differences from Iizuka et al., for images of 24-64 pixels instead of 256: base width 32
(theirs 64), dilations ``(2, 4)`` at the quarter resolution (theirs 2, 4, 8, 16 on a 64x64 map:
a dilation larger than half the feature map would only see zero padding), a sigmoid output in
``[0, 1]``, and discriminator branches of three (global) and two (local) stride-2 convolutions
with LeakyReLU 0.2 (theirs: five and six, ReLU with BatchNorm). They are not classifiers and
are not in the model registry.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from trustlab.errors import InputError
from trustlab.utils.validate import check_int

__all__ = ["InpaintDiscriminator", "InpaintGenerator", "check_image_size", "local_crops"]


def check_image_size(size: Sequence[int]) -> tuple[int, int]:
    """``(H, W)`` when both are multiples of 4 and at least 16 (two stride-2 stages), else an
    :class:`InputError` saying so."""
    h, w = (int(s) for s in size)
    if h % 4 or w % 4 or min(h, w) < 16:
        raise InputError(
            f"the inpainting networks need images whose sides are multiples of 4 and at least "
            f"16 pixels; got {h}x{w}. Crop or resize them (e.g. to 32x32)."
        )
    return h, w


def _conv(cin: int, cout: int, k: int = 3, stride: int = 1, dilation: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, stride, padding=dilation * (k - 1) // 2, dilation=dilation)


class InpaintGenerator(nn.Module):
    """Completion network: ``(masked image, mask) -> image``; see the module docstring.

    Iizuka et al., SIGGRAPH 2017 (architecture), Yu et al., CVPR 2018 (ELU, resize-convolution).

    Args:
        channels: image channels; default 3.
        width: channels of the first convolution (then 2x and 4x); default 32.
        dilations: dilation of each 3x3 convolution at the quarter resolution; default (2, 4).

    Shapes: input ``(N, channels + 1, H, W)``: the image with its hole zeroed and the mask (1 in
    the hole) as the last channel, ``H`` and ``W`` multiples of 4; output ``(N, channels, H, W)``
    in ``[0, 1]`` (the whole image; :func:`trustlab.generative.inpainting.composite` keeps the
    known pixels).

    Example:
        >>> g = InpaintGenerator(channels=3)
        >>> g(torch.rand(2, 4, 32, 32)).shape
        torch.Size([2, 3, 32, 32])
    """

    def __init__(
        self, channels: int = 3, width: int = 32, dilations: Sequence[int] = (2, 4)
    ) -> None:
        super().__init__()
        c = check_int("channels", channels, 1, 16)
        w = check_int("width", width, 2, 1024)
        self.channels, self.width, self.dilations = c, w, tuple(int(d) for d in dilations)
        act = nn.ELU
        layers: list[nn.Module] = [
            _conv(c + 1, w, 5), act(),
            _conv(w, 2 * w, 3, 2), act(),
            _conv(2 * w, 2 * w), act(),
            _conv(2 * w, 4 * w, 3, 2), act(),
            _conv(4 * w, 4 * w), act(),
        ]  # fmt: skip
        for d in self.dilations:
            layers += [_conv(4 * w, 4 * w, 3, 1, check_int("dilation", d, 1, 64)), act()]
        layers += [
            _conv(4 * w, 4 * w), act(),
            nn.Upsample(scale_factor=2, mode="nearest"), _conv(4 * w, 2 * w), act(),
            _conv(2 * w, 2 * w), act(),
            nn.Upsample(scale_factor=2, mode="nearest"), _conv(2 * w, w), act(),
            _conv(w, max(1, w // 2)), act(),
            _conv(max(1, w // 2), c), nn.Sigmoid(),
        ]  # fmt: skip
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.channels + 1:
            raise InputError(
                f"the generator takes (N, {self.channels + 1}, H, W): the masked image and the "
                f"mask; got {tuple(x.shape)}."
            )
        check_image_size(x.shape[2:])
        return self.net(x)


def local_crops(images: torch.Tensor, masks: torch.Tensor, size: int) -> torch.Tensor:
    """A ``size`` x ``size`` window of each image centred on its hole's bounding box (moved
    inside the image; the image's centre when the mask is empty): ``(N, C, H, W)``, masks
    ``(N, 1, H, W)`` -> ``(N, C, size, size)``. One gather, differentiable in ``images``."""
    n, _, h, w = images.shape
    if size > min(h, w):
        raise InputError(f"a local window of {size} pixels does not fit {h}x{w} images.")
    hole = masks[:, 0] > 0.5
    rows, cols = hole.any(2), hole.any(1)  # (N, H), (N, W)
    dev = images.device

    def centre(line: torch.Tensor, length: int) -> torch.Tensor:
        idx = torch.arange(length, device=dev).expand_as(line)
        first = torch.where(line, idx, length).amin(1)
        last = torch.where(line, idx, -1).amax(1)
        mid = torch.where(line.any(1), (first + last + 1) // 2, length // 2)
        return (mid - size // 2).clamp(0, length - size)

    top, left = centre(rows, h), centre(cols, w)
    offs = torch.arange(size, device=dev)
    r = (top[:, None] + offs)[:, :, None]  # (N, S, 1)
    c = (left[:, None] + offs)[:, None, :]  # (N, 1, S)
    batch = torch.arange(n, device=dev)[:, None, None]
    return images.permute(0, 2, 3, 1)[batch, r, c].permute(0, 3, 1, 2)


def _branch(c: int, w: int, stages: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    cin = c
    for i in range(stages):
        cout = w * 2 ** min(i, 2)
        layers += [_conv(cin, cout, 5, 2), nn.LeakyReLU(0.2)]
        cin = cout
    return nn.Sequential(*layers, nn.Flatten(1))


class InpaintDiscriminator(nn.Module):
    """Global and local context discriminator: one real/fake logit per image.

    Iizuka et al., SIGGRAPH 2017: the global branch sees the whole image, the local branch a
    window of half the image's side around the hole (:func:`local_crops`); each ends in a
    fully connected layer of ``8 * width`` units, the two are concatenated and mapped to a logit.

    Args:
        channels: image channels; default 3.
        image_size: ``(H, W)``, multiples of 4; default (32, 32).
        width: channels of the first convolution of each branch; default 32.

    Shapes: ``forward(images (N, C, H, W), masks (N, 1, H, W)) -> (N,)`` logits.

    Example:
        >>> d = InpaintDiscriminator(3, (32, 32))
        >>> d(torch.rand(2, 3, 32, 32), torch.zeros(2, 1, 32, 32)).shape
        torch.Size([2])
    """

    def __init__(
        self, channels: int = 3, image_size: Sequence[int] = (32, 32), width: int = 32
    ) -> None:
        super().__init__()
        h, w = check_image_size(image_size)
        c = check_int("channels", channels, 1, 16)
        width = check_int("width", width, 2, 1024)
        self.local_size = min(h, w) // 2
        self.global_branch = _branch(c, width, 3)
        self.local_branch = _branch(c, width, 2)
        with torch.no_grad():
            g = self.global_branch(torch.zeros(1, c, h, w)).shape[1]
            loc = self.local_branch(torch.zeros(1, c, self.local_size, self.local_size)).shape[1]
        self.global_fc = nn.Sequential(nn.Linear(g, 8 * width), nn.LeakyReLU(0.2))
        self.local_fc = nn.Sequential(nn.Linear(loc, 8 * width), nn.LeakyReLU(0.2))
        self.out = nn.Linear(16 * width, 1)

    def forward(self, images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        g = self.global_fc(self.global_branch(images))
        loc = self.local_fc(self.local_branch(local_crops(images, masks, self.local_size)))
        return self.out(torch.cat([g, loc], 1)).squeeze(1)
