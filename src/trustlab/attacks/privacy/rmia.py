"""RMIA, the robust membership-inference attack of Zarifzadeh, Liu, Chang and Shokri,
"Low-Cost High-Power Membership Inference Attacks" (ICML 2024).

RMIA compares the target's likelihood ratio on the audited example ``x`` with its likelihood
ratio on population examples ``z`` (examples known not to be members), so that a handful of
reference models suffice:

- ``Pr(x | theta)``: the target's softmax probability of the true label at temperature ``T``,
  ``softmax(f(x) / T)_y`` (computed in float64 from the logits);
- ``Pr(x)``: the same probability averaged over reference models: **online** (default) over all
  reference models, of which half trained on ``x`` (IN) and half did not (OUT); **offline**
  (``offline=True``) from the OUT models only, by the paper's linear approximation
  ``Pr(x) = ((1 + a) Pr_OUT(x) + (1 - a)) / 2`` with ``a = offline_a``;
- ``LR(x) = Pr(x | theta) / Pr(x)``, and the pairwise test ``LR(x) / LR(z) > gamma``;
- the score: the fraction of population examples ``z`` that pass the test, in ``[0, 1]``
  (higher = member; the paper's ``Score_MIA(x) = Pr_z[LR(x, z) >= gamma]``, Algorithm 1).

The reference models are **LiRA's shadow models**: :func:`~trustlab.attacks.privacy.train_shadows`
with the same recipe, population (*train + test* in an audit), seed, count and balanced
assignment, hence the same cache key, so an audit that ran LiRA runs RMIA without training
anything (every example is IN for ``N // 2`` of them, OUT for the rest).

**What trustlab follows, and from where.** Two codes of the authors exist in
``privacytrustlab/ml_privacy_meter``: the paper's experiment code (``research/2024_rmia`` at
commit ``d3273416``, linked from the paper: ``main.py`` ``aggregate_signals``, ``signals.py``,
``attack_configs/*/rmia_*.yaml``) and the maintained library (``modules/mia/attacks/rmia.py``,
``attacks.py`` ``run_rmia`` / ``get_rmia_out_signals`` / ``tune_offline_a``, ``get_signals.py``
``get_softmax``). The defaults here are the paper code's configurations:

- ``gamma = 2`` (every ``rmia_*`` config; the library tests ``ratio > 1``, i.e. ``gamma = 1``);
- ``offline_a = "tune"``, the library's way (its audit always tunes): the ``a`` of
  ``0, 0.1, ..., 1`` under which offline RMIA best attacks (AUC) one reference model, here
  shadow 0 with the other shadows' OUT models as references and its own non-members as ``z``
  (:func:`tune_offline_a`; the library attacks the target's "paired" model and turns the IN
  references' probabilities into OUT ones by inverting the approximation). It needs >= 3
  shadows; with 2 the paper code's fixed ``a = 0.3`` is used (its CIFAR-10 and CINIC-10
  configs; CIFAR-100 0.6, Purchase-100 0.2), also ``rmia_scores``' default. Measured on digits
  (cnn-small, 20% label noise, 4 shadows, 360 + 360 examples): fixed 0.3, AUC 0.612 and TPR
  4.7% at 1% FPR; tuned (a = 0.8), 0.698 and 22.2%;
- ``temperature = 2`` (every config whose signal is the plain softmax, ``softmax_relative``;
  the library uses 1). The CIFAR-10/100 configs use another signal, ``sm_taylor_softmax``
  (a soft-margin Taylor softmax, ``m = 0.6``, order 4), which trustlab does not implement: its
  odd-order expansion ``1 + u + u^2/2 + u^3/6`` is negative for ``u < -1.6``, so it is not a
  probability for ordinary logits; the brief and the library use the true-class softmax;
- ``Pr(x)`` as a trimmed mean over the reference models, cutting ``floor(0.2 k)`` of the ``k``
  values at each end (``scipy.stats.trim_mean(..., proportiontocut=0.2)`` in the paper code; it
  cuts nothing below 5 models; the library takes the plain mean: ``trim=0``);
- the population ``z``: in an audit, the audited non-members (the paper code's
  ``population_indices = membership == False``: the target's non-members; ``top_k = -1``, all of
  them); ``Pr(z | theta)`` and ``Pr(z)`` are computed exactly like those of ``x`` (online: all
  reference models; offline: the OUT models of ``z``). :class:`RMIA` with no population given
  uses every fitted example (the paper code's comment: results are very close and no knowledge
  of non-members is needed);
- augmented queries (``queries=2``: the image and its mirror; default: 2 when the recipe trains
  with flips, as for LiRA): each query has its own ``Pr(x)`` and test, and the pair ``(x, z)``
  passes when a strict majority of the queries pass (the paper code's ``torch.mode`` vote over 18
  augmentations, whose ties count as failing: with 2 queries both must pass).

**Deviations.** Online, ``Pr(x)`` averages all reference models (balanced masks: ``N // 2`` IN
and ``N - N // 2`` OUT; the paper code takes ``num_ref_models // 2`` of each side). An example
that is itself a population sample is compared with itself too (ratio 1, which fails every
``gamma >= 1``), so the score is one function of ``x`` alone, blind to the audit's labels; the
paper code rescales those examples' scores to ``(count + 1) / (|Z| - 1)``. Probabilities and
``Pr(x)`` are floored at the smallest float64 normal so that ``LR`` is always defined; the test
``LR(x) / LR(z) > gamma`` is done on logarithms. The paper's ``>= gamma`` is the code's ``>``.

The ``(x, z)`` comparison is a ``(m, |Z|, Q)`` boolean array, built in row chunks of at most
``2**22`` entries: about 1 s per 5e7 pairs on one CPU thread (``m = 10000``, ``|Z| = 5000``);
tuning ``a`` scores 11 times.

**Measured** (digits, cnn-small, 20 epochs, LiRA's cached shadows, 360 members + 360
non-members, one CPU thread; AUC / TPR at 1% FPR / TPR at 0.1% FPR, the last one at most one
false positive of 360). With 20% symmetric label noise and 4 shadows: RMIA online 0.719 / 27.5% /
23.3%, offline (a tuned to 0.8) 0.698 / 22.2% / 14.2%; LiRA online 0.673 / 16.9% / 9.7%, offline
0.682 / 18.3% / 8.9%; loss threshold 0.501. Clean labels and 8 shadows (the target generalises:
98% non-member accuracy): every attack near chance, RMIA 0.531 / 2.2% online and 0.525 / 1.7%
offline, LiRA 0.549 / 1.4% and 0.545 / 1.9%; there ``gamma = 1`` does better (0.586 / 3.9%),
because most probabilities are close to 1 and few pairs pass ``gamma = 2``. RMIA scores an
audit in 3.6-4.6 s (loading the shadows and their inference included); the shadows cost 77 s (4)
and 183 s (8) to train once.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from trustlab.attacks.privacy.audit import (
    SHADOW_FIXED,
    MembershipAudit,
    shadow_summary,
    train_plus_test,
)
from trustlab.attacks.privacy.reference import ReferenceAttack
from trustlab.attacks.privacy.shadows import ShadowRecipe
from trustlab.data.datasets import ArrayDataset
from trustlab.errors import InputError
from trustlab.metrics.privacy import membership_auc
from trustlab.registry import PRIVACY_ATTACKS
from trustlab.train.evaluate import predict_logits
from trustlab.utils.executor import Executor
from trustlab.utils.validate import check_int

__all__ = [
    "OFFLINE_A_GRID",
    "RMIA",
    "query_probability",
    "rmia_scores",
    "trimmed_mean",
    "tune_offline_a",
]

#: ``a`` of the paper code's CIFAR-10 and CINIC-10 configs: ``rmia_scores``' default, and
#: ``offline_a="tune"``'s value with only 2 shadows
DEFAULT_OFFLINE_A = 0.3
#: the values of ``a`` that ``offline_a="tune"`` tries (the library's ``np.arange(0, 1.1, 0.1)``)
OFFLINE_A_GRID = tuple(round(0.1 * i, 1) for i in range(11))
_TINY = torch.finfo(torch.float64).tiny
_CHUNK = 2**22  # entries of the (x, z, query) comparison per chunk


def query_probability(
    model: nn.Module,
    data: ArrayDataset,
    queries: int = 1,
    temperature: float = 2.0,
    batch_size: int = 512,
    device: str | torch.device | None = None,
) -> torch.Tensor:
    """``Pr(x | model) = softmax(f(x) / temperature)_y`` on every example of ``data`` and query:
    ``(n, queries)`` float64. Query 0 is the input, query 1 its horizontal mirror."""
    if queries not in (1, 2):
        raise InputError(f"queries must be 1 (the input) or 2 (input and mirror), got {queries}.")
    if not (math.isfinite(temperature) and temperature > 0):
        raise InputError(f"temperature must be finite and > 0, got {temperature}.")
    out = []
    for q in range(queries):
        x = data.x if q == 0 else data.x.flip(-1)
        ds = ArrayDataset(x, data.y, data.classes, data.mean, data.std, validate=False)
        logits = predict_logits(model, ds, batch_size, device).double() / temperature
        out.append(logits.log_softmax(-1).gather(1, data.y.long()[:, None]).squeeze(1).exp())
    return torch.stack(out, -1)


def trimmed_mean(values: torch.Tensor, mask: torch.Tensor, trim: float = 0.2) -> torch.Tensor:
    """Per example, the mean of the values where ``mask`` is True, after cutting
    ``floor(trim * k)`` of the ``k`` selected values at each end (``scipy.stats.trim_mean``).

    ``values``: ``(N, m, Q)``; ``mask``: ``(N, m)``, at least one True per example; returns
    ``(m, Q)``."""
    count = mask.sum(0)  # (m,)
    cut = torch.floor(trim * count.double()).long()
    ordered = values.masked_fill(~mask.unsqueeze(-1), math.inf).sort(0).values
    rank = torch.arange(values.shape[0]).unsqueeze(1)  # (N, 1)
    keep = ((rank >= cut) & (rank < count - cut)).unsqueeze(-1)
    total = torch.where(keep, ordered, torch.zeros((), dtype=values.dtype)).sum(0)
    return total / (count - 2 * cut).unsqueeze(-1).to(values.dtype)


def _population_mask(population: torch.Tensor | None, m: int) -> torch.Tensor:
    if population is None:
        return torch.ones(m, dtype=torch.bool)
    p = torch.as_tensor(population)
    if p.dtype == torch.bool:
        if p.shape != (m,):
            raise InputError(f"a population mask must have shape ({m},), got {tuple(p.shape)}.")
        mask = p.clone()
    else:
        if p.dim() != 1 or (p.numel() and (int(p.min()) < 0 or int(p.max()) >= m)):
            raise InputError(f"population indices must be a 1-D set of positions in [0, {m}).")
        mask = torch.zeros(m, dtype=torch.bool)
        mask[p.long()] = True
    if not bool(mask.any()):
        raise InputError(
            "RMIA needs at least one population example z (known non-members) to compare with."
        )
    return mask


def rmia_scores(
    target_p: torch.Tensor,
    reference_p: torch.Tensor,
    in_mask: torch.Tensor,
    population: torch.Tensor | None = None,
    *,
    offline: bool = False,
    gamma: float = 2.0,
    offline_a: float = DEFAULT_OFFLINE_A,
    trim: float = 0.2,
) -> torch.Tensor:
    """RMIA scores (float64 in ``[0, 1]``, higher = member) from probabilities; see the module.

    Args:
        target_p: the target's ``Pr(x | theta)`` on the ``m`` examples, ``(m,)`` or ``(m, Q)``.
        reference_p: the reference models' probabilities, ``(N, m)`` or ``(N, m, Q)``.
        in_mask: ``(N, m)`` booleans, True where the reference model trained on the example.
        population: which of the ``m`` examples are the population samples ``z`` (a boolean
            mask ``(m,)`` or positions); default all of them.
        offline: ``Pr(x)`` from the OUT models by the linear approximation with ``offline_a``.
        gamma: the pairwise threshold (default 2, the paper code's).
        offline_a: ``a`` in ``Pr(x) = ((1 + a) Pr_OUT(x) + (1 - a)) / 2`` (default 0.3).
        trim: the trimmed mean's proportion cut at each end (default 0.2; 0: the plain mean).
    """
    t = torch.as_tensor(target_p, dtype=torch.float64)
    r = torch.as_tensor(reference_p, dtype=torch.float64)
    if t.dim() == 1:
        t = t.unsqueeze(-1)
    if r.dim() == 2:
        r = r.unsqueeze(-1)
    mask = torch.as_tensor(in_mask).bool()
    if r.dim() != 3 or t.dim() != 2 or r.shape[1:] != t.shape or mask.shape != r.shape[:2]:
        raise InputError(
            f"shapes do not fit: target {tuple(t.shape)}, reference {tuple(r.shape)}, in-mask "
            f"{tuple(mask.shape)}; expected (m, Q), (N, m, Q) and (N, m)."
        )
    for name, v in (("target", t), ("reference", r)):
        if not bool(((v >= 0) & (v <= 1)).all()):  # also rejects NaN
            raise InputError(f"{name} probabilities must lie in [0, 1] (no NaN); check the models.")
    if not (math.isfinite(gamma) and gamma > 0):
        raise InputError(f"gamma must be finite and > 0, got {gamma}.")
    if not 0.0 <= offline_a <= 1.0:
        raise InputError(f"offline_a must lie in [0, 1], got {offline_a}.")
    if not 0.0 <= trim < 0.5:
        raise InputError(f"trim must lie in [0, 0.5), got {trim}.")
    z = _population_mask(population, t.shape[0])
    out = ~mask
    if bool((out.sum(0) < 1).any()):
        raise InputError(
            "some example has no OUT reference model; RMIA needs one for every example: train "
            ">= 2 shadows with the balanced assignment."
        )
    if offline:
        p_out = trimmed_mean(r, out, trim)
        p_x = 0.5 * ((1 + offline_a) * p_out + (1 - offline_a))
    else:
        if bool((mask.sum(0) < 1).any()):
            raise InputError(
                "some example has no IN reference model; online RMIA averages IN and OUT models: "
                "train >= 2 shadows with the balanced assignment, or use offline=True."
            )
        p_x = trimmed_mean(r, torch.ones_like(mask), trim)
    log_lr = t.clamp_min(_TINY).log() - p_x.clamp_min(_TINY).log()  # (m, Q)
    log_lr_z = log_lr[z]  # (|Z|, Q)
    q = log_lr.shape[1]
    rows = max(1, _CHUNK // (log_lr_z.shape[0] * q))
    threshold = math.log(gamma)
    scores = []
    for chunk in log_lr.split(rows):
        passed = (chunk.unsqueeze(1) - log_lr_z.unsqueeze(0)) > threshold  # (rows, |Z|, Q)
        votes = passed.sum(-1) * 2 > q  # strict majority of the queries
        scores.append(votes.double().mean(1))
    return torch.cat(scores)


def tune_offline_a(
    reference_p: torch.Tensor,
    in_mask: torch.Tensor,
    *,
    gamma: float = 2.0,
    trim: float = 0.2,
    pseudo_target: int = 0,
) -> float:
    """The ``a`` of :data:`OFFLINE_A_GRID` under which offline RMIA best attacks one reference
    model (``pseudo_target``) with the others as references, its non-members as the population
    (highest AUC; ties: the smallest ``a``), as the authors' library tunes it (``tune_offline_a``
    in ``modules/mia/attacks/rmia.py``). Needs an OUT reference among the others for every
    example: >= 3 shadows with the balanced assignment."""
    r = torch.as_tensor(reference_p, dtype=torch.float64)
    if r.dim() == 2:
        r = r.unsqueeze(-1)
    mask = torch.as_tensor(in_mask).bool()
    n = r.shape[0]
    if n < 3:
        raise InputError(
            f"tuning offline_a attacks one of the shadows with the others and needs >= 3 shadow "
            f"models, got {n}; train more shadows or give offline_a a number (e.g. 0.3)."
        )
    k = check_int("pseudo_target", pseudo_target, minimum=0, maximum=n - 1)
    others = torch.arange(n) != k
    member = mask[k]
    if bool(member.all()) or not bool(member.any()):
        raise InputError("the pseudo-target must train on some but not all examples.")
    best, best_auc = OFFLINE_A_GRID[0], -1.0
    for a in OFFLINE_A_GRID:
        scores = rmia_scores(
            r[k], r[others], mask[others], ~member, offline=True, gamma=gamma, offline_a=a,
            trim=trim,
        )  # fmt: skip
        auc = membership_auc(scores, member)
        if auc > best_auc:
            best, best_auc = a, auc
    return best


def _audit_rmia(a: MembershipAudit) -> torch.Tensor:
    """LiRA's shadows (same recipe, population *train + test*, seed, count, assignment: the same
    cache) as reference models; the population ``z``: the audited non-members (test split)."""
    rmia = RMIA(
        a.shadow_recipe(), train_plus_test(a.train, a.test), a.shadows, seed=a.seed,
        cache=a.cache, device=a.device, progress=a.progress, executor=a.executor,
        **{"queries": a.queries, **a.options},
    )  # fmt: skip
    rmia.fit(a.population_index)
    population = a.population_index >= len(a.train)
    scores = rmia.score(a.model, population, offline=a.offline)
    a.extra.update(
        queries=rmia.queries, gamma=rmia.gamma, temperature=rmia.temperature, trim=rmia.trim,
        population_z=int(population.sum()),
    )  # fmt: skip
    if a.offline:
        a.extra.update(offline_a=rmia.used_a, offline_a_tuned=rmia.shadows >= 3)
    assert rmia.shadow_models is not None
    a.extra.update(shadow_summary(rmia.shadow_models))
    return scores


@PRIVACY_ATTACKS.register(
    "rmia",
    "relative likelihood ratio Pr(x|target)/Pr(x) against population samples; few shadows",
    paper="Zarifzadeh, Liu, Chang, Shokri. Low-Cost High-Power Membership Inference Attacks. "
    "ICML 2024.",
    threat="black-box: the target's probabilities; the attacker knows the training recipe and "
    "holds a population that contains the audited examples and known non-members",
    inputs=("recipe", "population"),
    shadows=True,
    min_shadows=2,
    shadows_fix="RMIA uses LiRA's shadows: every example needs an OUT (online: and an IN) one.",
    offline="RMIA's offline Pr(x) from OUT models",
    audit=_audit_rmia,
    options=True,
    options_fixed=SHADOW_FIXED,
    offline_options=("offline_a",),
)
class RMIA(ReferenceAttack):
    """Zarifzadeh et al.'s robust membership-inference attack; see the module for the method.

    Zarifzadeh, Liu, Chang, Shokri, "Low-Cost High-Power Membership Inference Attacks",
    ICML 2024.

    Args:
        recipe: the target's training recipe (the attacker knows it).
        population: the data the reference (shadow) models are drawn from; it must hold the
            examples to audit and the population samples ``z``.
        shadows: reference models ``N`` (default 16, as LiRA, so that both share them; >= 2).
        gamma: the pairwise threshold on ``LR(x) / LR(z)`` (default 2).
        offline_a: ``a`` of the offline approximation of ``Pr(x)``, or ``"tune"`` (default):
            :func:`tune_offline_a` on the shadows, as the authors' library does (with 2
            shadows, which cannot be tuned on, :data:`DEFAULT_OFFLINE_A` = 0.3).
        temperature: the softmax temperature of ``Pr(x | theta)`` (default 2).
        trim: the proportion cut at each end of the reference models' mean (default 0.2).
        queries: 1 (the input) or 2 (input and mirror); ``None`` (default): 2 when the recipe
            trains with flips, else 1 (as LiRA).
        seed: seeds the assignment and every shadow (LiRA's with the same seed).
        cache: the shadow-model cache (see :func:`~trustlab.attacks.privacy.train_shadows`).
        device: where shadows train and predict.
        batch_size: inference batch size.
        progress: a progress bar over the shadows (only on a terminal).
        executor: where the shadows train (default None: in this process; ``"local"``,
            ``"ray"``: :func:`~trustlab.attacks.privacy.train_shadows`).

    ``rmia.fit(indices)`` trains (or loads) the shadows and records their probabilities on
    ``population[indices]`` (default: all), ``(N, m, Q)``; ``rmia.score(target, z, offline)``
    scores those ``m`` examples, ``(m,)`` float64 in ``[0, 1]``, against the population samples
    ``z`` (a boolean mask over the ``m`` examples or positions among them; default all).

    Example::

        rmia = RMIA(recipe, population, shadows=4).fit(indices)
        scores = rmia.score(target_model, population=is_known_nonmember, offline=True)
    """

    def __init__(
        self,
        recipe: ShadowRecipe,
        population: ArrayDataset,
        shadows: int = 16,
        *,
        gamma: float = 2.0,
        offline_a: float | Literal["tune"] = "tune",
        temperature: float = 2.0,
        trim: float = 0.2,
        queries: int | None = None,
        seed: int = 0,
        cache: bool | str | Path = True,
        device: str | torch.device = "auto",
        batch_size: int = 512,
        progress: bool = True,
        executor: str | Executor | None = None,
    ) -> None:
        if not (math.isfinite(gamma) and gamma > 0):
            raise InputError(f"gamma must be finite and > 0, got {gamma}.")
        if offline_a != "tune" and not (
            isinstance(offline_a, int | float) and 0.0 <= offline_a <= 1.0
        ):
            raise InputError(f"offline_a must be 'tune' or lie in [0, 1], got {offline_a!r}.")
        if not 0.0 <= trim < 0.5:
            raise InputError(f"trim must lie in [0, 0.5), got {trim}.")
        if not (math.isfinite(temperature) and temperature > 0):
            raise InputError(f"temperature must be finite and > 0, got {temperature}.")
        super().__init__(
            recipe, population, shadows, queries=queries, seed=seed, cache=cache, device=device,
            batch_size=batch_size, progress=progress, executor=executor,
            shadows_fix="RMIA uses LiRA's shadows: every example needs an OUT (online: and an IN) "
            "one.",
        )  # fmt: skip
        self.gamma, self.trim = float(gamma), float(trim)
        self.offline_a: float | str = offline_a if offline_a == "tune" else float(offline_a)
        self.used_a: float | None = None  # the a of the last offline score
        self.temperature = float(temperature)

    def statistic(self, model: nn.Module, data: ArrayDataset) -> torch.Tensor:
        """``Pr(x | theta)`` per query, ``(m, Q)`` (:func:`query_probability`)."""
        return query_probability(
            model, data, self.queries, self.temperature, self.batch_size, self.device
        )

    @property
    def reference_p(self) -> torch.Tensor | None:
        """The reference models' ``Pr(x | theta)`` on the fitted examples, ``(N, m, Q)``."""
        return self.reference

    def target_p(self, model: nn.Module) -> torch.Tensor:
        """The target's ``Pr(x | theta)`` ``(m, Q)`` on the fitted examples."""
        return self.target_stat(model)

    def score(
        self,
        model: nn.Module,
        population: torch.Tensor | None = None,
        offline: bool = False,
    ) -> torch.Tensor:
        """RMIA scores (float64 in ``[0, 1]``, higher = member) of ``model`` on
        ``population[indices]``, against the population samples ``population`` (default all)."""
        t = self.target_p(model)
        reference, in_mask = self.fitted()
        a = DEFAULT_OFFLINE_A
        if offline:
            a = self.resolve_offline_a()
            self.used_a = a
        return rmia_scores(
            t, reference, in_mask, population, offline=offline, gamma=self.gamma,
            offline_a=a, trim=self.trim,
        )  # fmt: skip

    def resolve_offline_a(self) -> float:
        """The offline ``a``: the number given, or with ``"tune"`` the one
        :func:`tune_offline_a` picks on the fitted shadows (>= 3 of them; with 2,
        :data:`DEFAULT_OFFLINE_A`)."""
        if self.offline_a != "tune":
            return float(self.offline_a)
        reference, in_mask = self.fitted()
        if reference.shape[0] < 3:
            return DEFAULT_OFFLINE_A
        return tune_offline_a(reference, in_mask, gamma=self.gamma, trim=self.trim)
