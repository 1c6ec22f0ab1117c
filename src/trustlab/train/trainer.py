"""The one training loop of trustlab: :class:`Trainer` and :func:`fit`.

Every model trained in the library (the CLI's ``train``, reproductions, adversarial training, the
blind-backdoor loss, ...) goes through this loop, so its guarantees hold everywhere:

- **Seeded and resumable.** Each epoch's shuffle, augmentation and the global torch RNG (dropout)
  are seeded from ``(seed, epoch)`` alone, and a checkpoint holds the weights, the optimizer state
  and the history. A run killed at any point and resumed from its last checkpoint finishes with
  exactly the numbers of an uninterrupted run on CPU.
- **Any loss.** ``loss_fn(logits, y)`` for ordinary losses, or ``compute_loss(model, x, y)``
  returning ``loss`` or ``(loss, logits)`` for losses that need the model and the batch (the blind
  backdoor's compromised loss, adversarial training).
- **Triggers after augmentation.** A dataset carrying ``trigger_rows`` (``(N,)`` long: per sample
  an index into its ``row_triggers``, -1 for none) and ``row_triggers`` (callables on a batch),
  as :func:`~trustlab.attacks.backdoor.poison.poison_dataset` makes with
  ``trigger_stage="after-augment"``, has those samples' triggers applied to each batch *after*
  the augmentation (crop, flip), so a backdoor is learnt exactly as it is tested. Without them
  (the default) whatever the dataset holds is augmented, triggers included.
- **Fast.** Batches are gathered straight from in-memory tensors; per-step bookkeeping stays on
  the device (no host sync per step).
- **Distributed.** Under ``torchrun`` the model is wrapped in ``DistributedDataParallel`` (gloo on
  CPU, nccl on CUDA), each rank takes a shard of the same seeded permutation, and the global batch
  size is split across ranks; rank 0 logs and checkpoints.

Defaults follow the common CIFAR recipe (SGD, momentum 0.9, lr 0.1, weight decay 5e-4, cosine
schedule stepped once per epoch as ``torch.optim.lr_scheduler.CosineAnnealingLR`` is in the
papers' code).
"""

from __future__ import annotations

import math
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn
from torch.utils.data import Dataset

from trustlab.data.augment import apply_per_row, augment_batch
from trustlab.data.datasets import ArrayDataset, as_array_dataset
from trustlab.data.loader import epoch_indices, iterate_batches, num_batches
from trustlab.errors import CheckpointError, InputError
from trustlab.models.spec import ModelSpec
from trustlab.train import distributed as D
from trustlab.train.checkpoint import load_checkpoint, load_state, save_checkpoint
from trustlab.train.dp import DPSettings, PrivateTraining, privatize_model
from trustlab.train.evaluate import evaluate
from trustlab.utils.device import resolve_device
from trustlab.utils.modules import eval_mode
from trustlab.utils.progress import Bar, progress_bar
from trustlab.utils.seed import derive_seed, generator, seed_torch_rng
from trustlab.utils.validate import parse_config

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
BatchLossFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], Any]

CHECKPOINT_NAME = "last.safetensors"
#: settings a resumed run may change (everything else must equal the checkpoint's)
RESUME_MAY_CHANGE = frozenset({"epochs", "eval_every", "eval_batch_size"})
#: the most epochs a run may ask for (a sanity limit: a typo such as 1000000 is refused)
MAX_EPOCHS = 100_000
#: collapse detection: this many last epochs with an unchanged training loss
COLLAPSE_WINDOW = 3
#: ... while the learning rate was at least this share of the run's largest (a loss that stops
#: moving at the tail of a cosine schedule, lr ~0, is not a collapse)
COLLAPSE_MIN_LR_SHARE = 0.05


