"""A privacy defense applied to a stored training run: what ``trustlab defend-privacy`` calls.

:func:`run_privacy_defense` loads a finished ``trustlab train`` run (its config, the
:class:`~trustlab.config.TrainConfig`, and its ``model.safetensors``), rebuilds the private
training split exactly as it was trained on (label noise included), defends the model and records
a **new run** (kind ``"defend-privacy"``) laid out like a training run:

- ``config.json``: the source run's training config unchanged (``dataset``, ``data_root``,
  ``model``, ... so that a membership-inference attack on the new run knows that the private
  members are the training split of that dataset), plus :data:`DEFENSE_KEYS`: ``source_run``,
  ``defense``, ``defense_params`` (the JEM settings and both training recipes) and
  ``private_split: "train"``; :func:`training_config` drops them again;
- ``model.safetensors``: the defended model (:func:`~trustlab.train.checkpoint.save_model`, with
  its spec and dataset, as a training run stores it); ``jem.safetensors``: the fine-tuned JEM
  (trained on the private set: not for release); ``defense.json``: the defense's report;
  ``samples.png``: synthetic samples, one row per class;
- metrics: the JEM fine-tuning epochs (phase ``jem``, with the mean CE and energies) and the
  retraining epochs (phase ``epoch``, as a training run logs them); summary: the retraining's
  summary (``test_accuracy`` is the defended model's) plus ``undefended_test_accuracy``,
  ``jem_test_accuracy``, the synthetic set's size and acceptance rate, and the seconds per phase.

The JEM fine-tuning and the retraining use the defense's recipes
(:data:`~trustlab.defenses.privacy.jem.FINETUNE` and
:data:`~trustlab.defenses.privacy.jem.RETRAIN`, the authors'; ``retrain=`` takes another, e.g.
``"source"``: the source run's :class:`~trustlab.train.TrainSettings`, DP-SGD off) with a plain
cross-entropy (an adversarial or robust training loss of the source run is not repeated), seeded
from the defense's seed. Everything is written atomically;
bad input raises :class:`~trustlab.errors.InputError` before the new run is created. The defense
is not resumable: an interrupted run is marked ``interrupted`` and is run again from the start.
"""

from __future__ import annotations

from typing import Any

import torch

from trustlab.config import TrainConfig
from trustlab.defenses.privacy.jem import JEMResult
from trustlab.errors import InputError
from trustlab.registry import PRIVACY_DEFENSES
from trustlab.results import Run, RunStore, recording_outcome
from trustlab.train.checkpoint import load_model, save_model
from trustlab.train.trainer import TrainResult, TrainSettings
from trustlab.utils.io import write_json_atomic
from trustlab.utils.validate import parse_config
from trustlab.workflows.train import prepare

__all__ = ["DEFENSE_KEYS", "KIND", "run_privacy_defense", "training_config"]

#: the kind of the runs it records
KIND = "defend-privacy"
#: the config keys a defended run adds to its source run's training config
DEFENSE_KEYS = ("source_run", "defense", "private_split", "defense_params")


def training_config(config: dict[str, Any]) -> dict[str, Any]:
    """The training config of a ``train`` or ``defend-privacy`` run's config (the latter's
    defense keys dropped): what ``parse_config(TrainConfig, ...)`` takes, e.g. for a
    membership-inference attack on a defended model (its members: that config's training split).
    """
    return {k: v for k, v in config.items() if k not in DEFENSE_KEYS}


def _source_run(store: RunStore, run_ref: int | str) -> Run:
    run = store.get(run_ref)
    if run.kind != "train":
        raise InputError(
            f"run {run.id} is a {run.kind!r} run; the privacy defense takes a `trustlab train` "
            "run (its model and its training split). Pick one from `trustlab runs`."
        )
    if run.status != "finished":
        raise InputError(
            f"run {run.id} is {run.status}, not finished; finish it first (`trustlab resume "
            f"{run.id}`) or pick a finished training run."
        )
    if not (run.dir / "model.safetensors").is_file():
        raise InputError(
            f"run {run.id} has no model.safetensors in {run.dir}; train again with "
            "`trustlab train` or pick another run."
        )
    return run


def _sample_rows(result: JEMResult, per_row: int = 10) -> tuple[list[torch.Tensor], list[int]]:
    """Up to ``per_row`` synthetic samples of each class (classes with fewer are left out,
    rows of equal length), and the classes of the rows."""
    syn = result.synthetic
    counts = torch.bincount(syn.y, minlength=syn.num_classes)
    k = min(per_row, int(counts[counts > 0].min()))
    kept = [c for c in range(syn.num_classes) if counts[c] >= k]
    return [syn.x[syn.y == c][:k] for c in kept], kept


