"""Membership inference against a finished training run: what ``trustlab mia RUN`` calls.

:func:`run_mia` loads a finished ``train`` run from the results store (its
:class:`~trustlab.config.TrainConfig` and ``model.safetensors``) and audits it:

- **members**: ``n`` examples drawn (seeded) from the run's training split, exactly as the
  target saw them (label noise in the config is replayed by
  :func:`trustlab.workflows.train.prepare`, so members carry the labels the model trained on);
  **non-members**: ``n`` examples of its test split. Default ``n``: the smaller split's size, so
  the audit is balanced.
- **attacks** (every name of :data:`~trustlab.registry.PRIVACY_ATTACKS`; each card's ``audit``
  hook scores the audit, :mod:`trustlab.attacks.privacy.audit`): ``loss`` (Yeom et al.'s loss
  threshold), ``confidence`` (the
  maximum softmax probability), ``shokri`` (shadow models on the test split, the attacker's data
  disjoint from the target's training set, each on a random half of it; the audited non-members
  are part of that data, which leaks nothing about the target: the attack models never see the
  target's outputs while training) and ``lira`` (online by default, ``offline=True`` for the
  one-sided test; shadows on random halves of the population *train + test*, which holds every
  audited example, each IN for half of the shadows), ``rmia`` (LiRA's shadows, the same cache,
  as its reference models; the audited non-members as its population ``z``), and the
  label-only attacks (``label-only``, ``label-only-hsj``, ``label-only-augment``: argmax labels
  of chosen queries only, no shadows). ``options`` sets an attack's own parameters. Shadow
  models are trained with the run's
  own recipe (model, settings, loss, adversarial training, DP-SGD settings) and cached in the
  results store (``$TRUSTLAB_HOME/cache/shadows``): a rerun, or a run killed and restarted, trains
  only the missing ones.
- **record**: a store run of kind ``mia`` whose summary holds the attack's
  :func:`~trustlab.metrics.privacy.membership_metrics` (``auc``, ``tpr_at_1fpr``,
  ``tpr_at_01fpr``, ``advantage``), the loss-threshold baseline of the same audit (``loss_*``,
  for comparison), the target's accuracy on the audited members and non-members, and the shadow
  bookkeeping; artefacts ``scores.json`` (every audited example's split, index and scores) and
  ``roc.png`` (log-log ROC of the attack and the baseline), both written atomically.

Deviation from the papers' setting: LiRA's shadows train on ``(|train| + |test|) / 2`` examples,
the target on ``|train|`` (the papers train the target on a random half too). Shokri's shadows
train on ``|test| / 2`` examples.

Everything a user can get wrong (unknown attack or option, too few shadows, a run that is not a
finished training run or has no model, ``n`` out of range) raises
:class:`~trustlab.errors.InputError` before the run is created.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from trustlab.attacks.privacy.audit import MembershipAudit, check_options, train_plus_test
from trustlab.attacks.privacy.membership import loss_scores
from trustlab.attacks.privacy.shadows import ShadowRecipe
from trustlab.config import TrainConfig
from trustlab.errors import InputError
from trustlab.metrics.detection import roc_curve
from trustlab.metrics.privacy import membership_metrics
from trustlab.registry import PRIVACY_ATTACKS
from trustlab.results import Run, RunStore, recording_outcome
from trustlab.results.plots import curves_png
from trustlab.train.checkpoint import load_model
from trustlab.train.evaluate import evaluate
from trustlab.train.trainer import TrainSettings, check_model_fits
from trustlab.utils.device import resolve_device
from trustlab.utils.executor import Executor, make_executor
from trustlab.utils.io import write_json_atomic
from trustlab.utils.seed import derive_seed, generator
from trustlab.utils.validate import check_int, parse_config
from trustlab.workflows.privacy_defense import KIND as DEFENDED
from trustlab.workflows.privacy_defense import training_config
from trustlab.workflows.train import Prepared, adversarial_loss, prepare

__all__ = ["MIAResult", "run_mia", "shadow_recipe"]

#: the attack whose metrics every audit reports next to the chosen one's (``loss_*``)
BASELINE = "loss"
#: TrainConfig keys outside TrainSettings that :func:`shadow_recipe` reproduces (through
#: ``prepare``); a new key with a non-default value is refused for shadow attacks until handled
_HANDLED = frozenset(
    {
        "dataset", "model", "model_kwargs", "data_root", "download", "device", "loss", "alpha",
        "beta", "loss_kwargs", "noise", "adv", "eps", "adv_alpha", "adv_steps", "name",
    }
)  # fmt: skip
_NOT_RECIPE = frozenset({"name", "device", "data_root", "download"})


@dataclass
class MIAResult:
    """What :func:`run_mia` measured. Examples are ordered members first, then non-members."""

    attack: str
    metrics: dict[str, float]
    scores: torch.Tensor
    is_member: torch.Tensor
    member_index: torch.Tensor  # positions in the training split
    nonmember_index: torch.Tensor  # positions in the test split
    baseline: dict[str, float] | None = None  # the loss attack's metrics (attack != "loss")
    summary: dict[str, Any] = field(default_factory=dict)


def shadow_recipe(prep: Prepared) -> ShadowRecipe:
    """The recipe of a prepared training config, as ``_run_fit`` trains it: the config's
    :class:`TrainSettings` fields, its loss, and its adversarial-training loss built afresh for
    each shadow's seed (label smoothing then lives in that loss)."""
    cfg = prep.config
    settings = TrainSettings(**{k: getattr(cfg, k) for k in TrainSettings.model_fields})
    make = None
    if prep.compute_loss is not None:
        settings = settings.model_copy(update={"label_smoothing": 0.0})

        def make(seed: int) -> Any:
            return adversarial_loss(cfg.model_copy(update={"seed": seed}))

    fields = set(TrainSettings.model_fields)
    key = {k: v for k, v in cfg.model_dump().items() if k not in fields and k not in _NOT_RECIPE}
    return ShadowRecipe(prep.spec, settings, prep.loss_fn, make, key)


