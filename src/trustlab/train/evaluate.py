"""Inference over a dataset: logits, accuracy and loss, batched, in eval mode, without gradients."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from trustlab.data.datasets import ArrayDataset, as_array_dataset
from trustlab.data.loader import iterate_batches
from trustlab.metrics import accuracy
from trustlab.utils.device import resolve_device
from trustlab.utils.modules import device_of, eval_mode


@torch.no_grad()
def predict_logits(
    model: nn.Module,
    data: Dataset | ArrayDataset,
    batch_size: int = 512,
    device: str | torch.device | None = None,
) -> torch.Tensor:
    """Logits ``(N, K)`` of ``model`` on every sample of ``data`` (on CPU), in eval mode.

    The model's train/eval mode is restored on exit.
    """
    ds = data if isinstance(data, ArrayDataset) else as_array_dataset(data)
    dev = resolve_device(device) if device is not None else device_of(model)
    with eval_mode(model):
        out = [model(x).float().cpu() for x, _ in iterate_batches(ds, batch_size, device=dev)]
    return torch.cat(out)


def evaluate(
    model: nn.Module,
    data: Dataset | ArrayDataset,
    batch_size: int = 512,
    device: str | torch.device | None = None,
) -> dict[str, float]:
    """``{"accuracy": ..., "loss": ...}`` (cross-entropy) of ``model`` on ``data``."""
    ds = data if isinstance(data, ArrayDataset) else as_array_dataset(data)
    logits = predict_logits(model, ds, batch_size, device)
    return {
        "accuracy": accuracy(logits, ds.y),
        "loss": float(F.cross_entropy(logits, ds.y)),
    }
