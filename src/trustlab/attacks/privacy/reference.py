"""What the reference-model attacks share: shadows on random halves of a population, and one
statistic per shadow, example and query.

LiRA (:mod:`~trustlab.attacks.privacy.lira`) and RMIA (:mod:`~trustlab.attacks.privacy.rmia`)
both train ``N`` shadow ("reference") models with the target's recipe on the authors' balanced
assignment (:func:`~trustlab.attacks.privacy.shadows.membership_masks`: every example is IN for
``N // 2`` of them), so that, with the same seed, count and population, they share one cached set.
They differ only in the statistic they record (LiRA: the logit-scaled confidence; RMIA: the
tempered probability of the true class) and in how they score it. :class:`ReferenceAttack` holds
the common part: the settings, :meth:`~ReferenceAttack.fit` (train or load the shadows, record
the statistic of each on the audited examples, ``(N, m, Q)``, and their IN mask ``(N, m)``) and
the target's statistic :meth:`~ReferenceAttack.target_stat`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Self

import torch
from torch import nn

from trustlab.attacks.privacy.shadows import ShadowModels, ShadowRecipe, train_shadows
from trustlab.data.datasets import ArrayDataset, as_array_dataset
from trustlab.errors import InputError
from trustlab.utils.device import resolve_device
from trustlab.utils.executor import Executor
from trustlab.utils.validate import check_int

__all__ = ["ReferenceAttack"]


class ReferenceAttack:
    """The shadow bookkeeping of LiRA and RMIA; subclasses define :meth:`statistic`.

    Args:
        recipe: the target's training recipe (the attacker knows it).
        population: the data the shadows are drawn from; it holds the examples to audit.
        shadows: shadow models ``N`` (>= 2: every example needs an IN and an OUT one).
        queries: 1 (the input) or 2 (input and mirror); ``None``: 2 when the recipe trains with
            flips, else 1.
        seed: seeds the assignment and every shadow.
        cache: the shadow-model cache (see :func:`~trustlab.attacks.privacy.train_shadows`).
        device: where shadows train and predict.
        batch_size: inference batch size.
        progress: a progress bar over the shadows (only on a terminal).
        executor: where the shadows train (:func:`~trustlab.attacks.privacy.train_shadows`;
            default None: in this process).
        shadows_fix: the hint of the error for too few shadows.

    After :meth:`fit`: ``shadow_models``, ``indices`` ``(m,)``, ``reference`` ``(N, m, Q)`` (the
    statistic of every shadow on every fitted example) and ``in_mask`` ``(N, m)``.
    """

    def __init__(
        self,
        recipe: ShadowRecipe,
        population: ArrayDataset,
        shadows: int = 16,
        *,
        queries: int | None = None,
        seed: int = 0,
        cache: bool | str | Path = True,
        device: str | torch.device = "auto",
        batch_size: int = 512,
        progress: bool = True,
        executor: str | Executor | None = None,
        shadows_fix: str = "",
    ) -> None:
        self.shadows = check_int("shadows", shadows, minimum=2, fix=shadows_fix)
        if queries is None:
            queries = 2 if "flip" in recipe.settings.augment else 1
        if queries not in (1, 2):
            raise InputError(f"queries must be 1 or 2 (input and mirror), got {queries}.")
        self.recipe = recipe
        self.population = as_array_dataset(population)
        self.queries = queries
        self.seed = seed
        self.cache = cache
        self.device = resolve_device(device)
        self.batch_size = check_int("batch_size", batch_size, minimum=1)
        self.progress = progress
        self.executor = executor
        self.shadow_models: ShadowModels | None = None
        self.indices: torch.Tensor | None = None
        self.reference: torch.Tensor | None = None  # (N, m, Q)
        self.in_mask: torch.Tensor | None = None  # (N, m)

    def statistic(self, model: nn.Module, data: ArrayDataset) -> torch.Tensor:
        """The attack's per-query statistic of ``model`` on ``data``, ``(m, Q)``."""
        raise NotImplementedError

    def fit(self, indices: torch.Tensor | None = None) -> Self:
        """Train (or load) the shadows and record their statistic on ``population[indices]``
        (default: all)."""
        n = len(self.population)
        idx = torch.arange(n) if indices is None else torch.as_tensor(indices, dtype=torch.long)
        if idx.dim() != 1 or idx.numel() == 0 or int(idx.min()) < 0 or int(idx.max()) >= n:
            raise InputError(f"indices must be a non-empty 1-D set of positions in [0, {n}).")
        self.shadow_models = train_shadows(
            self.recipe, self.population, self.shadows, scheme="balanced", seed=self.seed,
            cache=self.cache, device=self.device, progress=self.progress, executor=self.executor,
        )  # fmt: skip
        audit = self.population.subset(idx)
        self.indices = idx
        self.reference = torch.stack(
            [self.statistic(m, audit) for m in self.shadow_models.models(self.device)]
        )
        self.in_mask = self.shadow_models.masks[:, idx]
        return self

    def target_stat(self, model: nn.Module) -> torch.Tensor:
        """The target's statistic ``(m, Q)`` on the fitted examples."""
        if self.indices is None:
            raise InputError("call fit() before score(): the shadow models are not trained yet.")
        return self.statistic(model, self.population.subset(self.indices))

    def fitted(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(reference, in_mask)`` after :meth:`fit`; an error before it."""
        if self.reference is None or self.in_mask is None:
            raise InputError("call fit() before score(): the shadow models are not trained yet.")
        return self.reference, self.in_mask