class TrainSettings(BaseModel):
    """Optimisation settings of one training run (validated; unknown keys are errors).

    Defaults follow the common CIFAR recipe (SGD, momentum 0.9, lr 0.1, weight decay 5e-4, cosine
    schedule stepped once per epoch).

    Args:
        epochs: passes over the training set, 1 to 100,000; default 10.
        batch_size: global batch size (split across ranks); default 128.
        optimizer: ``"sgd"`` (default), ``"adam"`` or ``"adamw"``.
        lr: peak learning rate, finite and > 0; default 0.1.
        momentum: SGD momentum; default 0.9.
        nesterov: Nesterov momentum (SGD only); default False.
        weight_decay: default 5e-4.
        schedule: ``"cosine"`` (default), ``"step"`` or ``"constant"`` (see :meth:`lr_at`).
        milestones: epochs at which ``"step"`` multiplies the lr by ``gamma``; default ``[]``
            (50% and 75% of the epochs after warm-up, :meth:`step_milestones`).
        gamma: the step schedule's factor; default 0.1.
        min_lr: the cosine schedule's floor (``eta_min``); default 0.
        warmup_epochs: linear warm-up epochs before the schedule; default 0.
        clip_grad_norm: max global gradient L2 norm; default None (no clipping).
        label_smoothing: for the default CE loss; default 0.
        augment: ``"none"`` (default), ``"crop"``, ``"flip"`` or ``"crop-flip"``.
        channels_last: NHWC memory format for 4-D inputs; default False.
        eval_batch_size: default 512.
        eval_every: evaluate on the test set every N epochs; default 1.
        seed: default 0.
        dp: DP-SGD settings (:class:`~trustlab.train.dp.DPSettings`); default None (off).

    Example:
        >>> settings = TrainSettings(epochs=4, lr=0.05, schedule="step")
        >>> settings.step_milestones()
        [2, 3]
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    epochs: int = Field(
        10, ge=1, le=MAX_EPOCHS, description="number of passes over the training set"
    )
    batch_size: int = Field(128, ge=1, description="global batch size (split across ranks)")
    optimizer: Literal["sgd", "adam", "adamw"] = "sgd"
    lr: float = Field(
        0.1, gt=0, allow_inf_nan=False, description="peak learning rate (finite, > 0)"
    )
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum")
    nesterov: bool = False
    weight_decay: float = Field(5e-4, ge=0, allow_inf_nan=False)
    schedule: Literal["cosine", "step", "constant"] = "cosine"
    milestones: list[int] = Field(
        default_factory=list,
        description="epochs at which 'step' multiplies the lr by gamma "
        "(default: 50% and 75% of the epochs after warm-up)",
    )
    gamma: float = Field(0.1, gt=0, le=1)
    min_lr: float = Field(
        0.0, ge=0, allow_inf_nan=False, description="the cosine schedule's floor (eta_min)"
    )
    warmup_epochs: int = Field(0, ge=0, description="linear warm-up epochs before the schedule")
    clip_grad_norm: float | None = Field(
        None, gt=0, allow_inf_nan=False, description="max global gradient L2 norm"
    )
    label_smoothing: float = Field(0.0, ge=0, lt=1, description="for the default CE loss")
    augment: Literal["none", "crop", "flip", "crop-flip"] = "none"
    channels_last: bool = Field(
        False, description="NHWC memory format for 4-D inputs (often faster for convnets)"
    )
    eval_batch_size: int = Field(512, ge=1)
    eval_every: int = Field(1, ge=1, description="evaluate on the test set every N epochs")
    seed: int = Field(0, ge=0)
    dp: DPSettings | None = Field(None, description="DP-SGD (trustlab.train.dp); None: off")

    @model_validator(mode="after")
    def _check(self) -> TrainSettings:
        if self.optimizer != "sgd" and self.nesterov:
            raise ValueError("'nesterov' applies to optimizer 'sgd' only")
        if self.min_lr > self.lr:
            raise ValueError(f"'min_lr' ({self.min_lr}) must not exceed 'lr' ({self.lr})")
        if self.warmup_epochs >= self.epochs:
            raise ValueError(f"'warmup_epochs' must be < 'epochs' ({self.epochs})")
        if self.nesterov and self.momentum == 0:
            raise ValueError("'nesterov' needs 'momentum' > 0")
        if self.dp is not None and self.clip_grad_norm is not None:
            raise ValueError(
                "DP-SGD clips every sample's gradient at dp.max_grad_norm; drop 'clip_grad_norm'"
            )
        bad = [m for m in self.milestones if not 0 < m <= self.epochs]
        if bad:
            raise ValueError(f"'milestones' {bad} are outside 1..epochs ({self.epochs})")
        return self

    def step_milestones(self) -> list[int]:
        """Epochs at which the ``step`` schedule multiplies the lr by ``gamma``: the given
        ``milestones``, else 50% and 75% of the epochs after warm-up (distinct, after warm-up)."""
        if self.milestones:
            return sorted(set(self.milestones))
        w, rest = self.warmup_epochs, self.epochs - self.warmup_epochs
        return sorted({w + max(1, round(f * rest)) for f in (0.5, 0.75)} - {self.epochs})

    def lr_at(self, epoch: int) -> float:
        """Learning rate used during (0-based) ``epoch``."""
        if epoch < self.warmup_epochs:
            return self.lr * (epoch + 1) / (self.warmup_epochs + 1)
        e = epoch - self.warmup_epochs
        total = max(self.epochs - self.warmup_epochs, 1)
        if self.schedule == "cosine":
            return self.min_lr + 0.5 * (self.lr - self.min_lr) * (1 + math.cos(math.pi * e / total))
        if self.schedule == "step":
            return self.lr * self.gamma ** sum(epoch >= m for m in self.step_milestones())
        return self.lr


def check_model_fits(
    model: nn.Module,
    train: ArrayDataset,
    test: ArrayDataset | None = None,
    device: torch.device | str = "cpu",
) -> None:
    """Raise :class:`InputError` unless ``model`` maps ``train``'s inputs to logits covering its
    classes and ``test`` matches ``train`` (shape and classes). Runs one eval-mode forward pass
    on two samples; the model's mode is restored."""
    if test is not None and test.input_shape != train.input_shape:
        raise InputError(
            f"train inputs are {train.input_shape} but test inputs are {test.input_shape}."
        )
    if test is not None and test.num_classes != train.num_classes:
        raise InputError(
            f"the training set has {train.num_classes} classes but the test set has "
            f"{test.num_classes}; give both the same class list."
        )
    try:
        with eval_mode(model), torch.no_grad():
            out = model(train.x[:2].to(device))
    except RuntimeError as exc:
        raise InputError(
            f"the model cannot take inputs of shape {train.input_shape}: "
            f"{str(exc).splitlines()[0]}. Create it with matching in_channels/image_size."
        ) from exc
    if out.dim() != 2 or out.shape[1] < train.num_classes:
        raise InputError(
            f"the model outputs shape {tuple(out.shape)} but the dataset has "
            f"{train.num_classes} classes; create it with num_classes={train.num_classes}."
        )


