"""Detectors by name: :func:`make_detector` reads :data:`trustlab.registry.DETECTORS`."""

from __future__ import annotations

from typing import Any

from torch import nn

from trustlab.data.datasets import ArrayDataset
from trustlab.defenses.detection.base import FeatureDetector
from trustlab.errors import InputError
from trustlab.registry import DETECTORS
from trustlab.utils.modules import device_of

__all__ = ["make_detector"]


def make_detector(
    name: str,
    model: nn.Module,
    *,
    train: ArrayDataset | None = None,
    classifier: str = "lr",
    seed: int = 0,
) -> FeatureDetector:
    """The detector registered as ``name`` (``lid``, ``kd-bu``, ``deep-features``) on ``model``.

    A detector whose card takes the training split (``kd-bu``: its inputs ``train_x``,
    ``train_y``; meta ``needs_train``) fits its densities on ``train`` (an
    :class:`~trustlab.data.ArrayDataset`, its inputs moved to the model's device); without it an
    :class:`InputError`. An unknown name is an :class:`InputError` listing the registered ones.
    """
    card = DETECTORS.get(name)
    extra = card.inputs[1:]
    args: list[Any] = []
    if extra:
        if train is None:
            raise InputError(
                f"detector {card.name!r} fits on the training split: pass train= (the "
                "ArrayDataset the model was trained on)."
            )
        dev = device_of(model)
        given = {"train_x": train.x.to(dev), "train_y": train.y}
        args = [given[i] for i in extra]
    return card.build(model, *args, classifier=classifier, seed=seed)
