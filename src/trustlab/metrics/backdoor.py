"""Backdoor metrics, pure functions of predictions and labels.

- clean accuracy (C-Acc): :func:`trustlab.metrics.accuracy` on clean inputs;
- attack success rate (ASR): the fraction of *triggered* inputs predicted as their attack target,
  counted only on inputs whose true class is not the target (all-to-one: not the target class);
- robust accuracy (RA): the fraction of triggered inputs (same selection) still predicted as
  their true class;
- DER, the defense-effectiveness rating: ``[max(0, dASR) - max(0, dACC) + 1] / 2`` with
  ``dASR = ASR_before - ASR_after`` and ``dACC = C-Acc_before - C-Acc_after``: 1 for a defense
  that removes the backdoor at no accuracy cost, 0.5 for one that does nothing, lower when it
  costs accuracy without lowering ASR. (A widely used benchmark adds the accuracy term; a drop in
  accuracy must lower the rating, so it is subtracted.)
"""

from __future__ import annotations

import torch


def _targets(target: int | torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """One target per sample from an int (any integer type), a 0-d or an ``(N,)`` tensor."""
    t = torch.as_tensor(target, device=y.device).long()
    return t.expand_as(y) if t.dim() == 0 else t


def _selection(y: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    keep = y != t
    if not bool(keep.any()):
        raise ValueError("no triggered input whose true class differs from its target")
    return keep


def attack_success_rate(pred: torch.Tensor, y: torch.Tensor, target: int | torch.Tensor) -> float:
    """ASR of triggered predictions ``pred`` (class indices or logits)."""
    p = pred.argmax(1) if pred.dim() == 2 else pred
    t = _targets(target, y)
    keep = _selection(y, t)
    return float((p[keep] == t[keep]).float().mean())


def backdoor_robust_accuracy(
    pred: torch.Tensor, y: torch.Tensor, target: int | torch.Tensor
) -> float:
    """RA: triggered inputs (true class not the target) still classified as their true class."""
    p = pred.argmax(1) if pred.dim() == 2 else pred
    t = _targets(target, y)
    keep = _selection(y, t)
    return float((p[keep] == y[keep]).float().mean())


def defense_effectiveness_rating(
    asr_before: float, asr_after: float, acc_before: float, acc_after: float
) -> float:
    """DER in ``[0, 1]``; see the module."""
    d_asr = asr_before - asr_after
    d_acc = acc_before - acc_after
    return (max(0.0, d_asr) - max(0.0, d_acc) + 1) / 2
