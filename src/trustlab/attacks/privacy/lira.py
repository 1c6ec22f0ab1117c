"""LiRA, the likelihood-ratio membership-inference attack of Carlini et al., "Membership Inference
Attacks From First Principles" (S&P 2022).

The attacker trains ``N`` shadow models, each on a random half of a population that holds the
examples under audit (:func:`~trustlab.attacks.privacy.shadows.membership_masks`, the authors'
balanced assignment: every example is IN for exactly ``N // 2`` shadows). For every example it
records the logit-scaled confidence ``phi = log(p_y / (1 - p_y))`` of each shadow, computed stably
from the logits as ``z_y - logsumexp_{j != y} z_j``
(:func:`~trustlab.attacks.privacy.membership.logit_confidence`), and fits one Gaussian to the
shadows that trained on it (IN) and one to those that did not (OUT). The target's own ``phi``
is then scored:

- **online** (default): ``log N(phi; mu_in, s_in^2) - log N(phi; mu_out, s_out^2)``;
- **offline**: the one-sided test against the OUT Gaussian: ``-log Pr[Z > phi]``,
  ``Z ~ N(mu_out, s_out^2)``, a monotone transform of the paper's ``1 - Pr[Z > phi]`` that does
  not round to 1 for confident members. Only the OUT shadows of each example are used, so the
  same shadow set serves both (the paper's offline attack trains OUT shadows only).

Higher scores mean "member". With augmented queries (``queries=2``: the image and its horizontal
mirror, as the paper's CIFAR experiments query) each query gets its own Gaussians and the
per-query scores are averaged, as in the authors' code.

**Variance.** ``fix_variance=True`` uses one global variance per query, shared by the IN and
OUT Gaussians (as the authors' code does; it makes the online score linear in ``phi``) and
pooled within examples: ``s^2 = sum (phi_ik - mu_i,side)^2 / sum (n_i,side - 1)`` over the
examples and the sides used (offline: OUT only). The paper recommends a global variance when few
shadow models are trained, because per-example variances from a handful of samples are noisy;
``None`` (default) picks it below 64 shadows (fewer than 32 per side) and per-example variances
(separate for IN and OUT, as in the paper) from 64 on; that cut-off is trustlab's, after the
paper's finding that per-example variances win with many shadows. With one shadow per example
and side (``N = 2``) the pooled estimate has no degrees of freedom and the spread of all IN
scores (offline: OUT scores) is used instead, the authors' code's global estimate. Standard
deviations are floored at ``1e-6``.

Deviations from the paper and its code, all deliberate: means are sample means (the paper's
Algorithm 1; the authors' code takes the median); the global variance is the pooled
within-example variance (the authors' code takes the variance of all IN scores, which adds the
spread of the per-example means); the offline score is ``-log`` of the one-sided p-value (same
ranking as the paper's ``1 - p``).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn

from trustlab.attacks.privacy.audit import (
    SHADOW_FIXED,
    MembershipAudit,
    shadow_summary,
    train_plus_test,
)
from trustlab.attacks.privacy.membership import logit_confidence
from trustlab.attacks.privacy.reference import ReferenceAttack
from trustlab.attacks.privacy.shadows import ShadowRecipe
from trustlab.data.datasets import ArrayDataset
from trustlab.errors import InputError
from trustlab.registry import PRIVACY_ATTACKS
from trustlab.train.evaluate import predict_logits
from trustlab.utils.executor import Executor

__all__ = ["GLOBAL_VARIANCE_BELOW", "LiRA", "lira_scores", "query_phi"]

#: with fewer shadow models than this, ``fix_variance=None`` uses a global variance
GLOBAL_VARIANCE_BELOW = 64
MIN_STD = 1e-6
_LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


def query_phi(
    model: nn.Module,
    data: ArrayDataset,
    queries: int = 1,
    batch_size: int = 512,
    device: str | torch.device | None = None,
) -> torch.Tensor:
    """``phi`` of ``model`` on every example of ``data`` and query: ``(n, queries)`` float64.

    Query 0 is the input itself, query 1 its horizontal mirror (flip of the last axis)."""
    if queries not in (1, 2):
        raise InputError(f"queries must be 1 (the input) or 2 (input and mirror), got {queries}.")
    out = []
    for q in range(queries):
        x = data.x if q == 0 else data.x.flip(-1)
        ds = ArrayDataset(x, data.y, data.classes, data.mean, data.std, validate=False)
        out.append(logit_confidence(predict_logits(model, ds, batch_size, device), data.y))
    return torch.stack(out, -1)


def _moments(phi: torch.Tensor, mask: torch.Tensor, side: str) -> tuple[torch.Tensor, ...]:
    """Per-example mean ``(m, Q)``, within-example sum of squares ``(m, Q)`` and count
    ``(m, 1)`` of the shadows' ``phi`` ``(N, m, Q)`` where ``mask`` ``(N, m)`` is True."""
    w = mask.to(phi.dtype).unsqueeze(-1)
    count = w.sum(0)
    if bool((count < 1).any()):
        raise InputError(
            f"some example has no {side} shadow model; LiRA needs IN and OUT shadows for every "
            "example: train >= 2 shadows with the balanced assignment."
        )
    mu = (phi * w).sum(0) / count
    return mu, ((phi - mu) ** 2 * w).sum(0), count


