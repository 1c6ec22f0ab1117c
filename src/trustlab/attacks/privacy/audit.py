"""One membership-inference audit, as every registered privacy attack's scoring hook sees it.

A privacy attack's card in :data:`~trustlab.registry.PRIVACY_ATTACKS` carries, besides its
factory (the scoring function or the attack class), these meta entries:

- ``shadows`` (bool): the attack trains shadow models with the target's recipe;
- ``audit``: the hook ``audit(a: MembershipAudit) -> scores``, one float64 score per example of
  ``a.data`` (higher = member); shadow bookkeeping goes to ``a.extra``;
- ``min_shadows`` (shadow attacks): the fewest shadow models it can work with, and
  ``shadows_fix`` the hint shown when fewer are asked for;
- ``offline`` (optional): the phrase naming the attack's offline test, for the attacks that have
  one (``a.offline``).

:func:`trustlab.workflows.mia.run_mia` builds the :class:`MembershipAudit` of a stored training
run and calls the hook of the attack asked for, so that a new attack is one registration.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from trustlab.attacks.privacy.shadows import ShadowModels, ShadowRecipe
from trustlab.data.datasets import ArrayDataset

__all__ = ["MembershipAudit", "shadow_summary", "train_plus_test"]


@dataclass
class MembershipAudit:
    """The target and the data of one membership-inference audit.

    Args:
        model: the target model (eval mode, on ``device``).
        data: the audited examples, members first.
        train: the target's training split (members are drawn from it).
        test: its test split (non-members are drawn from it; the attacker's data for Shokri).
        population_index: the audited examples' positions in ``train + test``
            (:func:`train_plus_test`), ``(len(data),)`` int64.
        recipe: the target's training recipe (shadow attacks only, else ``None``).
        shadows: shadow models to train (shadow attacks).
        seed: seeds the shadows and the attack models.
        cache: the shadow-model cache (True: the results store's, a folder, or False).
        device: where shadows train and models predict.
        progress: a progress bar over the shadow models (only on a terminal).
        offline: the attack's offline test (LiRA's one-sided test).
        fix_variance, queries: LiRA's options (``None``: its defaults).
        extra: what the hook records besides the scores (shadow bookkeeping), in the order the
            run's summary lists it.

    Example::

        card = PRIVACY_ATTACKS.get("loss")
        scores = card.meta["audit"](MembershipAudit(model, data, train, test, index))
    """

    model: nn.Module
    data: ArrayDataset
    train: ArrayDataset
    test: ArrayDataset
    population_index: torch.Tensor
    recipe: ShadowRecipe | None = None
    shadows: int = 16
    seed: int = 0
    cache: bool | str | Path = True
    device: str | torch.device = "cpu"
    progress: bool = True
    offline: bool = False
    fix_variance: bool | None = None
    queries: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def shadow_recipe(self) -> ShadowRecipe:
        """The recipe, which a shadow attack needs."""
        if self.recipe is None:
            raise ValueError("a shadow-model attack needs the target's recipe (recipe=...)")
        return self.recipe


def train_plus_test(train: ArrayDataset, test: ArrayDataset) -> ArrayDataset:
    """``train`` followed by ``test`` (LiRA's population; the audited set of members and
    non-members)."""
    return ArrayDataset(
        torch.cat([train.x, test.x]), torch.cat([train.y, test.y]), train.classes, train.mean,
        train.std, name=f"{train.name}:train+test", validate=False,
    )  # fmt: skip


def shadow_summary(sm: ShadowModels) -> dict[str, Any]:
    """The shadow bookkeeping a stored audit reports: count, trained now, seconds, cache."""
    return {
        "shadows": len(sm),
        "shadows_trained": sm.trained,
        "shadow_seconds": round(sm.seconds, 3),
        "shadow_cache": str(sm.folder) if sm.folder is not None else None,
    }
