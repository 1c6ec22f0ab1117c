"""Per-sample attack objectives, all to be *maximised* by an untargeted attack.

- ``ce``: cross-entropy ``-log p_y`` (Madry et al. 2018).
- ``cw``: the Carlini-Wagner margin ``max_{j != y} z_j - z_y`` (Carlini & Wagner 2017).
- ``dlr``: the Difference of Logits Ratio of AutoAttack (Croce & Hein 2020),
  ``-(z_y - max_{j != y} z_j) / (z_pi1 - z_pi3 + 1e-12)`` with ``z_pi`` the sorted logits
  (needs K >= 3).
Targeted versions (toward class ``t``) return what a targeted attack maximises:
``-CE(t)``, ``z_t - max_{j != t} z_j`` and the targeted DLR
``-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2 + 1e-12)`` (K >= 4).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from trustlab.errors import InputError

Objective = Callable[..., torch.Tensor]


def _other_max(logits: torch.Tensor, cls: torch.Tensor) -> torch.Tensor:
    """``max_{j != cls} z_j`` per sample."""
    masked = logits.scatter(1, cls[:, None], float("-inf"))
    return masked.max(1).values


def wrong_classes(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The classes of each row ordered by decreasing logit, the true class ``y`` last: column
    ``i < K - 1`` is the ``i+1``-th most likely wrong class (the targets of APGD-T, FAB-T and
    MDMT, as AutoAttack picks them). ``(N, K)`` int64."""
    return logits.scatter(1, y[:, None], float("-inf")).argsort(1, descending=True)


def ce(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
    if target is not None:
        return -F.cross_entropy(logits, target, reduction="none")
    return F.cross_entropy(logits, y, reduction="none")


def cw(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
    if target is not None:
        return logits.gather(1, target[:, None]).squeeze(1) - _other_max(logits, target)
    return _other_max(logits, y) - logits.gather(1, y[:, None]).squeeze(1)


def dlr(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
    k = logits.shape[1]
    srt = logits.sort(1, descending=True).values
    zy = logits.gather(1, y[:, None]).squeeze(1)
    if target is not None:
        if k < 4:
            raise InputError(f"targeted DLR needs at least 4 classes, the model has {k}.")
        zt = logits.gather(1, target[:, None]).squeeze(1)
        return -(zy - zt) / (srt[:, 0] - 0.5 * (srt[:, 2] + srt[:, 3]) + 1e-12)
    if k < 3:
        raise InputError(f"the DLR loss needs at least 3 classes, the model has {k}; use 'ce'.")
    return -(zy - _other_max(logits, y)) / (srt[:, 0] - srt[:, 2] + 1e-12)


OBJECTIVES: dict[str, Objective] = {"ce": ce, "cw": cw, "dlr": dlr}


def objective(name: str) -> Objective:
    if name not in OBJECTIVES:
        raise InputError(f"unknown attack loss {name!r}; use one of {', '.join(OBJECTIVES)}.")
    return OBJECTIVES[name]