def _spread(phi: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Standard deviation ``(Q,)`` of all the shadows' ``phi`` where ``mask`` is True."""
    w = mask.to(phi.dtype).unsqueeze(-1)
    total = w.sum((0, 1))
    grand = (phi * w).sum((0, 1)) / total
    return (((phi - grand) ** 2 * w).sum((0, 1)) / total).sqrt()


def _log_normal(x: torch.Tensor, mu: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    return -0.5 * ((x - mu) / std) ** 2 - std.log() - _LOG_SQRT_2PI


def lira_scores(
    target_phi: torch.Tensor,
    shadow_phi: torch.Tensor,
    in_mask: torch.Tensor,
    *,
    offline: bool = False,
    fix_variance: bool = True,
) -> torch.Tensor:
    """LiRA scores (float64, higher = member) from ``phi`` values; see the module.

    Args:
        target_phi: the target's ``phi``, ``(m,)`` or ``(m, Q)`` for ``Q`` queries.
        shadow_phi: the shadows' ``phi`` on the same examples, ``(N, m)`` or ``(N, m, Q)``.
        in_mask: ``(N, m)`` booleans, True where the shadow trained on the example.
        offline: the one-sided test against the OUT Gaussian instead of the likelihood ratio.
        fix_variance: one global variance per side (True) or per-example variances.
    """
    t = torch.as_tensor(target_phi, dtype=torch.float64)
    s = torch.as_tensor(shadow_phi, dtype=torch.float64)
    if t.dim() == 1:
        t = t.unsqueeze(-1)
    if s.dim() == 2:
        s = s.unsqueeze(-1)
    mask = torch.as_tensor(in_mask).bool()
    if s.dim() != 3 or t.dim() != 2 or s.shape[1:] != t.shape or mask.shape != s.shape[:2]:
        raise InputError(
            f"shapes do not fit: target phi {tuple(t.shape)}, shadow phi {tuple(s.shape)}, "
            f"in-mask {tuple(mask.shape)}; expected (m, Q), (N, m, Q) and (N, m)."
        )
    if not (bool(torch.isfinite(t).all()) and bool(torch.isfinite(s).all())):
        raise InputError("phi contains NaN or inf; check the models' logits.")
    mu_out, ss_out, n_out = _moments(s, ~mask, "OUT")
    sides = [(ss_out, n_out, "OUT")]
    if not offline:
        mu_in, ss_in, n_in = _moments(s, mask, "IN")
        sides.append((ss_in, n_in, "IN"))
    if fix_variance:  # one variance per query, pooled within examples over the sides used
        dof = sum((n - 1).sum(0) for _, n, _ in sides)
        if float(dof) > 0:
            sd = (sum(ss.sum(0) for ss, _, _ in sides) / dof).sqrt()
        else:  # one shadow per example and side: the authors' code's spread of all scores
            sd = _spread(s, ~mask if offline else mask)
        sd_out = sd_in = sd.clamp_min(MIN_STD)
    else:
        for _, n, side in sides:
            if bool((n < 2).any()):
                raise InputError(
                    f"per-example variances need >= 2 {side} shadow models for every example; "
                    "train more shadows (>= 4 with the balanced assignment) or use "
                    "fix_variance=True."
                )
        sd_out = (ss_out / (n_out - 1)).sqrt().clamp_min(MIN_STD)
        if not offline:
            sd_in = (ss_in / (n_in - 1)).sqrt().clamp_min(MIN_STD)
    if offline:
        z = (t - mu_out) / sd_out
        return (-torch.special.log_ndtr(-z)).mean(-1)
    return (_log_normal(t, mu_in, sd_in) - _log_normal(t, mu_out, sd_out)).mean(-1)


def _audit_lira(a: MembershipAudit) -> torch.Tensor:
    """Shadows on random halves of the population *train + test*, which holds every audited
    example (each IN for half of the shadows); online or offline (``a.offline``)."""
    lira = LiRA(
        a.shadow_recipe(), train_plus_test(a.train, a.test), a.shadows,
        seed=a.seed, cache=a.cache, device=a.device, progress=a.progress, executor=a.executor,
        **{"fix_variance": a.fix_variance, "queries": a.queries, **a.options},
    )  # fmt: skip
    lira.fit(a.population_index)  # the audited examples' positions in train + test
    sm = lira.shadow_models
    scores = lira.score(a.model, offline=a.offline)
    a.extra.update(fix_variance=lira.fix_variance, queries=lira.queries)
    assert sm is not None
    a.extra.update(shadow_summary(sm))
    return scores


@PRIVACY_ATTACKS.register(
    "lira",
    "likelihood-ratio attack: Gaussians of the shadows' logit-scaled confidence, IN vs OUT",
    paper="Carlini, Chien, Nasr, Song, Terzis, Tramer. Membership Inference Attacks From First "
    "Principles. IEEE S&P 2022.",
    threat="black-box: the target's logits; the attacker knows the training recipe and holds "
    "a population that contains the audited examples",
    inputs=("recipe", "population"),
    shadows=True,
    min_shadows=2,
    shadows_fix="LiRA needs IN and OUT shadows for every example.",
    offline="LiRA's one-sided test",
    audit=_audit_lira,
    options=True,
    options_fixed=SHADOW_FIXED,
)
class LiRA(ReferenceAttack):
    """Carlini et al.'s likelihood-ratio attack; see the module for the method.

    Carlini, Chien, Nasr, Song, Terzis, Tramer, "Membership Inference Attacks From First
    Principles", IEEE S&P 2022.

    Args:
        recipe: the target's training recipe (the attacker knows it).
        population: the data the shadows are drawn from; it must hold the examples to audit.
        shadows: number of shadow models ``N`` (default 16; >= 2).
        fix_variance: global (True) or per-example (False) variances; ``None`` (default):
            global below :data:`GLOBAL_VARIANCE_BELOW` shadows.
        queries: 1 (the input) or 2 (input and mirror); ``None`` (default): 2 when the recipe
            trains with flips (``augment`` ``flip`` or ``crop-flip``), else 1, so that queries
            follow the training augmentation as in the paper.
        seed: seeds the assignment and every shadow.
        cache: the shadow-model cache (see :func:`~trustlab.attacks.privacy.train_shadows`).
        device: where shadows train and predict.
        batch_size: inference batch size.
        progress: a progress bar over the shadows (only on a terminal).
        executor: where the shadows train (default None: in this process; ``"local"``,
            ``"ray"``: :func:`~trustlab.attacks.privacy.train_shadows`).

    ``lira.fit(indices)`` trains (or loads) the shadows and records their ``phi`` on
    ``population[indices]`` (default: all); ``lira.score(target, offline=False)`` scores those
    examples for the target model: ``(len(indices),)`` float64, higher = member.

    Example::

        lira = LiRA(recipe, population, shadows=16).fit(indices)
        scores = lira.score(target_model)
    """

    def __init__(
        self,
        recipe: ShadowRecipe,
        population: ArrayDataset,
        shadows: int = 16,
        *,
        fix_variance: bool | None = None,
        queries: int | None = None,
        seed: int = 0,
        cache: bool | str | Path = True,
        device: str | torch.device = "auto",
        batch_size: int = 512,
        progress: bool = True,
        executor: str | Executor | None = None,
    ) -> None:
        super().__init__(
            recipe, population, shadows, queries=queries, seed=seed, cache=cache, device=device,
            batch_size=batch_size, progress=progress, executor=executor,
            shadows_fix="LiRA needs IN and OUT shadows for every example.",
        )  # fmt: skip
        self.fix_variance = (
            self.shadows < GLOBAL_VARIANCE_BELOW if fix_variance is None else bool(fix_variance)
        )

    def statistic(self, model: nn.Module, data: ArrayDataset) -> torch.Tensor:
        """``phi`` per query, ``(m, Q)`` (:func:`query_phi`)."""
        return query_phi(model, data, self.queries, self.batch_size, self.device)

    @property
    def shadow_phi(self) -> torch.Tensor | None:
        """The shadows' ``phi`` on the fitted examples, ``(N, m, Q)`` (after :meth:`fit`)."""
        return self.reference

    def target_phi(self, model: nn.Module) -> torch.Tensor:
        """The target's ``phi`` ``(m, Q)`` on the fitted examples."""
        return self.target_stat(model)

    def score(self, model: nn.Module, offline: bool = False) -> torch.Tensor:
        """LiRA scores (float64, higher = member) of ``model`` on ``population[indices]``."""
        t = self.target_phi(model)
        reference, in_mask = self.fitted()
        return lira_scores(t, reference, in_mask, offline=offline, fix_variance=self.fix_variance)
