"""Small helpers over ``torch.nn.Module`` that every layer shares: where a model lives, and
scoped changes of its mode that are undone on exit.

- :func:`device_of`: the device of a model's first parameter (CPU for a parameter-less module);
- :func:`eval_mode`: eval mode inside, the previous train/eval mode restored on exit;
- :func:`train_mode`: training mode inside (e.g. a repair that fine-tunes), restored likewise;
- :func:`frozen`: eval mode and no parameter gradients inside (what attacks and inspections
  need: BatchNorm uses its running statistics and no gradient reaches the weights), both
  restored on exit.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

__all__ = ["device_of", "eval_mode", "frozen", "train_mode"]


def device_of(model: nn.Module) -> torch.device:
    """The device of ``model``'s first parameter; CPU when it has none."""
    p = next(iter(model.parameters()), None)
    return p.device if p is not None else torch.device("cpu")


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode inside (parameter gradients untouched); the previous mode restored on exit."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


@contextlib.contextmanager
def train_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Training mode inside; the previous mode restored on exit, also after an error."""
    was_training = model.training
    model.train()
    try:
        yield model
    finally:
        model.train(was_training)


@contextlib.contextmanager
def frozen(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode and no parameter gradients inside; the previous state is restored on exit."""
    was_training = model.training
    flags = [(p, p.requires_grad) for p in model.parameters()]
    model.eval()
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield model
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        model.train(was_training)