def _unhandled(cfg: TrainConfig) -> list[str]:
    fields = set(TrainSettings.model_fields) | _HANDLED
    defaults = TrainConfig.model_fields
    return sorted(
        k for k, v in cfg.model_dump().items()
        if k not in fields and v != defaults[k].get_default(call_default_factory=True)
    )  # fmt: skip


def _target_run(store: RunStore, target: int | str | Run) -> Run:
    run = store.get(target.id if isinstance(target, Run) else target)
    if run.kind not in ("train", DEFENDED):
        raise InputError(
            f"run {run.id} is a {run.kind!r} run; membership inference audits a model trained by "
            "`trustlab train` or defended by `trustlab defend-privacy` (pass such a run's id)."
        )
    if run.status != "finished":
        raise InputError(
            f"run {run.id} is {run.status}; finish it first (`trustlab resume {run.id}`)."
        )
    if not (run.dir / "model.safetensors").is_file():
        raise InputError(
            f"run {run.id} has no model.safetensors in {run.dir}; retrain it with `trustlab train`."
        )
    return run


def _roc_png(
    path: Any,
    curves: dict[str, tuple[torch.Tensor, torch.Tensor]],
    n: int,
    metrics: dict[str, dict[str, float]] | None = None,
    title: str | None = None,
) -> dict:
    """The log-log ROC of each attack's scores (from ``floor = min(1e-3, 1/n)`` to 1) with the
    chance diagonal, a dotted line at 1% FPR and a legend of each curve's AUC and TPR at 1% FPR
    (from ``metrics[name]``, the run's own numbers; else computed here). Returns the colours."""
    floor = min(1e-3, 1.0 / max(n, 1))
    rocs, labels = {}, {}
    for name, (scores, member) in curves.items():
        fpr, tpr, _ = roc_curve(scores, member)
        rocs[name] = (fpr.tolist(), tpr.tolist())
        m = (metrics or {}).get(name) or membership_metrics(scores, member)
        labels[name] = f"{name}: AUC {m['auc']:.3f}, TPR {m['tpr_at_1fpr']:.1%} at 1% FPR"
    legend = curves_png(
        path, rocs, log_floor=floor, labels=labels, marks=(0.01,),
        title=title or "membership inference ROC (log-log)",
    )  # fmt: skip
    return {name: list(rgb) for name, rgb in legend.items()}


