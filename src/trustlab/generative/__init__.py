"""Generative models with privacy: :mod:`~trustlab.generative.dpgan` (DPGAN, Xie et al. 2018).

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

__all__ = ["DPGAN", "DPGANSettings", "check_images", "parse_settings", "train_dpgan"]
