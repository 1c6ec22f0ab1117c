"""Generative models: :mod:`~trustlab.generative.dpgan` (DPGAN, Xie et al. 2018) and
:mod:`~trustlab.generative.inpainting` (GAN inpainting with the iLID and pLID submanifold
alignment regularisers, Li et al. IJCAI 2019; masks in :mod:`~trustlab.generative.masks`).

A DPGAN's discriminator is trained with DP-SGD on one party's real images; its generator is
post-processing, so its samples can be shared at the epsilon the accountant reports.
"""

from __future__ import annotations

from trustlab.generative.dpgan import (
    DPGAN,
    DPGANSettings,
    check_images,
    parse_settings,
    train_dpgan,
)
from trustlab.generative.inpainting import (
    FeatureExtractor,
    Inpainter,
    InpaintSettings,
    ilid,
    plid,
    train_inpainter,
)
from trustlab.generative.masks import make_masks

__all__ = [
    "DPGAN",
    "DPGANSettings",
    "FeatureExtractor",
    "InpaintSettings",
    "Inpainter",
    "check_images",
    "ilid",
    "make_masks",
    "parse_settings",
    "plid",
    "train_dpgan",
    "train_inpainter",
]
