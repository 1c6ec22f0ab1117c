"""One membership-inference audit, as every registered privacy attack's scoring hook sees it.

A privacy attack's card in :data:`~trustlab.registry.PRIVACY_ATTACKS` carries, besides its
factory (the scoring function or the attack class), these meta entries:

- ``shadows`` (bool): the attack trains shadow models with the target's recipe;
- ``audit``: the hook ``audit(a: MembershipAudit) -> scores``, one float64 score per example of
  ``a.data`` (higher = member); shadow bookkeeping goes to ``a.extra``;
- ``min_shadows`` (shadow attacks): the fewest shadow models it can work with, and
  ``shadows_fix`` the hint shown when fewer are asked for;
- ``offline`` (optional): the phrase naming the attack's offline test, for the attacks that have
  one (``a.offline``);
- ``options`` (optional): the function (or class; ``True``: the card's own factory) whose keyword
  arguments a user may set for the attack (``run_mia(..., options={...})``, ``trustlab mia
  --options JSON``), and ``options_fixed`` the arguments the hook sets itself; the hook forwards
  ``a.options``. An attack without ``options`` takes none; :func:`option_names` lists what a
  card accepts.

:func:`trustlab.workflows.mia.run_mia` builds the :class:`MembershipAudit` of a stored training
run and calls the hook of the attack asked for, so that a new attack is one registration.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from trustlab.attacks.privacy.shadows import ShadowModels, ShadowRecipe
from trustlab.data.datasets import ArrayDataset
from trustlab.errors import InputError
from trustlab.registry import Card

__all__ = ["MembershipAudit", "check_options", "option_names", "shadow_summary", "train_plus_test"]


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
        offline: the attack's offline test (LiRA's one-sided test, RMIA's OUT-only ``Pr(x)``).
        fix_variance, queries: LiRA's options (``None``: its defaults); RMIA reads ``queries``.
        options: the attack's own keyword arguments (checked by :func:`check_options`; the
            hooks of attacks whose card names ``options`` forward them).
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
    options: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def shadow_recipe(self) -> ShadowRecipe:
        """The recipe, which a shadow attack needs."""
        if self.recipe is None:
            raise ValueError("a shadow-model attack needs the target's recipe (recipe=...)")
        return self.recipe


def option_names(card: Card) -> list[str]:
    """The keyword arguments a user may set for the privacy attack of ``card``: those of its
    ``options`` function or class other than its data inputs (the two leading positional
    parameters) and the ones the hook sets (``options_fixed``); empty when it takes none."""
    fn = card.meta.get("options")
    if fn is None:
        return []
    if fn is True:
        fn = card.factory
    params = list(inspect.signature(fn).parameters.values())  # a class: its __init__'s
    fixed = set(card.meta.get("options_fixed", ()))
    positional = [p.name for p in params if p.kind is p.POSITIONAL_OR_KEYWORD][:2]
    return [
        p.name
        for p in params
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        and p.name not in fixed
        and p.name not in positional
    ]


def check_options(card: Card, options: Mapping[str, Any] | None) -> dict[str, Any]:
    """``options`` as a dict, after checking that the attack of ``card`` takes each key
    (:func:`option_names`); an :class:`~trustlab.errors.InputError` naming the allowed ones
    otherwise."""
    options = dict(options or {})
    allowed = option_names(card)
    bad = sorted(set(options) - set(allowed))
    if bad:
        takes = f"takes: {', '.join(allowed)}" if allowed else "takes no options"
        raise InputError(
            f"privacy attack {card.name!r} has no option {', '.join(map(repr, bad))}; it {takes}."
        )
    return options


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
