"""A stored training run: dataset + model + :class:`~trustlab.train.Trainer` + results store.

This is what ``trustlab train`` and ``trustlab resume`` call. Everything that can be wrong with
the input (names, config values, data files, labels, NaNs) is checked *before* the run is created,
so bad input leaves nothing in the store. A run killed at any point is found ``interrupted``
(its process is gone) and ``resume_training`` finishes it from its last epoch checkpoint with the
same numbers as an uninterrupted run.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from trustlab.attacks.evasion.base import parse_eps
from trustlab.config import TrainConfig, parse_config
from trustlab.data import ArrayDataset, load_dataset
from trustlab.data.noise import apply_noise
from trustlab.errors import InputError
from trustlab.models.spec import ModelSpec
from trustlab.registry import ROBUST
from trustlab.results import Run, RunStore, recording_outcome
from trustlab.train import distributed as D
from trustlab.train.checkpoint import save_model
from trustlab.train.dp import privatize_model
from trustlab.train.losses import make_loss
from trustlab.train.trainer import (
    CHECKPOINT_NAME,
    Trainer,
    TrainResult,
    TrainSettings,
    check_model_fits,
)
from trustlab.utils.device import resolve_device
from trustlab.utils.io import write_json_atomic
from trustlab.utils.seed import derive_seed, seed_everything


@dataclass
class Prepared:
    """What :func:`prepare` checked and built for a training run, before the run is created.

    Attributes:
        config: the validated :class:`~trustlab.config.TrainConfig`.
        train: the training split (with noisy labels when ``config.noise`` asks for them).
        test: the test split.
        spec: the model's :class:`~trustlab.models.spec.ModelSpec` (``group_norm=True`` under
            DP-SGD when BatchNorm was replaced).
        loss_fn: the robust loss (``make_loss``), or None for the default cross-entropy.
        noise: the label-noise record (``NoisyLabels.to_dict()``), or None without noise.
        compute_loss: the adversarial-training loss (``--adv``), or None.

    Example:
        >>> prep = prepare(TrainConfig(dataset="digits", model="cnn-small", epochs=1))
        >>> prep.spec.name, prep.noise
        ('cnn-small', None)
    """

    config: TrainConfig
    train: ArrayDataset
    test: ArrayDataset
    spec: ModelSpec
    loss_fn: Any = None
    noise: dict[str, Any] | None = None
    compute_loss: Any = None


def prepare(config: TrainConfig) -> Prepared:
    """Load the data, build the model once and check that it fits the data (no run is created).

    Everything a user can get wrong is reported here, before anything is written.
    """
    device = resolve_device(config.device)
    root = config.data_root
    train = load_dataset(config.dataset, "train", root=root, download=config.download)
    test = load_dataset(config.dataset, "test", root=root, download=config.download)
    spec = ModelSpec.for_data(config.model, train, **config.model_kwargs)
    seed_everything(config.seed)
    model = spec.build()
    if config.dp is not None:
        private = privatize_model(model)  # warns when it replaces BatchNorm
        if private is not model:  # the stored spec says GroupNorm: the model rebuilds as trained
            spec = replace(spec, group_norm=True)
        model = private
    check_model_fits(model, train, test, "cpu" if device.type == "cuda" else device)
    loss_fn = compute_loss = None
    if config.dp is not None and config.adv != "none":
        raise InputError("DP-SGD and adversarial training do not combine here; drop --adv.")
    if config.adv != "none":
        compute_loss = adversarial_loss(config)
    elif config.eps is not None or config.adv_alpha is not None:
        raise InputError(
            "--eps/--adv-alpha set the adversarial training radius; add --adv "
            f"{' or --adv '.join(ROBUST.names())}."
        )
    elif config.loss != "ce" or config.alpha is not None or config.beta is not None:
        if config.label_smoothing > 0:
            raise InputError("label_smoothing applies to the default CE loss only; drop one.")
        loss_fn = make_loss(
            config.loss, config.alpha, config.beta, dataset=config.dataset, **config.loss_kwargs
        )
    elif config.loss_kwargs:
        raise InputError("loss_kwargs need a loss that takes them (e.g. --loss gce with q).")
    noise = None
    if config.noise not in ("none", "clean"):
        train, record = apply_noise(
            train, config.noise, seed=derive_seed(config.seed, "noise"), dataset_name=config.dataset
        )
        noise = record.to_dict()
    return Prepared(config, train, test, spec, loss_fn, noise, compute_loss)


def _robust_taking(parameter: str) -> list[str]:
    """The registered adversarial trainings that take ``parameter``."""
    return [n for n in ROBUST.names() if parameter in ROBUST.get(n).parameters()]


def adversarial_loss(config: TrainConfig) -> Any:
    """The ``compute_loss`` of ``--adv NAME``, the adversarial training registered as ``NAME``
    in :data:`~trustlab.registry.ROBUST` (``pgd``: Madry et al., label smoothing applies to its
    CE; ``trades``: ``--beta``, default 6), with ``--eps``, ``--adv-alpha`` and ``--adv-steps``."""
    card = ROBUST.get(config.adv)
    takes = card.parameters()
    if config.loss != "ce" or config.alpha is not None:
        raise InputError("adversarial training brings its own loss; drop --loss/--alpha.")
    kw: dict[str, Any] = {"steps": config.adv_steps, "seed": config.seed}
    if config.eps is not None:
        kw["eps"] = parse_eps(config.eps)
    if config.adv_alpha is not None:
        kw["alpha"] = parse_eps(config.adv_alpha)
    if config.beta is not None:
        if "beta" not in takes:
            raise InputError(
                f"--beta is a weight of --adv {' or '.join(_robust_taking('beta'))}; it does not "
                f"apply to --adv {card.name}."
            )
        kw["beta"] = config.beta
    if "label_smoothing" in takes:
        kw["label_smoothing"] = config.label_smoothing
    elif config.label_smoothing > 0:
        raise InputError(
            f"label smoothing combines with --adv {' or '.join(_robust_taking('label_smoothing'))}"
            f", not with --adv {card.name}."
        )
    return card.build(**kw)


def _stored_config(cfg: TrainConfig) -> dict[str, Any]:
    """The config as recorded in the store: paths made absolute so that resume works from
    any working directory."""
    data = cfg.model_dump()
    if data.get("data_root"):
        data["data_root"] = str(Path(data["data_root"]).expanduser().resolve())
    return data


def _run_fit(
    prep: Prepared,
    run: Run | None,
    progress: bool,
    resume_from: Path | None,
    log_epochs: bool = False,
) -> TrainResult:
    cfg = prep.config
    seed_everything(cfg.seed)
    model = prep.spec.build()
    settings = TrainSettings(**{k: getattr(cfg, k) for k in TrainSettings.model_fields})
    if prep.compute_loss is not None:  # PGD-AT applies label smoothing to its own CE
        settings = settings.model_copy(update={"label_smoothing": 0.0})
    trainer = Trainer(
        model,
        settings,
        loss_fn=prep.loss_fn,
        compute_loss=prep.compute_loss,
        device=cfg.device,
        progress=progress,
        log_epochs=log_epochs,
        checkpoint_dir=run.dir / "checkpoints" if run is not None else None,
        log=run.log_metrics if run is not None else None,
    )
    return trainer.fit(prep.train, prep.test, resume_from=resume_from)


def _finish(run: Run | None, prep: Prepared, result: TrainResult) -> None:
    if run is None:
        return
    path = run.artifact_path("model.safetensors")
    save_model(result.model, path, spec=prep.spec.to_dict(), dataset=prep.config.dataset)
    run.add_artifact("model.safetensors", kind="model")
    extra: dict[str, Any] = {"world_size": D.env_world_size()}
    if prep.loss_fn is not None and hasattr(prep.loss_fn, "hparams"):
        extra["loss_params"] = prep.loss_fn.hparams()  # the weights actually used
    if prep.noise is not None:
        extra["noise_rate"] = prep.noise["rate"]
        write_json_atomic(run.artifact_path("noise.json"), prep.noise)
        run.add_artifact("noise.json", kind="noise")
    run.finish({**result.summary(), **extra})


def _guarded(run: Run | None, fn: Any) -> Any:
    """Run ``fn``, recording an interruption or failure on the run."""
    with recording_outcome(run):
        return fn()


def run_training(
    config: TrainConfig | dict[str, Any] | Prepared,
    store: RunStore | None = None,
    progress: bool = True,
    log_epochs: bool = False,
) -> tuple[Run | None, TrainResult]:
    """Validate, create a run (rank 0 only), train, store metrics, checkpoints and the model.
    ``config`` may be what :func:`prepare` returned (the data are then not loaded again).
    ``log_epochs``: one line per epoch on stderr where no progress bar is shown (the CLI's
    default when its output is not a terminal, e.g. a log file or CI)."""
    if isinstance(config, Prepared):
        prep = config
    else:
        cfg = config if isinstance(config, TrainConfig) else parse_config(TrainConfig, config)
        prep = prepare(cfg)
    cfg = prep.config
    run = None
    if D.env_rank() == 0:
        store = store or RunStore()
        run = store.create_run(
            "train", cfg.name or f"{cfg.model}-{cfg.dataset}", _stored_config(cfg), seed=cfg.seed
        )

    def go() -> TrainResult:
        result = _run_fit(prep, run, progress, None, log_epochs)
        _finish(run, prep, result)
        return result

    return run, _guarded(run, go)


def resume_training(
    run_id: int | str,
    store: RunStore | None = None,
    progress: bool = True,
    device: str | None = None,
    log_epochs: bool = False,
) -> tuple[Run, TrainResult]:
    """Continue an interrupted or failed training run from its last epoch checkpoint
    (``log_epochs``: as :func:`run_training`).

    Under ``torchrun`` every rank loads the checkpoint; only rank 0 touches the store.
    """
    store = store or RunStore()
    main = D.env_rank() == 0
    run = store.get(run_id)
    if run.kind != "train":
        raise InputError(f"run {run.id} is a {run.kind!r} run; only training runs resume here.")
    if main and run.status == "finished":
        raise InputError(f"run {run.id} is finished; there is nothing to resume.")
    if main and run.status == "running":
        raise InputError(
            f"run {run.id} is still running (pid {run.pid} on {run.hostname}); stop that process "
            "or wait for it to end."
        )
    data = dict(run.config)
    if device is not None:
        data["device"] = device
    cfg = parse_config(TrainConfig, data)
    prep = prepare(cfg)
    ckpt = run.dir / "checkpoints" / CHECKPOINT_NAME
    writer = run if main else None
    if writer is not None:
        writer.reopen()

    def go() -> TrainResult:
        result = _run_fit(prep, writer, progress, ckpt if ckpt.exists() else None, log_epochs)
        _finish(writer, prep, result)
        return result

    return run, _guarded(writer, go)
