"""Empirical DP auditing of a training recipe: what ``trustlab audit-dp RUN`` calls.

:func:`audit_dp` takes a finished ``train`` run (its stored :class:`~trustlab.config.TrainConfig`:
dataset, model, optimisation, ``dp`` settings) or a recipe (a ``TrainConfig`` or its dict),
retrains that recipe with canaries, scores them, and reports empirical lower bounds on epsilon
(:mod:`trustlab.metrics.dp_audit`) next to the accountant's epsilon and delta
(:mod:`trustlab.train.dp`, Opacus' accountant). Papers: Jagielski, Ullman, Oprea (NeurIPS 2020)
and Nasr, Song, Thakurta, Papernot, Carlini (S&P 2021) for the Clopper-Pearson bound; Steinke,
Nasr, Jagielski (NeurIPS 2023) for the one-run bound.

**Canaries: mislabelled training examples.** ``canaries`` examples are drawn (seeded) from the
training split and given a uniformly random *other* label; the rest of the split is the base
training set, always trained on. A mislabelled example is the standard black-box canary (Nasr
et al.'s "mislabeled" input adversary, Steinke et al.'s input-space audit): the rest of the data
argue against its label, so only memorising it lowers its loss, and its loss separates "in" from
"out" more than a correctly labelled example's would. Input-space canaries crafted to be
outliers (Jagielski et al.'s ClipBKD) or gradient canaries (white-box) are not implemented. The
attack's score is the canary label's log-probability, ``-CE(f(x), y_canary)``
(:func:`trustlab.attacks.privacy.membership.loss_scores`, higher = "in"); both bounds depend on
the scores' order only, so the loss, the confidence and LiRA's logit scaling give the same bound
for one model.

**Methods.**

- ``"one-run"`` (default): Steinke et al. Each canary is included independently with probability
  1/2; one training; the bound of :func:`~trustlab.metrics.dp_audit.one_run_audit` (guesses on
  the highest- and lowest-scoring canaries; searched over a grid with the Bonferroni correction
  unless ``k_pos``/``k_neg`` are given). The one proven bound from one training.
- ``"cp"`` without ``trials``: the same single training, read as ``m`` membership trials, one
  per canary: :func:`~trustlab.metrics.dp_audit.cp_audit` on the scores of the included vs the
  excluded canaries. The Clopper-Pearson intervals assume the ``m`` trials are independent, which
  one training does not guarantee (the canaries share a model; Steinke et al.'s analysis is what
  removes that assumption), so this number is a heuristic, reported next to the one-run bound
  (both come from the same training); it is the heuristic of drawing several samples per trained
  model that Zanella-Beguelin et al. (ICML 2023) adapt and validate.
- ``"cp"`` with ``trials=T``: Jagielski et al.'s and Nasr et al.'s protocol: ``T`` trainings with
  the whole canary set and ``T`` without it (``2T`` trainings; each with its own seed), one
  score per training (the mean score of the canaries), Clopper-Pearson over the ``T + T``
  independent trials; with more than one canary the bound is for the group guarantee (module
  docstring of :mod:`trustlab.metrics.dp_audit`). This is the valid multi-training audit; its
  cost is ``2T`` trainings, so it runs only when asked (``T`` of a few hundred, as the papers
  use, is a GPU job).

**The retraining.** The recipe is the run's, trained by :class:`~trustlab.attacks.privacy.
ShadowRecipe` (the shadow models' recipe: model, settings, loss, DP-SGD). The training set is the
base set plus the included canaries, so it is smaller than the run's by about ``m / 2``
examples. A recipe with a *target* epsilon has its noise multiplier fixed before the canaries
are drawn, for the expected training-set size ``|base| + m / 2`` (sampling rate and steps as
:mod:`trustlab.train.dp` computes them), so the noise does not depend on which canaries were
included (an algorithm whose sigma is a function of its data is not the one the accountant
analyses); the accountant's epsilon of the audited training (its actual size) is reported, and
the stored run's own epsilon beside it. Auditing a stored run with a target epsilon reuses the
run's own sigma (its summary's ``noise_multiplier``, found for the run's training-set size), so
the audited noise is the run's and no search runs. ``base_size`` trains on a class-stratified
subset of the base set (tests, smoke runs). Everything is seeded: the canaries, their labels,
the inclusions and each training (``derive_seed(seed, ...)``), so the same seed gives the same
numbers on CPU.

**Record.** A run of kind ``dp-audit`` whose summary holds ``epsilon_lb`` (the method's bound),
``one_run_epsilon_lb`` and ``cp_epsilon_lb`` (single-training modes: both; and
``one_run_epsilon_max``, the largest one-run bound that many canaries can give: a bound near it
says "more canaries", e.g. 0 with fewer than 8, 2.3 with 32, 4.4 with 256), the accountant's
``epsilon``, ``delta`` and ``noise_multiplier`` (``epsilon`` None for a non-private recipe), the
canary counts, the audited model's test accuracy and the seconds; ``scores.json`` holds every
canary's index, labels, inclusion and score.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from trustlab.attacks.privacy.membership import loss_scores
from trustlab.attacks.privacy.shadows import ShadowRecipe
from trustlab.config import TrainConfig
from trustlab.data.datasets import ArrayDataset
from trustlab.errors import InputError
from trustlab.metrics.dp_audit import (
    DEFAULT_CONFIDENCE,
    AuditBound,
    cp_audit,
    one_run_audit,
    one_run_epsilon,
)
from trustlab.metrics.privacy import membership_auc
from trustlab.results import Run, RunStore, recording_outcome
from trustlab.train.dp import DPSettings, accounted_rate, sample_rate
from trustlab.train.evaluate import evaluate
from trustlab.utils.device import resolve_device
from trustlab.utils.io import write_json_atomic
from trustlab.utils.progress import progress_bar
from trustlab.utils.seed import derive_seed, generator
from trustlab.utils.validate import check_int, parse_config

__all__ = [
    "DEFAULT_CANARIES",
    "DEFAULT_DELTA",
    "KIND",
    "METHODS",
    "CanarySet",
    "DPAuditResult",
    "audit_dp",
    "audit_recipe",
    "make_canaries",
]

#: the store's kind of an audit run
KIND = "dp-audit"
METHODS = ("one-run", "cp")
#: canaries of a single-training audit unless told (Steinke et al. use 1,000 of CIFAR-10's 50,000)
DEFAULT_CANARIES = 256
#: the delta a non-private recipe is audited at (DP-SGD recipes: their own)
DEFAULT_DELTA = 1e-5
Method = Literal["one-run", "cp"]


@dataclass
class CanarySet:
    """The canaries of one audit and the base training set.

    Attributes:
        base: the training examples that are always trained on.
        canaries: ``(m, ...)`` the canary examples with their canary (flipped) labels.
        index: ``(m,)`` their positions in the training split.
        original: ``(m,)`` their original labels.

    Example:
        >>> cs = make_canaries(train, 64, seed=0)
        >>> bool((cs.canaries.y != cs.original).all())
        True
    """

    base: ArrayDataset
    canaries: ArrayDataset
    index: torch.Tensor
    original: torch.Tensor


@dataclass
class DPAuditResult:
    """What :func:`audit_recipe` measured.

    Attributes:
        method: ``"one-run"`` or ``"cp"``.
        epsilon_lb: the method's lower bound.
        bounds: every bound computed, by name (``"one-run"``, ``"cp"``).
        privacy: the accountant's report of the (first) audited training (epsilon, delta,
            noise_multiplier, ...), None for a non-private recipe.
        delta: the delta the bounds were computed at.
        scores: the canaries' scores (one-run / per-canary CP: ``(m,)``; trials: ``(2T,)``,
            the in-trainings first).
        is_in: membership of each score.
        summary: the flat record stored as the run's summary.
    """

    method: str
    epsilon_lb: float
    bounds: dict[str, AuditBound]
    privacy: dict[str, float | bool] | None
    delta: float
    scores: torch.Tensor
    is_in: torch.Tensor
    canaries: CanarySet
    summary: dict[str, Any] = field(default_factory=dict)


def make_canaries(train: ArrayDataset, m: int, seed: int) -> CanarySet:
    """``m`` examples of ``train`` drawn with ``seed``, each relabelled with a uniformly random
    other class (the canaries), and the rest of ``train`` (the base set)."""
    k = train.num_classes
    if k < 2:
        raise InputError("label-flip canaries need at least 2 classes in the training split.")
    m = check_int("canaries", m, minimum=1, maximum=len(train) - 1,
                  fix="(fewer than the training split's examples)")  # fmt: skip
    g = generator(derive_seed(seed, "dp-audit", "canaries"))
    order = torch.randperm(len(train), generator=g)
    index, rest = order[:m].sort().values, order[m:].sort().values
    original = train.y[index].clone()
    shift = torch.randint(1, k, (m,), generator=g)
    canaries = train.subset(index)
    canaries = ArrayDataset(
        canaries.x, (original + shift) % k, train.classes, train.mean, train.std,
        name=f"{train.name}:canaries", validate=False,
    )  # fmt: skip
    return CanarySet(train.subset(rest), canaries, index, original)


def _with_rows(base: ArrayDataset, extra: ArrayDataset, keep: torch.Tensor) -> ArrayDataset:
    return ArrayDataset(
        torch.cat([base.x, extra.x[keep]]), torch.cat([base.y, extra.y[keep]]), base.classes,
        base.mean, base.std, name=f"{base.name}+canaries", validate=False,
    )  # fmt: skip


def _fixed_noise(recipe: ShadowRecipe, n_expected: int, sigma: float | None = None) -> ShadowRecipe:
    """A DP recipe with a target epsilon, its sigma fixed: ``sigma`` when given (a stored run's),
    else found for ``n_expected`` training examples as :class:`~trustlab.train.dp.
    PrivateTraining` would find it for that size."""
    dp = recipe.settings.dp
    if dp is None or dp.epsilon is None:
        return recipe
    if sigma is None:
        import warnings

        from opacus.accountants.utils import get_noise_multiplier

        q = sample_rate(n_expected, recipe.settings.batch_size)
        steps = recipe.settings.epochs * int(1 / q)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sigma = float(
                get_noise_multiplier(
                    target_epsilon=dp.epsilon, target_delta=dp.delta,
                    sample_rate=accounted_rate(q), steps=steps, accountant=dp.accountant,
                )
            )  # fmt: skip
    fixed = DPSettings(**{**dp.model_dump(), "epsilon": None, "noise_multiplier": sigma})
    settings = recipe.settings.model_copy(update={"dp": fixed})
    return ShadowRecipe(recipe.spec, settings, recipe.loss_fn, recipe.make_compute_loss, recipe.key)


def _privacy(result: Any, target: float | None) -> dict[str, float | bool] | None:
    if result.privacy is None:
        return None
    out = dict(result.privacy)
    if target is not None:
        out["target_epsilon"] = target
    return out


def audit_recipe(
    recipe: ShadowRecipe,
    train: ArrayDataset,
    test: ArrayDataset | None = None,
    *,
    canaries: int | None = None,
    method: Method = "one-run",
    trials: int | None = None,
    confidence: float = DEFAULT_CONFIDENCE,
    threshold: str | float = "bonferroni",
    k_pos: int | None = None,
    k_neg: int | None = None,
    delta: float | None = None,
    base_size: int | None = None,
    seed: int = 0,
    device: str | torch.device = "auto",
    progress: bool = False,
    noise_multiplier: float | None = None,
) -> DPAuditResult:
    """Retrain ``recipe`` on ``train`` with canaries and bound its epsilon (module docstring).

    Args:
        recipe: the training recipe (model spec, settings with ``dp``, loss).
        train: the training split (canaries are drawn from it, the rest is the base set).
        test: the test split, for the audited model's accuracy (optional).
        canaries: ``m``, the number of canaries (default 256); with ``trials``: the canary
            group trained on together (default 1, Nasr et al.'s single canary: no group
            privacy).
        method: ``"one-run"`` (default) or ``"cp"``.
        trials: ``"cp"`` only: ``T`` trainings with and ``T`` without the canary set; None
            (default): the single-training reading (one trial per canary).
        confidence: of every bound (default 0.95).
        threshold: ``"bonferroni"`` (default), ``"max"``, and for ``"cp"`` also ``"split"`` or
            a number (:mod:`trustlab.metrics.dp_audit`).
        k_pos, k_neg: the one-run guesses (default: a searched grid).
        delta: the delta the bounds test (default: the recipe's DP delta, else 1e-5).
        base_size: train on a class-stratified subset of this many base examples (default all).
        seed: canaries, inclusions and trainings.
        device: where the models train.
        progress: a progress bar over the trainings of ``trials``.
        noise_multiplier: for a recipe with a target epsilon, the sigma to train with (a stored
            run's); default None: found for the expected training-set size.
    """
    if canaries is None:
        canaries = DEFAULT_CANARIES if trials is None else 1
    _check_args(method, trials, threshold, k_pos, k_neg, canaries, len(train), confidence, delta,
                base_size)  # fmt: skip
    dp = recipe.settings.dp
    delta = float(delta) if delta is not None else (dp.delta if dp is not None else DEFAULT_DELTA)
    dev = resolve_device(device)
    cs = make_canaries(train, canaries, seed)
    base = cs.base
    if base_size is not None:
        base = base.stratified(base_size, seed=derive_seed(seed, "dp-audit", "base") % 2**31)
        cs = CanarySet(base, cs.canaries, cs.index, cs.original)
    m = len(cs.canaries)
    start = time.perf_counter()
    target = dp.epsilon if dp is not None else None
    bounds: dict[str, AuditBound] = {}
    summary: dict[str, Any] = {}
    if trials is None:
        g = generator(derive_seed(seed, "dp-audit", "include"))
        is_in = torch.rand(m, generator=g) < 0.5
        fixed = _fixed_noise(recipe, len(base) + m // 2, noise_multiplier)
        result = fixed.fit(_with_rows(base, cs.canaries, is_in), derive_seed(seed, "dp-audit",
                           "train") % 2**31, dev)  # fmt: skip
        model = result.model.eval()
        scores = loss_scores(model, cs.canaries, device=dev)
        privacy = _privacy(result, target)
        bounds["one-run"] = one_run_audit(
            scores, is_in, delta=delta, confidence=confidence, k_pos=k_pos, k_neg=k_neg,
            threshold="max" if threshold == "max" else "bonferroni",
        )  # fmt: skip
        if is_in.any() and (~is_in).any():
            bounds["cp"] = cp_audit(
                scores[is_in], scores[~is_in], delta=delta, confidence=confidence,
                threshold=threshold if method == "cp" else "bonferroni",
                seed=derive_seed(seed, "dp-audit", "split") % 2**31,
            )  # fmt: skip
            summary["canary_auc"] = membership_auc(scores, is_in)
        # the most m canaries can show (every one guessed, all right): 0 below 8 canaries
        ceiling = float(one_run_epsilon(m, m, m, delta=delta, confidence=confidence))
        summary.update(canaries=m, included=int(is_in.sum()), trainings=1,
                       one_run_epsilon_max=ceiling)  # fmt: skip
    else:
        fixed = _fixed_noise(recipe, len(base) + m, noise_multiplier)
        every = torch.ones(m, dtype=torch.bool)
        sets = (_with_rows(base, cs.canaries, every), base)
        rows, privacy, model = [], None, None
        with progress_bar("DP audit trainings", 2 * trials, progress) as bar:
            for with_canaries in (True, False):
                for t in range(trials):
                    s = derive_seed(seed, "dp-audit", "trial", with_canaries, t) % 2**31
                    res = fixed.fit(sets[0] if with_canaries else sets[1], s, dev)
                    if privacy is None:
                        privacy, model = _privacy(res, target), res.model.eval()
                    rows.append(float(loss_scores(res.model.eval(), cs.canaries, device=dev)
                                      .mean()))  # fmt: skip
                    bar.advance()
        scores = torch.tensor(rows, dtype=torch.float64)
        is_in = torch.arange(2 * trials) < trials
        bounds["cp"] = cp_audit(
            scores[is_in], scores[~is_in], delta=delta, confidence=confidence,
            threshold=threshold, group=m, seed=derive_seed(seed, "dp-audit", "split") % 2**31,
        )  # fmt: skip
        summary.update(canaries=m, included=m, trainings=2 * trials, trials=trials)
    chosen = bounds[method]
    eps = privacy["epsilon"] if privacy is not None else None
    summary.update(
        {
            "method": method,
            "epsilon_lb": chosen.epsilon,
            **{f"{k.replace('-', '_')}_epsilon_lb": b.epsilon for k, b in bounds.items()},
            "epsilon": eps if eps is not None and math.isfinite(eps) else None,
            "delta": delta,
            "confidence": confidence,
            "threshold": threshold if isinstance(threshold, str) else float(threshold),
            "noise_multiplier": privacy["noise_multiplier"] if privacy is not None else 0.0,
            "base_examples": len(base),
            "audit_seconds": round(time.perf_counter() - start, 3),
            **{f"{k.replace('-', '_')}_{d}": v for k, b in bounds.items()
               for d, v in b.detail.items() if d in ("k_pos", "k_neg", "guesses", "correct",
                                                     "tests")},
        }
    )  # fmt: skip
    if target is not None:
        summary["target_epsilon"] = target
    if test is not None and model is not None:
        summary["test_accuracy"] = evaluate(model, test, device=dev)["accuracy"]
    return DPAuditResult(method, chosen.epsilon, bounds, privacy, delta, scores, is_in, cs, summary)


def _train_run(store: RunStore, target: int | str | Run) -> Run:
    run = store.get(target.id if isinstance(target, Run) else target)
    if run.kind != "train":
        raise InputError(
            f"run {run.id} is a {run.kind!r} run; the DP audit retrains a `trustlab train` "
            "recipe (pass such a run's id, e.g. one trained with --dp)."
        )
    if run.status != "finished":
        raise InputError(
            f"run {run.id} is {run.status}; finish it first (`trustlab resume {run.id}`)."
        )
    return run


def audit_dp(
    target: int | str | Run | TrainConfig | dict[str, Any],
    *,
    canaries: int | None = None,
    method: Method = "one-run",
    trials: int | None = None,
    confidence: float = DEFAULT_CONFIDENCE,
    threshold: str | float = "bonferroni",
    k_pos: int | None = None,
    k_neg: int | None = None,
    delta: float | None = None,
    base_size: int | None = None,
    device: str = "auto",
    seed: int = 0,
    progress: bool = True,
    store: RunStore | None = None,
    name: str | None = None,
) -> tuple[Run, DPAuditResult]:
    """Audit a training run's recipe (or a recipe) for DP with canaries; stores a ``dp-audit``
    run. Arguments as :func:`audit_recipe`; ``target``: a finished ``train`` run (id,
    ``"run-000007"`` or a :class:`Run`) or a :class:`TrainConfig` (or its dict).

    Returns:
        ``(run, result)``: the finished ``dp-audit`` run and the :class:`DPAuditResult`.

    Example::

        run, result = audit_dp(7, canaries=256)  # run 7: `trustlab train --dp --epsilon 4`
        result.epsilon_lb, result.privacy["epsilon"]
    """
    from trustlab.workflows.mia import _unhandled, shadow_recipe
    from trustlab.workflows.train import prepare

    seed = check_int("--seed", seed, minimum=0)
    if canaries is None:
        canaries = DEFAULT_CANARIES if trials is None else 1
    store = store or RunStore()
    source: Run | None = None
    if isinstance(target, (TrainConfig, dict)):
        data = target.model_dump() if isinstance(target, TrainConfig) else dict(target)
    else:
        source = _train_run(store, target)
        data = dict(source.config)
    cfg = parse_config(TrainConfig, {**data, "device": device})
    if bad := _unhandled(cfg):
        raise InputError(
            f"the recipe sets {', '.join(bad)}, which a retraining cannot reproduce yet; audit a "
            "run trained without them."
        )
    prep = prepare(cfg)
    recipe = shadow_recipe(prep)
    config = {
        "target": source.id if source is not None else None,
        "recipe": None if source is not None else cfg.model_dump(),
        "method": method, "canaries": canaries, "trials": trials, "confidence": confidence,
        "threshold": threshold, "k_pos": k_pos, "k_neg": k_neg, "delta": delta,
        "base_size": base_size, "seed": seed, "device": str(device),
    }  # fmt: skip
    label = f"run{source.id}" if source is not None else f"{cfg.model}-{cfg.dataset}"
    # the cheap checks of audit_recipe first, so bad input stores nothing
    _check_args(method, trials, threshold, k_pos, k_neg, canaries, len(prep.train), confidence,
                delta, base_size)  # fmt: skip
    # a stored DP run with a target epsilon: its own sigma (no search, the audited noise is the
    # run's)
    sigma = source.summary.get("noise_multiplier") if source is not None else None
    run = store.create_run(KIND, name or f"dp-audit-{method}-{label}", config, seed=seed)
    with recording_outcome(run):
        result = audit_recipe(
            recipe, prep.train, prep.test, canaries=canaries, method=method, trials=trials,
            confidence=confidence, threshold=threshold, k_pos=k_pos, k_neg=k_neg, delta=delta,
            base_size=base_size, seed=seed, device=device, progress=progress,
            noise_multiplier=float(sigma) if sigma else None,
        )  # fmt: skip
        if source is not None and "epsilon" in source.summary:
            result.summary["run_epsilon"] = source.summary["epsilon"]
        cs = result.canaries
        write_json_atomic(
            run.artifact_path("scores.json"),
            {
                "method": method, "bounds": {k: _jsonable(b.to_dict())
                                             for k, b in result.bounds.items()},
                "canary_index": cs.index.tolist(), "original_label": cs.original.tolist(),
                "canary_label": cs.canaries.y.tolist(),
                "score": result.scores.tolist(), "is_in": result.is_in.tolist(),
            },
        )  # fmt: skip
        run.add_artifact("scores.json", kind="scores")
        run.finish(result.summary)
    return run.refresh(), result


def _jsonable(d: dict[str, Any]) -> dict[str, Any]:
    return {k: (v.item() if hasattr(v, "item") else v) for k, v in d.items()}


def _check_args(
    method: str,
    trials: int | None,
    threshold: str | float,
    k_pos: int | None,
    k_neg: int | None,
    canaries: int,
    n_train: int,
    confidence: float,
    delta: float | None,
    base_size: int | None,
) -> None:
    """What :func:`audit_recipe` would refuse, checked before anything is trained or stored
    (the messages name the command's flags)."""
    if method not in METHODS:
        raise InputError(f"unknown audit method {method!r}; use one of {', '.join(METHODS)}.")
    if trials is not None and method != "cp":
        raise InputError("--trials (several trainings) goes with --method cp.")
    if method == "one-run" and threshold not in ("bonferroni", "max"):
        raise InputError(
            f"--threshold {threshold} does not apply to the one-run bound; use bonferroni or "
            "max (or fix the guesses with --k-pos/--k-neg)."
        )
    if method == "cp" and (k_pos is not None or k_neg is not None):
        raise InputError("--k-pos/--k-neg are the one-run guesses; drop them with --method cp.")
    if isinstance(threshold, str) and threshold not in ("bonferroni", "split", "max"):
        raise InputError(
            f"--threshold must be bonferroni, split, max or a number, got {threshold!r}."
        )
    check_int("--canaries", canaries, minimum=1, maximum=n_train - 1,
              fix="(fewer than the training split's examples)")  # fmt: skip
    if trials is not None:
        check_int("--trials", trials, minimum=1)
    if base_size is not None:
        check_int("--base-size", base_size, minimum=1)
    if not (isinstance(confidence, int | float) and 0 < confidence < 1):
        raise InputError(f"--confidence must be in (0, 1), e.g. 0.95; got {confidence}.")
    if delta is not None and not (isinstance(delta, int | float) and 0 <= delta < 1):
        raise InputError(f"--delta must be in [0, 1), e.g. 1e-5; got {delta}.")
    if (k_pos is None) != (k_neg is None):
        raise InputError("give both --k-pos and --k-neg (the guesses), or neither (a grid).")
    if (
        k_pos is not None
        and k_neg is not None
        and (k_pos < 0 or k_neg < 0 or k_pos + k_neg > canaries or k_pos + k_neg == 0)
    ):
        raise InputError(
            f"--k-pos + --k-neg guesses must be between 1 and the {canaries} canaries (both >= 0);"
            f" got --k-pos {k_pos}, --k-neg {k_neg}."
        )