class Callback:
    """Hooks into the training loop; override what you need. ``trainer.stop = True`` ends training.

    Every hook does nothing by default: ``on_train_start(trainer)``, ``on_epoch_start(trainer,
    epoch)``, ``on_batch_end(trainer, step, loss)``, ``on_epoch_end(trainer, epoch, metrics)`` and
    ``on_train_end(trainer, result)``.

    Example:
        >>> class StopEarly(Callback):
        ...     def on_epoch_end(self, trainer, epoch, metrics): trainer.stop = True
        >>> trainer = Trainer(nn.Linear(4, 2), epochs=5, callbacks=[StopEarly()], progress=False)
    """

    def on_train_start(self, trainer: Trainer) -> None:
        return None

    def on_epoch_start(self, trainer: Trainer, epoch: int) -> None:
        return None

    def on_batch_end(self, trainer: Trainer, step: int, loss: torch.Tensor) -> None:
        return None

    def on_epoch_end(self, trainer: Trainer, epoch: int, metrics: dict[str, float]) -> None:
        return None

    def on_train_end(self, trainer: Trainer, result: TrainResult) -> None:
        return None


@dataclass
class TrainResult:
    """What :meth:`Trainer.fit` returns: the trained model and its per-epoch history.

    Attributes:
        model: the trained model (on the training device).
        history: one dict of metrics per epoch (``epoch``, ``lr``, ``train_loss``,
            ``epoch_seconds``, ``train_accuracy``, ``test_loss``, ``test_accuracy``, ``epsilon``
            where they apply); default ``[]``.
        privacy: DP-SGD runs: epsilon, delta, noise_multiplier, max_grad_norm, sample_rate;
            default None.
        final: the last epoch's metrics (``{}`` before any).
        best_test_accuracy: the best ``test_accuracy`` of the history, or None.

    Example:
        >>> result = TrainResult(nn.Linear(4, 2), [{"train_loss": 0.5, "test_accuracy": 0.9}])
        >>> result.summary()
        {'train_loss': 0.5, 'test_accuracy': 0.9, 'best_test_accuracy': 0.9, 'epochs': 1}
    """

    model: nn.Module
    history: list[dict[str, float]] = field(default_factory=list)
    #: DP-SGD runs: epsilon, delta, noise_multiplier, max_grad_norm, sample_rate
    privacy: dict[str, float | bool] | None = None

    @property
    def final(self) -> dict[str, float]:
        return self.history[-1] if self.history else {}

    @property
    def best_test_accuracy(self) -> float | None:
        accs = [h["test_accuracy"] for h in self.history if "test_accuracy" in h]
        return max(accs) if accs else None

    def summary(self) -> dict[str, float]:
        out = {k: v for k, v in self.final.items() if k != "epoch_seconds"}
        if self.best_test_accuracy is not None:
            out["best_test_accuracy"] = self.best_test_accuracy
        out["epochs"] = len(self.history)
        if self.privacy is not None:
            out.update(self.privacy)
        return out