def run_mia(
    target: int | str | Run,
    attack: str = "lira",
    shadows: int = 16,
    offline: bool = False,
    n: int | None = None,
    *,
    device: str = "auto",
    seed: int = 0,
    progress: bool = True,
    fix_variance: bool | None = None,
    queries: int | None = None,
    cache: bool | str | Path = True,
    store: RunStore | None = None,
    name: str | None = None,
    options: Mapping[str, Any] | None = None,
    executor: str | Executor | None = None,
) -> tuple[Run, MIAResult]:
    """Audit a finished training run with a membership-inference attack; see the module.

    Args:
        target: the training run (id, ``"run-000007"`` or a :class:`Run`).
        attack: a registered privacy attack: ``lira`` (default), ``rmia`` (LiRA's cached shadows
            as its reference models, the audited non-members as its population ``z``),
            ``shokri``, the threshold attacks ``loss``, ``confidence``, ``entropy``, or the
            label-only attacks ``label-only``, ``label-only-hsj``, ``label-only-augment``
            (``trustlab list privacy-attacks``).
        shadows: shadow models for the shadow attacks (``lira`` and ``rmia`` >= 2, ``shokri``
            >= 1; the card's ``min_shadows``); default 16.
        offline: the offline test: LiRA's one-sided test, RMIA's ``Pr(x)`` from OUT models.
        n: members audited (and as many non-members); default the smaller split's size.
        device: ``auto``, ``cpu`` or ``cuda[:N]``: where shadows train and models predict.
        seed: seeds the audit sample, the shadows and the attack models.
        progress: a progress bar over the shadow models (only on a terminal).
        fix_variance, queries: LiRA's options (see :class:`~trustlab.attacks.privacy.LiRA`).
        cache: the shadow-model cache: True (the results store's), a folder, or False.
        store: the results store (default ``$TRUSTLAB_HOME``).
        name: a label for the stored run.
        options: the attack's own parameters (e.g. ``{"gamma": 1}`` for RMIA, ``{"sigmas":
            [0.1, 0.2]}`` for ``label-only``); :func:`~trustlab.attacks.privacy.audit.
            option_names` lists what an attack takes; unknown keys are an error.
        executor: where shadow models train: None (default) in this process, ``"local"`` (this
            machine's process pool), ``"ray"`` (a Ray cluster) or an
            :class:`~trustlab.utils.executor.Executor` (docs/scaling.md).

    Returns:
        ``(run, result)``: the finished ``mia`` run and the :class:`MIAResult`.
    """
    card = PRIVACY_ATTACKS.get(attack)
    attack = card.name
    options = check_options(card, options)
    uses_shadows = bool(card.meta["shadows"])
    if uses_shadows:
        shadows = check_int(
            "--shadows", shadows, minimum=card.meta["min_shadows"],
            fix=card.meta.get("shadows_fix", ""),
        )  # fmt: skip
    if offline and not card.meta.get("offline"):
        with_offline = [c for c in PRIVACY_ATTACKS if c.meta.get("offline")]
        raise InputError(
            f"--offline is {' / '.join(c.meta['offline'] for c in with_offline)}; use it with "
            f"--attack {' or '.join(c.name for c in with_offline)}."
        )
    if not offline and (only := sorted(set(options) & set(card.meta.get("offline_options", ())))):
        raise InputError(
            f"option {', '.join(map(repr, only))} sets {card.meta['offline']}; add --offline "
            "(offline=True), or drop it."
        )
    if queries not in (None, 1, 2):
        raise InputError(f"queries must be 1 (the input) or 2 (input and mirror), got {queries}.")
    seed = check_int("--seed", seed, minimum=0)
    if executor is not None and not uses_shadows:
        raise InputError(
            f"--executor runs shadow models; --attack {attack} trains none: drop --executor."
        )
    store = store or RunStore()
    target_run = _target_run(store, target)
    # a defended run's config is its source run's (members: that training split) plus the
    # defense's keys
    cfg = parse_config(TrainConfig, {**training_config(target_run.config), "device": device})
    no_shadows = " or ".join(PRIVACY_ATTACKS.names(shadows=False))
    if uses_shadows and target_run.kind == DEFENDED:
        raise InputError(
            f"run {target_run.id} is a defended model: shadow models trained with its source "
            "recipe would not replay the defense, and an attack calibrated on them would "
            f"misjudge its risk; use --attack {no_shadows} (no shadow models)."
        )
    if uses_shadows and (bad := _unhandled(cfg)):
        raise InputError(
            f"run {target_run.id} sets {', '.join(bad)}, which the shadow models cannot "
            f"reproduce yet; use --attack {no_shadows} (no shadow models)."
        )
    dev = resolve_device(device)
    prep = prepare(cfg)
    train, test = prep.train, prep.test
    limit = min(len(train), len(test))
    if n is None:
        n = limit
    n = check_int("--n", n, minimum=1, maximum=limit, fix="(at most the smaller split's size)")
    model = load_model(target_run.dir / "model.safetensors", device=dev).eval()
    check_model_fits(model, train, test, dev)
    g = generator(derive_seed(seed, "mia-audit", target_run.id))
    member_index = torch.randperm(len(train), generator=g)[:n].sort().values
    nonmember_index = torch.randperm(len(test), generator=g)[:n].sort().values
    members, nonmembers = train.subset(member_index), test.subset(nonmember_index)
    audit = train_plus_test(members, nonmembers)
    is_member = torch.cat([torch.ones(n, dtype=torch.bool), torch.zeros(n, dtype=torch.bool)])
    recipe = shadow_recipe(prep) if uses_shadows else None
    options = check_options(card, options, audit, recipe)  # values too, before the run exists

    config = {
        "target": target_run.id, "attack": attack, "n": n, "seed": seed,
        "device": str(device), "shadows": shadows if uses_shadows else 0,
        "offline": offline, "fix_variance": fix_variance, "queries": queries,
        **({"options": options} if options else {}),
    }  # fmt: skip
    if executor is not None:  # only with shadows (checked above)
        config["executor"] = executor.name if isinstance(executor, Executor) else executor
    with contextlib.ExitStack() as owned:
        if isinstance(executor, str):  # made here: closed here
            executor = owned.enter_context(make_executor(executor))
        if executor is not None:
            executor.start()  # a wrong cluster address fails here, before a run is stored
        run = store.create_run("mia", name or f"mia-{attack}-run{target_run.id}", config, seed=seed)
        with recording_outcome(run):
            start = time.perf_counter()
            population_index = torch.cat([member_index, len(train) + nonmember_index])
            job = MembershipAudit(
                model, audit, train, test, population_index,
                recipe=recipe, shadows=shadows, seed=seed,
                cache=cache, device=dev, progress=progress, offline=offline,
                fix_variance=fix_variance, queries=queries, options=options, executor=executor,
            )  # fmt: skip
            scores = card.meta["audit"](job)
            extra = job.extra
            metrics = membership_metrics(scores, is_member)
            loss = loss_scores(model, audit, device=dev)
            baseline = membership_metrics(loss, is_member) if attack != BASELINE else None
            summary: dict[str, Any] = {
                **metrics,
                **({f"loss_{k}": v for k, v in baseline.items()} if baseline else {}),
                "members": n, "nonmembers": n,
                "member_accuracy": evaluate(model, members, device=dev)["accuracy"],
                "nonmember_accuracy": evaluate(model, nonmembers, device=dev)["accuracy"],
                "attack_seconds": round(time.perf_counter() - start, 3),
                **extra,
            }  # fmt: skip
            curves = {attack: (scores, is_member)}
            if baseline is not None:
                curves[BASELINE] = (loss, is_member)
            how = f"{attack}{' (offline)' if offline else ''}"
            how += f", {shadows} shadow models" if uses_shadows else ""
            legend = _roc_png(
                run.artifact_path("roc.png"), curves, n,
                {attack: metrics, **({BASELINE: baseline} if baseline is not None else {})},
                f"membership inference on run {target_run.id}: {how}\n"
                f"{n} members vs {n} non-members",
            )  # fmt: skip
            run.add_artifact("roc.png", kind="plot")
            write_json_atomic(
                run.artifact_path("scores.json"),
                {
                    "attack": attack, "target": target_run.id, "metrics": metrics,
                    "baseline_loss": baseline, "roc_legend": legend,
                    "members": {
                        "split": "train", "index": member_index.tolist(),
                        "score": scores[:n].tolist(), "loss_score": loss[:n].tolist(),
                    },
                    "nonmembers": {
                        "split": "test", "index": nonmember_index.tolist(),
                        "score": scores[n:].tolist(), "loss_score": loss[n:].tolist(),
                    },
                },
            )  # fmt: skip
            run.add_artifact("scores.json", kind="scores")
            run.finish(summary)
    result = MIAResult(
        attack, metrics, scores, is_member, member_index, nonmember_index, baseline, summary
    )
    return run.refresh(), result
