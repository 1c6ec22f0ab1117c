"""Classification metrics as pure functions of logits (or predictions) and labels."""

from __future__ import annotations

import torch


def _predictions(scores: torch.Tensor) -> torch.Tensor:
    return scores.argmax(dim=1) if scores.dim() == 2 else scores.long()


def num_correct(scores: torch.Tensor, labels: torch.Tensor) -> int:
    """Number of samples whose arg-max score (or given prediction) equals the label."""
    return int((_predictions(scores) == labels).sum().item())


def accuracy(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction in ``[0, 1]`` of correct predictions; ``scores`` are logits ``(N, K)`` or
    predicted class indices ``(N,)``. An empty batch is an error, not 0 or 1."""
    if labels.numel() == 0:
        raise ValueError("accuracy of an empty set is undefined")
    if _predictions(scores).shape != labels.shape:
        raise ValueError(
            f"scores for {scores.shape[0]} samples but labels of shape {tuple(labels.shape)}"
        )
    return num_correct(scores, labels) / labels.numel()


def confusion_matrix(scores: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``C[i, j]`` = number of samples of true class ``i`` predicted as ``j``."""
    pred = _predictions(scores)
    idx = labels.long() * num_classes + pred
    return torch.bincount(idx, minlength=num_classes * num_classes).view(num_classes, num_classes)
