"""Collaborative fairness: does each party's reward follow its contribution?

Lyu, Li, Nandakumar, Yu, Ma, "How to democratise and protect AI: fair and differentially private
decentralised deep learning", IEEE TDSC 2020 (arXiv:2007.09370), measure fairness as the Pearson
correlation between the parties' contributions (their standalone accuracies, or their data
sizes) and their rewards (their final accuracies after collaboration): 1 is perfectly fair.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from trustlab.errors import InputError


def pearson(x: Sequence[float] | torch.Tensor, y: Sequence[float] | torch.Tensor) -> float:
    """Pearson's correlation coefficient of two equally long vectors (``nan`` when either is
    constant: the correlation is undefined).

    Example:
        >>> round(pearson([1, 2, 3], [2, 4, 7]), 4)
        0.9934
    """
    a = torch.as_tensor(x, dtype=torch.float64).flatten()
    b = torch.as_tensor(y, dtype=torch.float64).flatten()
    if a.numel() != b.numel():
        raise InputError(f"pearson needs vectors of one length, got {a.numel()} and {b.numel()}.")
    if a.numel() < 2:
        raise InputError("pearson needs at least two values per vector.")
    a, b = a - a.mean(), b - b.mean()
    denom = math.sqrt(float((a * a).sum()) * float((b * b).sum()))
    if denom == 0.0:
        return math.nan
    return float((a * b).sum()) / denom


def collaborative_fairness(
    contribution: Sequence[float] | torch.Tensor, reward: Sequence[float] | torch.Tensor
) -> float:
    """FDPDDL's fairness: ``pearson(contribution, reward)`` over the parties (standalone accuracy
    or data size against final accuracy)."""
    return pearson(contribution, reward)


__all__ = ["collaborative_fairness", "pearson"]