def build_optimizer(params: Any, s: TrainSettings) -> torch.optim.Optimizer:
    if s.optimizer == "sgd":
        return torch.optim.SGD(
            params,
            lr=s.lr,
            momentum=s.momentum,
            nesterov=s.nesterov,
            weight_decay=s.weight_decay,
        )
    cls = torch.optim.Adam if s.optimizer == "adam" else torch.optim.AdamW
    return cls(params, lr=s.lr, weight_decay=s.weight_decay)


def optimizer_tensors(
    opt: torch.optim.Optimizer, prefix: str = "optim"
) -> tuple[dict[str, torch.Tensor], dict]:
    """Split an optimizer state dict into tensors named ``<prefix>/<param>/<key>`` (for
    safetensors) and the JSON-able rest; :func:`optimizer_state` puts them back together."""
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, st in sd["state"].items():
        for key, val in st.items():
            if isinstance(val, torch.Tensor):
                tensors[f"{prefix}/{pid}/{key}"] = val
            else:
                scalars.setdefault(str(pid), {})[key] = val
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def optimizer_state(tensors: dict[str, torch.Tensor], meta: dict, prefix: str = "optim") -> dict:
    """The optimizer state dict saved by :func:`optimizer_tensors` (``load_state_dict`` it)."""
    state: dict[int, dict[str, Any]] = {}
    for name, val in tensors.items():
        if name.startswith(f"{prefix}/"):
            _, pid, key = name.split("/", 2)
            state.setdefault(int(pid), {})[key] = val
    for pid, vals in meta.get("scalars", {}).items():
        state.setdefault(int(pid), {}).update(vals)
    return {"state": state, "param_groups": meta["param_groups"]}


