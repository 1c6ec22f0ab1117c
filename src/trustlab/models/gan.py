"""Small DCGAN-style networks for the generative methods: :class:`Generator` and
:class:`Discriminator`.

Radford, Metz, Chintala, "Unsupervised Representation Learning with Deep Convolutional Generative
Adversarial Networks", ICLR 2016: a linear layer to a ``base x base`` feature map, then two
stride-2 transposed convolutions (BatchNorm and ReLU between them) up to the image, sigmoid
output in ``[0, 1]``; the discriminator mirrors it with stride-2 convolutions and LeakyReLU 0.2.
The discriminator has **no BatchNorm** (batch statistics mix the samples of a batch, so
per-sample gradients, which DP-SGD needs, would not exist): its second block uses GroupNorm,
which Opacus supports. The generator only ever sees its own noise, so its BatchNorm costs no
privacy.

Supported image shapes (:data:`SHAPES`): ``(1, 16, 16)`` (``digits``), ``(1, 28, 28)`` (MNIST,
Fashion-MNIST) and ``(3, 32, 32)`` (CIFAR-10, SVHN). They are not classifiers and are not in the
model registry.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from trustlab.errors import InputError
from trustlab.utils.validate import check_int

__all__ = ["SHAPES", "Discriminator", "Generator", "check_shape"]

#: the image shapes ``(C, H, W)`` the networks are built for, and the side of the generator's
#: first feature map (the image is 4x that)
SHAPES: dict[tuple[int, int, int], int] = {(1, 16, 16): 4, (1, 28, 28): 7, (3, 32, 32): 8}


def check_shape(shape: Sequence[int]) -> tuple[int, int, int]:
    """``shape`` as a ``(C, H, W)`` tuple of :data:`SHAPES`, else :class:`InputError` naming
    the supported ones."""
    try:
        key = tuple(int(s) for s in shape)
    except (TypeError, ValueError):
        key = ()
    if key not in SHAPES:
        names = ", ".join(str(s) for s in SHAPES)
        raise InputError(
            f"the GAN networks support image shapes (C, H, W) {names}; got {tuple(shape)!r}. "
            "Resize the images to one of them (e.g. 28x28 grey or 32x32 colour)."
        )
    return key  # type: ignore[return-value]


class Generator(nn.Module):
    """DCGAN generator: latent codes ``(N, latent_dim)`` -> images ``(N, C, H, W)`` in [0, 1].

    Radford et al., ICLR 2016 (DCGAN), scaled down: Linear to ``2w x b x b``, BatchNorm, ReLU;
    ConvTranspose 4/2/1 to ``w x 2b x 2b``, BatchNorm, ReLU; ConvTranspose 4/2/1 to
    ``C x 4b x 4b``; sigmoid (``b`` = 4, 7 or 8 for 16, 28 or 32 pixels).

    Args:
        latent_dim: size of the latent code ``z ~ N(0, I)``; default 64.
        shape: the image shape ``(C, H, W)``, one of :data:`SHAPES`; default ``(1, 28, 28)``.
        width: channels of the last hidden feature map ``w`` (the first has ``2w``); default 32.

    Shapes: input ``(N, latent_dim)``; output ``(N, C, H, W)`` in ``[0, 1]``.

    Example:
        >>> Generator(latent_dim=16, shape=(1, 16, 16))(torch.randn(2, 16)).shape
        torch.Size([2, 1, 16, 16])
    """

    def __init__(
        self, latent_dim: int = 64, shape: Sequence[int] = (1, 28, 28), width: int = 32
    ) -> None:
        super().__init__()
        self.shape = check_shape(shape)
        self.latent_dim = check_int("latent_dim", latent_dim, 1, 4096)
        self.width = check_int("width", width, 1, 1024)
        c, base, w = self.shape[0], SHAPES[self.shape], self.width
        self.base = base
        self.project = nn.Sequential(
            nn.Linear(self.latent_dim, 2 * w * base * base, bias=False),
            nn.BatchNorm1d(2 * w * base * base),
            nn.ReLU(),
        )
        self.up = nn.Sequential(
            nn.ConvTranspose2d(2 * w, w, 4, 2, 1, bias=False),
            nn.BatchNorm2d(w),
            nn.ReLU(),
            nn.ConvTranspose2d(w, c, 4, 2, 1),
            nn.Sigmoid(),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if z.dim() != 2 or z.shape[1] != self.latent_dim:
            raise InputError(
                f"the generator takes latent codes (N, {self.latent_dim}); got a tensor of "
                f"shape {tuple(z.shape)}."
            )
        h = self.project(z).view(z.shape[0], 2 * self.width, self.base, self.base)
        return self.up(h)


class Discriminator(nn.Module):
    """DCGAN discriminator without BatchNorm: images ``(N, C, H, W)`` -> one logit each ``(N,)``.

    Radford et al., ICLR 2016 (DCGAN), with GroupNorm instead of BatchNorm so that Opacus can
    compute per-sample gradients (DP-SGD, Abadi et al. CCS 2016): Conv 4/2/1 to ``w`` channels,
    LeakyReLU 0.2; Conv 4/2/1 to ``2w``, GroupNorm (8 groups), LeakyReLU 0.2; Linear to one logit.

    Args:
        shape: the image shape ``(C, H, W)``, one of :data:`SHAPES`; default ``(1, 28, 28)``.
        width: channels of the first convolution ``w`` (the second has ``2w``); default 32.

    Shapes: input ``(N, C, H, W)`` in ``[0, 1]``; output ``(N,)`` logits (real > 0 > fake).

    Example:
        >>> Discriminator(shape=(3, 32, 32))(torch.rand(2, 3, 32, 32)).shape
        torch.Size([2])
    """

    def __init__(self, shape: Sequence[int] = (1, 28, 28), width: int = 32) -> None:
        super().__init__()
        self.shape = check_shape(shape)
        self.width = check_int("width", width, 1, 1024)
        c, base, w = self.shape[0], SHAPES[self.shape], self.width
        groups = 8 if (2 * w) % 8 == 0 else 1
        self.features = nn.Sequential(
            nn.Conv2d(c, w, 4, 2, 1),
            nn.LeakyReLU(0.2),
            nn.Conv2d(w, 2 * w, 4, 2, 1),
            nn.GroupNorm(groups, 2 * w),
            nn.LeakyReLU(0.2),
            nn.Flatten(),
        )
        self.head = nn.Linear(2 * w * base * base, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or tuple(x.shape[1:]) != self.shape:
            raise InputError(
                f"the discriminator takes images (N, {', '.join(map(str, self.shape))}); got a "
                f"tensor of shape {tuple(x.shape)}."
            )
        return self.head(self.features(x)).squeeze(1)