def run_privacy_defense(
    run_ref: int | str,
    defense: str = "jem",
    *,
    options: dict[str, Any] | None = None,
    retrain: TrainSettings | str | None = None,
    store: RunStore | None = None,
    device: str = "auto",
    seed: int | None = None,
    progress: bool = True,
    name: str | None = None,
) -> tuple[Run, JEMResult]:
    """Defend the model of training run ``run_ref`` and store the defended model as a new run.

    Args:
        run_ref: a finished ``trustlab train`` run (id, ``"7"`` or ``"run-000007"``).
        defense: a registered privacy defense (:data:`~trustlab.registry.PRIVACY_DEFENSES`):
            ``"jem"`` (:class:`~trustlab.defenses.privacy.JEMDefense`).
        options: overrides of the defense's settings (its card's meta ``settings``:
            :class:`~trustlab.defenses.privacy.JEMSettings` for ``jem``), e.g.
            ``{"steps": 20, "synthetic_size": 2000}`` (not ``seed``: use ``seed``).
        retrain: the retraining recipe: ``None`` (the authors',
            :data:`~trustlab.defenses.privacy.jem.RETRAIN`), ``"source"`` (the source run's
            settings) or a :class:`~trustlab.train.TrainSettings`.
        store: the results store (default ``$TRUSTLAB_HOME``).
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        seed: the defense's seed (default 0): SGLD, data noise, the fresh weights, both
            trainings.
        progress: progress bars (on a terminal only).
        name: a name for the new run (default ``jem-<source run name>``).

    Returns:
        ``(run, result)``: the new run (finished) and the defense's
        :class:`~trustlab.defenses.privacy.JEMResult`.
    """
    card = PRIVACY_DEFENSES.get(defense)
    defense = card.name
    options = dict(options or {})
    if "seed" in options:
        raise InputError("give the defense's seed with seed=... (--seed), not in the options.")
    s = 0 if seed is None else seed
    settings = parse_config(card.meta["settings"], {**options, "seed": s})
    store = store or RunStore()
    source = _source_run(store, run_ref)
    cfg = parse_config(TrainConfig, {**source.config, "device": device})
    prep = prepare(cfg)  # the private split as trained on (label noise included); checks the data
    model = load_model(source.dir / "model.safetensors")
    if retrain == "source":
        fields = [k for k in TrainSettings.model_fields if k != "dp"]
        retrain = TrainSettings(**{k: getattr(cfg, k) for k in fields})
    elif isinstance(retrain, str):
        raise InputError(f"retrain must be 'source' or TrainSettings, got {retrain!r}.")
    jem = card.build(settings=settings, retrain=retrain)
    config = {
        **source.config,
        "device": device,
        "source_run": source.id,
        "defense": defense,
        "private_split": "train",
        "defense_params": {
            **settings.model_dump(),
            "finetune": jem.finetune.model_dump(),
            "retrain": jem.retrain.model_dump(),
        },
    }
    run = store.create_run(KIND, name or f"{defense}-{source.name}", config, seed=s)

    def log(phase: str, epoch: int, metrics: dict[str, float]) -> None:
        run.log_metrics(epoch, metrics, phase="epoch" if phase == "retrain" else phase)

    with recording_outcome(run):
        result = jem.defend(model, prep.train, prep.test, device=cfg.device, progress=progress,
                            log=log)  # fmt: skip
        report = result.report
        save_model(result.model, run.artifact_path("model.safetensors"), dataset=cfg.dataset)
        run.add_artifact("model.safetensors", kind="model")
        save_model(result.jem, run.artifact_path("jem.safetensors"), dataset=cfg.dataset)
        run.add_artifact("jem.safetensors", kind="model")
        write_json_atomic(
            run.artifact_path("defense.json"),
            {"defense": defense, "source_run": source.id, **report.to_dict()},
        )
        run.add_artifact("defense.json")
        from trustlab.attacks.evasion.grid import save_rows

        rows, kept = _sample_rows(result)
        names = result.synthetic.classes
        save_rows(
            run.artifact_path("samples.png"), rows,
            row_labels=[f"class {c}" if names[c] == str(c) else f"{c}: {names[c]}" for c in kept],
            title=f"{defense}: synthetic samples the defended model was trained on, one row per "
            "class (labelled by the fine-tuned model)",
        )  # fmt: skip
        run.add_artifact("samples.png", kind="image")
        retrained = TrainResult(result.model, report.retrain["history"])
        syn = report.synthetic
        run.finish(
            {
                **retrained.summary(),
                "undefended_test_accuracy": report.accuracy.get("undefended"),
                "jem_test_accuracy": report.accuracy.get("jem"),
                "synthetic_size": syn["kept"],
                "synthetic_acceptance": syn["acceptance"],
                **{f"{k}_seconds": v for k, v in report.seconds.items()},
            }
        )
    return run, result