class Trainer:
    """Train a classifier on a dataset; see the module docstring for the guarantees.

    Args:
        model: any ``nn.Module`` mapping a batch to logits ``(N, K)``.
        settings: a :class:`TrainSettings`; default None (its defaults, with ``overrides``).
        loss_fn: ``loss_fn(logits, y) -> scalar``; default None (cross-entropy with
            ``settings.label_smoothing``).
        compute_loss: ``compute_loss(model, x, y) -> loss | (loss, logits)`` for losses that need
            the model and the batch; exclusive with ``loss_fn``; default None.
        callbacks: :class:`Callback` instances; default ``()``.
        device: ``"auto"`` (default), ``"cpu"``, ``"cuda"`` or a ``torch.device``.
        checkpoint_dir: where ``last.safetensors`` (+ ``.json``) is written after each epoch;
            default None (no checkpoints).
        log: called with ``(epoch, metrics)`` after each epoch on rank 0 (e.g. ``run.log_metrics``);
            default None.
        progress: show a rich progress bar (only on a terminal, only on rank 0); default True.
        log_epochs: when no progress bar is shown (stderr is not a terminal: a log file, CI, a
            pipe), write one line per epoch to stderr (epoch, loss, accuracy, elapsed time);
            default False (a notebook calling :func:`fit` stays quiet). The CLI sets it unless
            ``--quiet``.
        **overrides: :class:`TrainSettings` fields, e.g. ``epochs=5, lr=0.05``.

    Shapes: the data's inputs ``(N, C, H, W)`` (or ``(N, C, T, H, W)``) in ``[0, 1]`` and ``(N,)``
    int64 labels; the model's output ``(N, K)`` logits.

    Example:
        >>> data = ArrayDataset(torch.rand(64, 1, 8, 8), torch.arange(64) % 2)
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(64, 2))
        >>> result = Trainer(model, epochs=1, lr=0.01, progress=False).fit(data)
    """

    def __init__(
        self,
        model: nn.Module,
        settings: TrainSettings | None = None,
        *,
        loss_fn: LossFn | None = None,
        compute_loss: BatchLossFn | None = None,
        callbacks: Sequence[Callback] = (),
        device: str | torch.device = "auto",
        checkpoint_dir: str | Path | None = None,
        log: Callable[[int, dict[str, float]], None] | None = None,
        progress: bool = True,
        log_epochs: bool = False,
        **overrides: Any,
    ) -> None:
        if settings is None:
            settings = parse_config(TrainSettings, overrides)
        elif overrides:
            settings = parse_config(TrainSettings, {**settings.model_dump(), **overrides})
        if loss_fn is not None and compute_loss is not None:
            raise InputError(
                "pass either loss_fn(logits, y) or compute_loss(model, x, y), not both."
            )
        if loss_fn is not None and settings.label_smoothing > 0:
            raise InputError(
                "label_smoothing applies to the default cross-entropy only; build it into your "
                "loss_fn instead."
            )
        self._dp: PrivateTraining | None = None
        if settings.dp is not None:
            if compute_loss is not None:
                raise InputError(
                    "DP-SGD takes a per-sample loss (loss_fn or the default CE), not "
                    "compute_loss: its extra forward/backward passes would corrupt the per-sample "
                    "gradients."
                )
            model = privatize_model(model)
            self._dp = PrivateTraining(settings.dp, settings.seed)
        self.settings = settings
        self.model = model
        self.loss_fn = loss_fn
        self.compute_loss = compute_loss
        self.callbacks = list(callbacks)
        self.device = resolve_device(device)
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
        self.log = log
        self.progress = progress
        self.log_epochs = log_epochs
        self.stop = False
        self._collapse_warned = False
        self._memory_format: torch.memory_format | None = None
        self.epoch = 0
        self.history: list[dict[str, float]] = []

    # -- pieces ------------------------------------------------------------------------------
    def _loss_and_logits(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor):
        if self.compute_loss is not None:
            out = self.compute_loss(model, x, y)
            return out if isinstance(out, tuple) else (out, None)
        logits = model(x)
        if self.loss_fn is not None:
            return self.loss_fn(logits, y), logits
        return F.cross_entropy(logits, y, label_smoothing=self.settings.label_smoothing), logits

    def state_tensors(self, optimizer: torch.optim.Optimizer) -> tuple[dict, dict]:
        module = self.model
        tensors = {f"model/{k}": v for k, v in module.state_dict().items()}
        # DP-SGD's optimizer wraps the plain one, whose state is what a resume restores
        plain = getattr(optimizer, "original_optimizer", optimizer)
        opt_tensors, opt_meta = optimizer_tensors(plain)
        tensors.update(opt_tensors)
        spec = ModelSpec.from_model(self.model)
        meta = {
            "kind": "trainer-state",
            "model_spec": spec.to_dict() if spec is not None else None,
            "epoch": self.epoch,
            "settings": self.settings.model_dump(),
            "optimizer": opt_meta,
            "history": self.history,
        }
        if self._dp is not None:
            meta["dp_state"] = self._dp.state()
        return tensors, meta

    def save(
        self, optimizer: torch.optim.Optimizer, path: str | Path, extra_meta: dict | None = None
    ) -> Path:
        tensors, meta = self.state_tensors(optimizer)
        return save_checkpoint(path, tensors, {**meta, **(extra_meta or {})})

    def _restore(self, path: str | Path, optimizer: torch.optim.Optimizer) -> dict | None:
        """Load a trainer state into the model and ``optimizer``; returns its DP-SGD state."""
        tensors, meta = load_checkpoint(path, device="cpu")
        if meta.get("kind") != "trainer-state":
            raise CheckpointError(
                f"{path} is a {meta.get('kind', 'plain')} checkpoint, not a trainer state; "
                "resume needs the 'last.safetensors' a training run writes."
            )
        saved = meta.get("settings", {})
        differ = sorted(
            k
            for k, v in self.settings.model_dump().items()
            if k not in RESUME_MAY_CHANGE and k in saved and saved[k] != v
        )
        if differ:
            shown = ", ".join(f"{k}: {saved[k]!r} -> {getattr(self.settings, k)!r}" for k in differ)
            raise CheckpointError(
                f"{path} was written with other settings ({shown}); resume with the settings "
                f"of the original run (only {', '.join(sorted(RESUME_MAY_CHANGE))} may change)."
            )
        model_sd = {k[6:]: v for k, v in tensors.items() if k.startswith("model/")}
        load_state(self.model, model_sd, path)
        optimizer.load_state_dict(optimizer_state(tensors, meta["optimizer"]))
        self.epoch = int(meta["epoch"])
        self.history = list(meta.get("history", []))
        return meta.get("dp_state")

    # -- the loop ----------------------------------------------------------------------------
    def fit(
        self,
        train_data: Dataset | ArrayDataset,
        test_data: Dataset | ArrayDataset | None = None,
        resume_from: str | Path | None = None,
    ) -> TrainResult:
        """Train for ``settings.epochs`` epochs (continuing from ``resume_from`` if given).

        The loop reseeds torch's global RNG every epoch (so that dropout is resumable); the
        caller's RNG state is restored on exit, so models created after ``fit`` still get
        fresh initial weights.
        """
        cpu_state = torch.random.get_rng_state()
        cuda_states = torch.cuda.get_rng_state_all() if self.device.type == "cuda" else None
        try:
            return self._fit(train_data, test_data, resume_from)
        finally:
            torch.random.set_rng_state(cpu_state)
            if cuda_states is not None:
                torch.cuda.set_rng_state_all(cuda_states)

    def _fit(
        self,
        train_data: Dataset | ArrayDataset,
        test_data: Dataset | ArrayDataset | None,
        resume_from: str | Path | None,
    ) -> TrainResult:
        s = self.settings
        train = as_array_dataset(train_data)
        test = as_array_dataset(test_data) if test_data is not None else None
        ctx = D.init_from_env(self.device)
        if ctx.enabled and self.device.type == "cuda":
            self.device = torch.device("cuda", ctx.local_rank)
        self.model.to(self.device)
        fmt = torch.channels_last if s.channels_last and train.x.dim() == 4 else None
        if fmt is not None:
            self.model.to(memory_format=fmt)
        self._memory_format = fmt
        check_model_fits(self.model, train, test, self.device)
        optimizer = build_optimizer(self.model.parameters(), s)
        dp_state = None
        if resume_from is not None:
            dp_state = self._restore(resume_from, optimizer)
            if ctx.is_main and self.log is not None:  # epochs the killed process saved but
                for i, past in enumerate(self.history, start=1):  # may not have logged
                    self.log(i, past)
        net: nn.Module = self.model
        if self._dp is not None:
            if row_triggers_of(train) is not None:
                raise InputError(
                    "DP-SGD's Poisson batches do not carry the row indices that triggers applied "
                    "after augmentation need; poison with trigger_stage='poisoning'."
                )
            if ctx.enabled:
                raise InputError("DP-SGD does not run under torchrun here; train on one process.")
            if resume_from is not None and dp_state is None:
                raise CheckpointError(f"{resume_from} holds no DP-SGD state; it was not a DP run.")
            net, optimizer = self._dp.attach(
                self.model, optimizer, len(train), s.batch_size, s.epochs, self.device, dp_state
            )
        if ctx.enabled:
            ids = [self.device.index] if self.device.type == "cuda" else None
            net = nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        per_rank_batch = max(1, s.batch_size // ctx.world_size)
        steps = num_batches(math.ceil(len(train) / ctx.world_size), per_rank_batch)
        try:
            with warnings.catch_warnings():
                # Opacus' hooks on a first layer whose input needs no gradient: harmless, and
                # torch repeats it every step
                warnings.filterwarnings("ignore", message="Full backward hook is firing")
                return self._loop(net, optimizer, train, test, ctx, per_rank_batch, steps)
        finally:
            if self._dp is not None:
                self._dp.detach()

    def _loop(
        self,
        net: nn.Module,
        optimizer: torch.optim.Optimizer,
        train: ArrayDataset,
        test: ArrayDataset | None,
        ctx: D.DistContext,
        per_rank_batch: int,
        steps: int,
    ) -> TrainResult:
        s = self.settings
        for cb in self.callbacks:
            cb.on_train_start(self)

        show = self.progress and ctx.is_main
        start = time.perf_counter()
        with progress_bar("train", steps, show, eta=True) as bar:
            lines = self.log_epochs and ctx.is_main and not bar.enabled
            while self.epoch < s.epochs and not self.stop:
                epoch = self.epoch
                metrics = self._train_epoch(net, optimizer, train, epoch, ctx, per_rank_batch, bar)
                if self._dp is not None:
                    metrics["epsilon"] = self._dp.epsilon()
                if test is not None and ((epoch + 1) % s.eval_every == 0 or epoch + 1 == s.epochs):
                    ev = evaluate(self.model, test, s.eval_batch_size, self.device)
                    metrics["test_loss"], metrics["test_accuracy"] = ev["loss"], ev["accuracy"]
                self.epoch = epoch + 1
                self.history.append(metrics)
                if ctx.is_main:  # checkpoint first: a kill in between loses no logged epoch
                    if self.checkpoint_dir is not None:
                        self.save(optimizer, self.checkpoint_dir / CHECKPOINT_NAME)
                    if self.log is not None:
                        self.log(self.epoch, metrics)
                D.barrier(ctx)
                for cb in self.callbacks:
                    cb.on_epoch_end(self, self.epoch, metrics)
                acc = metrics.get("test_accuracy", metrics.get("train_accuracy", float("nan")))
                bar.info(f"loss {metrics['train_loss']:.3f} acc {acc:.3f}")
                if lines:
                    print(
                        epoch_line(metrics, s.epochs, time.perf_counter() - start),
                        file=sys.stderr,
                        flush=True,
                    )
                if ctx.is_main and not self._collapse_warned:
                    self._warn_if_collapsed(train, test, final=False)
        if ctx.is_main and not self._collapse_warned:
            self._warn_if_collapsed(train, test, final=True)
        privacy = self._dp.report() if self._dp is not None else None
        result = TrainResult(self.model, list(self.history), privacy)
        for cb in self.callbacks:
            cb.on_train_end(self, result)
        return result

    def _warn_if_collapsed(
        self, train: ArrayDataset, test: ArrayDataset | None, final: bool
    ) -> None:
        """Warn (once per run) when the history shows a collapsed run: see :func:`collapse`.
        Reads the metrics only; ``final``: the run has ended (chance accuracy is judged then)."""
        last = self.history[-1] if self.history else {}
        labels = test.y if test is not None and "test_accuracy" in last else train.y
        found = collapse(self.history, labels, train.num_classes, final=final)
        if found is not None:
            self._collapse_warned = True
            warnings.warn(found, UserWarning, stacklevel=4)

    def _train_epoch(
        self,
        net: nn.Module,
        optimizer: torch.optim.Optimizer,
        train: ArrayDataset,
        epoch: int,
        ctx: D.DistContext,
        batch_size: int,
        bar: Bar,
    ) -> dict[str, float]:
        s = self.settings
        lr = s.lr_at(epoch)
        for group in optimizer.param_groups:
            group["lr"] = lr
        for cb in self.callbacks:
            cb.on_epoch_start(self, epoch)
        # Everything random in an epoch is a function of (seed, epoch): resumable and exact.
        # (dropout and augmentation differ per rank; the shuffle is shared and sharded)
        seed_torch_rng(derive_seed(s.seed, "epoch", epoch, ctx.rank), self.device)
        aug_gen = generator(derive_seed(s.seed, "augment", epoch, ctx.rank))
        late = row_triggers_of(train)
        order: torch.Tensor | None = None
        if self._dp is not None:  # Poisson samples of the whole set
            batches, total = self._dp.batches(train, batch_size, epoch, self.device)
        else:
            order = epoch_indices(
                len(train), True, derive_seed(s.seed, "shuffle", epoch), ctx.rank, ctx.world_size
            )
            batches = iterate_batches(train, batch_size, order, self.device)
            total = num_batches(order.numel(), batch_size)
        # running sums stay on the device (no host sync per step); counts are Python ints
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        correct = torch.zeros((), dtype=torch.int64, device=self.device)
        n = n_scored = 0
        show = bar.enabled
        net.train()
        bar.reset(total=total, description=f"epoch {epoch + 1}/{s.epochs}")
        start = time.perf_counter()
        for step, (x, y) in enumerate(batches):
            if s.augment != "none":
                x = augment_batch(x, s.augment, aug_gen)
            if late is not None and order is not None:  # triggers after the augmentation
                rows = late[0][order[step * batch_size : (step + 1) * batch_size]]
                x = apply_per_row(x, rows, late[1])
            if self._memory_format is not None:
                x = x.contiguous(memory_format=self._memory_format)
            if y.numel() == 0:  # an empty Poisson sample (DP-SGD): a zero loss, a noisy step
                logits = net(x)
                loss = logits.sum() * 0.0
            else:
                loss, logits = self._loss_and_logits(net, x, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if s.clip_grad_norm is not None:
                nn.utils.clip_grad_norm_(net.parameters(), s.clip_grad_norm)
            optimizer.step()
            bs = y.shape[0]
            if bs > 0:  # an empty Poisson sample (DP-SGD): a noisy step, no loss to count
                loss_sum.add_(loss.detach(), alpha=bs)
            if logits is not None and bs > 0:  # argmax/eq build no autograd graph
                correct.add_((logits.argmax(1) == y).sum())
                n_scored += bs
            n += bs
            for cb in self.callbacks:
                cb.on_batch_end(self, step, loss)
            if show:
                bar.advance()
        stats = torch.stack([loss_sum, correct.double()]).cpu()
        stats = torch.cat([stats, torch.tensor([n, n_scored], dtype=torch.float64)])
        if ctx.enabled:
            stats = D.all_reduce_sum(stats.to(self.device), ctx).cpu()
        loss_total, n_correct, n, n_scored = stats.tolist()
        if not math.isfinite(loss_total):
            raise FloatingPointError(
                f"training loss became {loss_total} in epoch {epoch + 1}; lower the learning rate "
                "or set clip_grad_norm."
            )
        metrics = {
            "epoch": epoch + 1,
            "lr": lr,
            "train_loss": loss_total / n,
            "epoch_seconds": time.perf_counter() - start,
        }
        if n_scored > 0:  # compute_loss may not return logits
            metrics["train_accuracy"] = n_correct / n_scored
        return metrics


def row_triggers_of(data: ArrayDataset) -> tuple[torch.Tensor, Sequence[Any]] | None:
    """``(trigger_rows, row_triggers)`` of a dataset whose triggers wait for the trainer (see
    the module), else None."""
    rows, triggers = getattr(data, "trigger_rows", None), getattr(data, "row_triggers", None)
    if rows is None or triggers is None:
        return None
    if not isinstance(rows, torch.Tensor) or rows.shape != (len(data),):
        raise InputError("trigger_rows must be a (N,) tensor of indices into row_triggers.")
    if rows.numel() and int(rows.max()) >= len(triggers):
        raise InputError("trigger_rows points past the end of row_triggers.")
    return rows, triggers


def epoch_line(metrics: dict[str, float], epochs: int, elapsed: float) -> str:
    """One epoch as a line of text (for logs): ``epoch 3/10  loss 0.4120  test acc 95.30%
    (4.1 s; 12.4 s elapsed)``."""
    parts = [f"epoch {int(metrics['epoch'])}/{epochs}", f"loss {metrics['train_loss']:.4f}"]
    for key, label in (("train_accuracy", "train acc"), ("test_accuracy", "test acc")):
        if key in metrics:
            parts.append(f"{label} {100 * metrics[key]:.2f}%")
    if "epsilon" in metrics:
        parts.append(f"epsilon {metrics['epsilon']:.2f}")
    seconds = metrics.get("epoch_seconds")
    took = f"{seconds:.1f} s; " if seconds is not None else ""
    return "  ".join(parts) + f"  ({took}{elapsed:.1f} s elapsed)"


def collapse(
    history: Sequence[dict[str, float]], labels: torch.Tensor, num_classes: int, final: bool = True
) -> str | None:
    """What makes a run look collapsed, as a warning text with what to try; None when nothing does.

    Two signs, read from the per-epoch metrics only: the training loss unchanged (to 1e-4
    relative) over the last 3 epochs while not near zero and while the learning rate (where the
    history records ``lr``) was at least 5% of the run's largest (a schedule's tail, where the
    lr is ~0, stops the loss without anything being wrong), and (``final``: at the end of a run of
    at least 3 epochs) an accuracy no better than always answering the most frequent class
    (``labels``: those the accuracy was measured on) plus 2 points. Runs shorter than 3 epochs
    are not judged.

    Example:
        >>> history = [{"epoch": e, "train_loss": 83.61, "test_accuracy": 0.103} for e in (1, 2, 3)]
        >>> print(collapse(history, torch.arange(100) % 10, 10))  # doctest: +ELLIPSIS
        training looks collapsed: test accuracy 10.30% is chance level ...
    """
    if len(history) < COLLAPSE_WINDOW:
        return None
    signs = []
    last = [h["train_loss"] for h in history[-COLLAPSE_WINDOW:]]
    spread = max(last) - min(last)
    lrs = [h["lr"] for h in history if "lr" in h]
    annealed = (
        len(lrs) == len(history)
        and max(lrs) > 0
        and max(lrs[-COLLAPSE_WINDOW:]) < COLLAPSE_MIN_LR_SHARE * max(lrs)
    )
    if abs(last[-1]) > 1e-3 and spread <= 1e-4 * abs(last[-1]) and not annealed:
        since = len(history) - COLLAPSE_WINDOW + 1
        while since > 1 and abs(history[since - 2]["train_loss"] - last[-1]) <= 1e-4 * abs(
            last[-1]
        ):
            since -= 1
        signs.append(f"the training loss has stayed at {last[-1]:.4g} since epoch {since}")
    if final:
        key = "test_accuracy" if "test_accuracy" in history[-1] else "train_accuracy"
        acc = history[-1].get(key)
        counts = torch.bincount(labels.long().flatten().cpu(), minlength=num_classes)
        majority = float(counts.max()) / max(int(counts.sum()), 1)
        chance = max(majority, 1 / max(num_classes, 1))
        if acc is not None and acc <= chance + 0.02:
            name = key.replace("_", " ")
            signs.insert(
                0,
                f"{name} {100 * acc:.2f}% is chance level (always answering the most frequent "
                f"class scores {100 * majority:.2f}%)",
            )
    if not signs:
        return None
    return (
        f"training looks collapsed: {' and '.join(signs)}. The model learned nothing usable; "
        "try a lower learning rate (or a higher one if the loss never moved), and check the loss "
        "settings (loss, alpha, beta) and the label noise."
    )


def fit(
    model: nn.Module,
    train_data: Dataset | ArrayDataset,
    test_data: Dataset | ArrayDataset | None = None,
    **kwargs: Any,
) -> TrainResult:
    """Train ``model``; keyword arguments are :class:`Trainer` arguments or
    :class:`TrainSettings` fields, e.g. ``fit(model, train, test, epochs=5, lr=0.05)``."""
    resume_from = kwargs.pop("resume_from", None)
    return Trainer(model, **kwargs).fit(train_data, test_data, resume_from=resume_from)
