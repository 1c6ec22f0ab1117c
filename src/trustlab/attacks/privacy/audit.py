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
  card accepts; ``offline_options`` (optional) the options that only the offline test reads
  (given without ``offline``, an error rather than silently unused).

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
from trustlab.registry import Card, param_annotation

__all__ = [
    "SHADOW_FIXED",
    "MembershipAudit",
    "check_options",
    "option_defaults",
    "option_names",
    "shadow_summary",
    "train_plus_test",
]


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
        executor: where shadow models train (None: in this process; ``"local"``, ``"ray"`` or an
            :class:`~trustlab.utils.executor.Executor`).
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
    executor: Any = None
    extra: dict[str, Any] = field(default_factory=dict)

    def shadow_recipe(self) -> ShadowRecipe:
        """The recipe, which a shadow attack needs."""
        if self.recipe is None:
            raise ValueError("a shadow-model attack needs the target's recipe (recipe=...)")
        return self.recipe


#: the arguments every shadow attack's hook sets itself (its ``options_fixed``)
SHADOW_FIXED = ("shadows", "seed", "cache", "device", "progress", "executor")


def _options_target(card: Card) -> Any:
    fn = card.meta.get("options")
    return card.factory if fn is True else fn


def option_names(card: Card) -> list[str]:
    """The keyword arguments a user may set for the privacy attack of ``card``: those of its
    ``options`` function or class other than its data inputs (the two leading positional
    parameters) and the ones the hook sets (``options_fixed``); empty when it takes none."""
    return list(option_defaults(card))


def option_defaults(card: Card) -> dict[str, Any]:
    """:func:`option_names` with their defaults (``inspect.Parameter.empty`` where none)."""
    fn = _options_target(card)
    if fn is None:
        return {}
    params = list(inspect.signature(fn).parameters.values())  # a class: its __init__'s
    fixed = set(card.meta.get("options_fixed", ()))
    positional = [p.name for p in params if p.kind is p.POSITIONAL_OR_KEYWORD][:2]
    return {
        p.name: p.default
        for p in params
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        and p.name not in fixed
        and p.name not in positional
    }


def check_options(
    card: Card,
    options: Mapping[str, Any] | None,
    data: ArrayDataset | None = None,
    recipe: ShadowRecipe | None = None,
) -> dict[str, Any]:
    """``options`` checked for the attack of ``card``, as a dict: each key must be one it takes
    (:func:`option_names`), each value of the type its signature declares (``"2"`` for a float
    is converted; ``null`` for a float is refused); with ``data`` (the audited examples) also
    each value's range, by the attack's own checks on a one-example input (a class attack is
    constructed, with ``recipe``, and not fitted; a scoring function is called with a label
    oracle that is never right, so it queries nothing). An :class:`~trustlab.errors.InputError`
    naming the option and what it takes otherwise, before anything is trained or stored."""
    import pydantic

    options = dict(options or {})
    defaults = option_defaults(card)
    bad = sorted(set(options) - set(defaults))
    if bad:
        takes = f"takes: {', '.join(defaults)}" if defaults else "takes no options"
        raise InputError(
            f"privacy attack {card.name!r} has no option {', '.join(map(repr, bad))}; it {takes}."
        )
    if not options:
        return options
    fn = _options_target(card)
    target = fn.__init__ if inspect.isclass(fn) else fn
    fields = {k: (param_annotation(target, k), ...) for k in options}
    config = pydantic.ConfigDict(arbitrary_types_allowed=True)
    model = pydantic.create_model("Options", __config__=config, **fields)
    try:
        checked = model.model_validate(options)
    except pydantic.ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        default = defaults[str(err["loc"][0])]
        example = "" if default is inspect.Parameter.empty else f"; its default is {default!r}"
        raise InputError(
            f"privacy attack {card.name!r}: option {where!r}: {err['msg']} "
            f"(got {err.get('input')!r}{example})."
        ) from None
    options = {k: getattr(checked, k) for k in options}
    if data is not None:
        try:
            _check_values(fn, options, data, recipe)
        except InputError as exc:
            raise InputError(f"privacy attack {card.name!r}, options {options}: {exc}") from None
    return options


def _check_values(
    fn: Any, options: dict[str, Any], data: ArrayDataset, recipe: ShadowRecipe | None
) -> None:
    one = data.subset(torch.tensor([0]))
    if inspect.isclass(fn):  # constructors check their settings and train nothing
        fn(recipe, one, **options)
        return
    wrong = (int(one.y[0]) + 1) % max(2, len(data.classes))

    def never_right(x: torch.Tensor) -> torch.Tensor:
        return torch.full((len(x),), wrong, dtype=torch.long)

    fn(never_right, one, **options)


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
