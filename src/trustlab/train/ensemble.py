"""Vectorised ensembles: train K models of one architecture at once, as :class:`Trainer` would
train them one by one.

Shadow-model attacks (LiRA, RMIA) and repeated small trainings fit many copies of one small
network, each on its own data and seed. :func:`train_ensemble` stacks the K models' parameters
(``torch.func.stack_module_state``) and runs every training step of all of them as one batched
model (``torch.func.vmap`` over ``torch.func.functional_call``; a convolution with per-member
weights becomes one grouped convolution), so the per-step work of K models is done by a few large
kernels instead of K small ones. Each member keeps everything the trainer gives it:

- its own data, its own shuffle ``epoch_indices(n, True, derive_seed(seed, "shuffle", epoch))``
  and augmentation generator ``derive_seed(seed, "augment", epoch, 0)``, and so its own number of
  steps per epoch and its own (partial) last batch, which the trainer does not drop;
- the trainer's optimizer (``build_optimizer``: SGD with momentum / Nesterov / weight decay, Adam,
  AdamW) updated with the same elementwise formulas, step counts per member (a member with fewer
  steps in an epoch is simply not updated in the steps it does not have);
- the learning-rate schedule ``settings.lr_at(epoch)``, label smoothing, ``clip_grad_norm`` (each
  member's global norm), BatchNorm in training mode with per-member running statistics;
- the trainer's checks: ``check_model_fits``, a non-finite loss stops training with
  ``FloatingPointError``, the collapse warning.

The trained parameters equal those of ``Trainer(model_k, settings_k).fit(data_k)`` for every
member to float tolerance (batched kernels sum in another order; about 1e-6 after a few epochs).

**Supported subset** (:func:`unsupported_reason` says why a recipe is not):

- the default cross-entropy loss (with ``label_smoothing``); not ``loss_fn`` / ``compute_loss``
  (arbitrary Python, e.g. losses that count their calls or draw random numbers);
- no DP-SGD (per-sample clipping, Poisson batches and noise are the privacy engine's own);
- no dropout with ``p > 0`` and no other random operation in the forward pass (the trainer draws
  them from the global RNG, one stream per run, which a batched model cannot reproduce);
- no datasets whose triggers wait for the trainer (``trigger_rows``), no ``torchrun``;
- BatchNorm with a ``momentum`` (not the cumulative average, ``momentum=None``).

``channels_last`` is a memory layout only: the returned models are converted to it as the trainer
converts them, but the batched model runs in the default layout (same numbers to float tolerance).
Callbacks, checkpoints, resuming and test-set evaluation are the trainer's; an ensemble trains
from start to end in memory.

A batch of a member that has fewer samples than the others (its partial last batch) is padded
with zero-weight rows when the model treats samples independently (convolutions, linear layers,
pooling, ...), and run as a smaller group of members when it does not (BatchNorm, whose batch
statistics must come from the member's real samples only).
"""

from __future__ import annotations

import copy
import math
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, stack_module_state, vmap
from torch.utils.data import Dataset

from trustlab.data.augment import augment_batch
from trustlab.data.datasets import ArrayDataset, as_array_dataset
from trustlab.data.loader import epoch_indices
from trustlab.errors import InputError
from trustlab.train import distributed as D
from trustlab.train.trainer import (
    TrainResult,
    TrainSettings,
    build_optimizer,
    check_model_fits,
    collapse,
    row_triggers_of,
)
from trustlab.utils.device import resolve_device
from trustlab.utils.progress import progress_bar
from trustlab.utils.seed import derive_seed, generator

__all__ = ["train_ensemble", "unsupported_reason"]

#: leaf modules that treat every sample of a batch on its own (a zero-weight padding row changes
#: nothing for the real ones); a model made only of these (and containers) is padded
_PER_SAMPLE = (
    nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear, nn.Identity, nn.Flatten, nn.Unflatten,
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Sigmoid, nn.Tanh, nn.Softplus,
    nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
    nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d, nn.AdaptiveMaxPool2d,
    nn.GroupNorm, nn.LayerNorm, nn.Dropout, nn.Dropout2d, nn.Dropout3d,
)  # fmt: skip
#: settings that may differ between members (the seed) or do not touch training
_MAY_DIFFER = frozenset({"seed", "eval_every", "eval_batch_size"})


def unsupported_reason(
    model: nn.Module,
    settings: TrainSettings,
    *,
    loss_fn: Callable[..., Any] | None = None,
    compute_loss: Callable[..., Any] | None = None,
) -> str | None:
    """Why ``model`` trained with ``settings`` (and the trainer's ``loss_fn`` / ``compute_loss``)
    cannot be trained as a vectorised ensemble, or None when it can (see the module for the
    supported subset). Callers fall back to training the members one by one.

    Example:
        >>> unsupported_reason(nn.Sequential(nn.Flatten(), nn.Linear(4, 2)), TrainSettings())
        >>> unsupported_reason(nn.Dropout(0.5), TrainSettings())
        'dropout with p > 0 (Dropout) draws from the global RNG, one stream per run'
    """
    if settings.dp is not None:
        return "DP-SGD (per-sample clipping, Poisson batches and noise) is not vectorised"
    if compute_loss is not None:
        return "a custom compute_loss(model, x, y) is arbitrary code the batched model cannot run"
    if loss_fn is not None:
        return "a custom loss_fn is not vectorised (only the default cross-entropy is)"
    if D.env_world_size() > 1:
        return "training under torchrun (DistributedDataParallel) is not vectorised"
    for name, module in model.named_modules():
        if isinstance(module, nn.modules.dropout._DropoutNd) and module.p > 0:
            return (
                f"dropout with p > 0 ({type(module).__name__}{' ' + name if name else ''}) "
                "draws from the global RNG, one stream per run"
            )
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.momentum is None:
            return f"BatchNorm {name} with momentum=None (a cumulative average) is not vectorised"
    for name, p in model.named_parameters():
        if not p.is_floating_point() or p.is_sparse:
            return f"parameter {name} is not a dense floating-point tensor"
    try:
        _Hyper.of(settings)
    except InputError as exc:
        return str(exc)
    return None


@dataclass(frozen=True)
class _Hyper:
    """The optimizer hyper-parameters the trainer's ``build_optimizer`` uses (read from one it
    builds, so that its defaults are the ones applied here)."""

    kind: str
    momentum: float
    dampening: float
    nesterov: bool
    weight_decay: float
    betas: tuple[float, float]
    eps: float

    @classmethod
    def of(cls, s: TrainSettings) -> _Hyper:
        group = build_optimizer([torch.zeros(1, requires_grad=True)], s).param_groups[0]
        for key in ("maximize", "amsgrad", "differentiable", "capturable", "fused"):
            if group.get(key):
                raise InputError(f"the trainer's optimizer sets {key}, which is not vectorised")
        betas = tuple(float(b) for b in group.get("betas", (0.9, 0.999)))
        return cls(
            s.optimizer, float(group.get("momentum", 0.0)), float(group.get("dampening", 0.0)),
            bool(group.get("nesterov", False)), float(group["weight_decay"]),
            (betas[0], betas[1]), float(group.get("eps", 1e-8)),
        )  # fmt: skip


def _check_members(
    models: Sequence[nn.Module],
    datasets: Sequence[Dataset | ArrayDataset],
    settings: TrainSettings | Sequence[TrainSettings],
) -> tuple[list[ArrayDataset], list[TrainSettings]]:
    k = len(models)
    if k == 0:
        raise InputError("train_ensemble needs at least one model.")
    if len(datasets) != k:
        raise InputError(f"{k} models but {len(datasets)} datasets; give one dataset per model.")
    if isinstance(settings, TrainSettings):
        per = [settings] * k
    else:
        per = list(settings)
        if len(per) != k:
            raise InputError(f"{k} models but {len(per)} settings; give one per model (or one).")
    first = per[0].model_dump(exclude=set(_MAY_DIFFER))
    for i, s in enumerate(per[1:], start=1):
        other = s.model_dump(exclude=set(_MAY_DIFFER))
        if other != first:
            diff = sorted(key for key in first if first[key] != other[key])
            raise InputError(
                f"the settings of member {i} differ from member 0's in {', '.join(diff)}; an "
                "ensemble's members may differ in their seed only."
            )
    arch = _architecture(models[0])
    for i, m in enumerate(models[1:], start=1):
        if type(m) is not type(models[0]) or _architecture(m) != arch:
            raise InputError(
                f"model {i} is not the same architecture as model 0 (type, parameter and buffer "
                "names, shapes and dtypes must match); an ensemble stacks one architecture."
            )
    data = [as_array_dataset(d) for d in datasets]
    for i, d in enumerate(data):
        if len(d) == 0:
            raise InputError(f"the dataset of member {i} is empty.")
        if row_triggers_of(d) is not None:
            raise InputError(
                f"the dataset of member {i} carries triggers applied after augmentation "
                "(trigger_rows); the vectorised ensemble does not apply them: train it one by one."
            )
    return data, per


def _architecture(m: nn.Module) -> tuple:
    params = [(n, tuple(p.shape), p.dtype, p.requires_grad) for n, p in m.named_parameters()]
    buffers = [(n, tuple(b.shape), b.dtype) for n, b in m.named_buffers()]
    return tuple(params), tuple(buffers)


def _per_sample(model: nn.Module) -> bool:
    """True when every leaf module treats each sample on its own (zero-weight padding is safe)."""
    leaves = [m for m in model.modules() if not any(True for _ in m.children())]
    return all(isinstance(m, _PER_SAMPLE) or type(m).__name__ == "PadShortcut" for m in leaves)


class _Optimizer:
    """The trainer's optimizer applied to stacked parameters ``(K, ...)``, member by member in
    effect: the same elementwise formulas as ``torch.optim.SGD`` / ``Adam`` / ``AdamW`` (single
    tensor path), with a step count per member."""

    def __init__(self, params: list[torch.Tensor], hyper: _Hyper, k: int) -> None:
        self.params, self.h = params, hyper
        self.steps = [0] * k
        self.state: list[list[torch.Tensor]] = []
        if hyper.kind == "sgd":
            self.state = [[torch.zeros_like(p)] for p in params] if hyper.momentum else []
        else:
            self.state = [[torch.zeros_like(p), torch.zeros_like(p)] for p in params]

    @torch.no_grad()
    def step(self, members: list[int], lr: float, all_members: bool) -> None:
        h = self.h
        if h.kind == "sgd":
            first = self.steps[members[0]] == 0
            if any((self.steps[m] == 0) != first for m in members):
                raise AssertionError("members started at different steps")  # all start at step 0
            self._apply(members, all_members, lambda p, g, st: self._sgd(p, g, st, lr, first))
            for m in members:
                self.steps[m] += 1
            return
        by_count: dict[int, list[int]] = {}
        for m in members:
            self.steps[m] += 1
            by_count.setdefault(self.steps[m], []).append(m)
        for count, group in by_count.items():
            whole = all_members and len(group) == len(members)
            self._apply(group, whole, lambda p, g, st, c=count: self._adam(p, g, st, lr, c))

    def _apply(self, members: list[int], whole: bool, update: Callable[..., None]) -> None:
        idx = None if whole else torch.tensor(members, device=self.params[0].device)
        for i, p in enumerate(self.params):
            if p.grad is None:
                continue
            state = self.state[i] if self.state else []
            if idx is None:
                update(p, p.grad, state)
                continue
            sub_p, sub_s = p[idx], [s[idx] for s in state]
            update(sub_p, p.grad[idx], sub_s)
            p.index_copy_(0, idx, sub_p)
            for s, sub in zip(state, sub_s, strict=True):
                s.index_copy_(0, idx, sub)

    def _sgd(self, p: torch.Tensor, g: torch.Tensor, st: list, lr: float, first: bool) -> None:
        h = self.h
        if h.weight_decay != 0:
            g = g.add(p, alpha=h.weight_decay)
        if h.momentum != 0:
            buf = st[0]
            if first:
                buf.copy_(g)
            else:
                buf.mul_(h.momentum).add_(g, alpha=1 - h.dampening)
            g = g.add(buf, alpha=h.momentum) if h.nesterov else buf
        p.add_(g, alpha=-lr)

    def _adam(self, p: torch.Tensor, g: torch.Tensor, st: list, lr: float, step: int) -> None:
        h = self.h
        exp_avg, exp_avg_sq = st
        beta1, beta2 = h.betas
        if h.weight_decay != 0:
            if h.kind == "adamw":
                p.mul_(1 - lr * h.weight_decay)
            else:
                g = g.add(p, alpha=h.weight_decay)
        exp_avg.lerp_(g, 1 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(g, g, value=1 - beta2)
        step_size = lr / (1 - beta1 ** float(step))
        bias_correction2_sqrt = (1 - beta2 ** float(step)) ** 0.5
        denom = (exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(h.eps)
        p.addcdiv_(exp_avg, denom, value=-step_size)


def _clip_grad_norm(params: list[torch.Tensor], max_norm: float) -> None:
    """``nn.utils.clip_grad_norm_`` of every member on its own: stacked grads ``(K, ...)``."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    norms = torch.stack([g.flatten(1).norm(2, dim=1) for g in grads], dim=1)  # (K, P)
    total = torch.linalg.vector_norm(norms, 2, dim=1)  # (K,)
    coef = (max_norm / (total + 1e-6)).clamp(max=1.0)
    for g in grads:
        g.mul_(coef.view(-1, *([1] * (g.dim() - 1))).to(g.dtype))


class _Ensemble:
    """The stacked state of K members and one batched training step over any group of them."""

    def __init__(self, models: Sequence[nn.Module], device: torch.device, ls: float) -> None:
        self.k = len(models)
        self.device = device
        self.smoothing = ls
        self.skeleton = copy.deepcopy(models[0]).to(device).train()
        params, buffers = stack_module_state([m.to(device) for m in models])
        grad_names = {n for n, p in models[0].named_parameters() if p.requires_grad}
        self.params = {n: p.detach().requires_grad_() for n, p in params.items() if n in grad_names}
        self.frozen = {n: p.detach() for n, p in params.items() if n not in grad_names}
        self.frozen.update({n: b.clone() for n, b in buffers.items()})
        self.changing = [n for n in buffers]  # buffers may be updated in training (BatchNorm)
        self.per_sample = _per_sample(models[0])
        self._run = vmap(self._member, in_dims=(0, 0, 0, 0, 0, 0), randomness="error")

    def _member(self, params, frozen, x, y, weight, size):  # one member, under vmap
        logits = functional_call(self.skeleton, (params, frozen), (x,))
        losses = F.cross_entropy(logits, y, reduction="none", label_smoothing=self.smoothing)
        return (losses * weight).sum() / size, logits

    def forward_backward(
        self, members: list[int], x: torch.Tensor, y: torch.Tensor, weight: torch.Tensor,
        size: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
        """Losses ``(G,)`` and logits ``(G, B, C)`` of ``members`` on their batches ``x`` ``(G, B,
        ...)``; the gradients of each member's mean loss are added to the stacked ``.grad``."""
        if len(members) == self.k:
            params, frozen, idx = self.params, self.frozen, None
        else:
            idx = torch.tensor(members, device=self.device)
            params = {n: p[idx] for n, p in self.params.items()}
            frozen = {n: b[idx] for n, b in self.frozen.items()}
        loss, logits = self._run(params, frozen, x, y, weight, size)
        loss.sum().backward()
        if idx is not None:
            with torch.no_grad():
                for n in self.changing:
                    self.frozen[n].index_copy_(0, idx, frozen[n])
        return loss.detach(), logits.detach()

    def load_into(self, models: Sequence[nn.Module]) -> None:
        with torch.no_grad():
            for i, m in enumerate(models):
                for n, p in m.named_parameters():
                    p.copy_((self.params.get(n) if n in self.params else self.frozen[n])[i])
                for n, b in m.named_buffers():
                    b.copy_(self.frozen[n][i])


def train_ensemble(
    models: Sequence[nn.Module],
    datasets: Sequence[Dataset | ArrayDataset],
    settings: TrainSettings | Sequence[TrainSettings],
    *,
    device: str | torch.device = "auto",
    progress: bool = False,
) -> list[TrainResult]:
    """Train ``models[k]`` on ``datasets[k]`` with ``settings[k]`` for every k at once, as one
    batched model; the same as ``[Trainer(m, s, device=device).fit(d) for m, d, s in ...]`` to
    float tolerance. The same arithmetic in fewer, larger kernels: on a GPU, where one small
    model leaves the device mostly idle, that is where it pays; on a CPU it measured 1.13x for
    cnn-small and 0.42x for resnet8 (``benchmarks/shadows.py``).

    Args:
        models: K models of one architecture (their initial weights are each member's own); they
            are trained in place (moved to ``device``) and returned in eval mode.
        datasets: one training set per model (sizes may differ).
        settings: one :class:`TrainSettings` for all, or one per model differing in ``seed``
            only.
        device: ``"auto"`` (default), ``"cpu"``, ``"cuda"`` or a ``torch.device``.
        progress: a progress bar over the epochs (only on a terminal); default False.

    Returns:
        One :class:`TrainResult` per member (its model and per-epoch ``history``: ``epoch``,
        ``lr``, ``train_loss``, ``train_accuracy``, ``epoch_seconds``: the member's share of the
        ensemble's epoch).

    Raises:
        InputError: mismatched inputs, or a recipe outside the supported subset
            (:func:`unsupported_reason`).
        FloatingPointError: a member's training loss became non-finite.

    Example:
        >>> data = [ArrayDataset(torch.rand(40 + i, 1, 8, 8), torch.arange(40 + i) % 2)
        ...         for i in range(3)]
        >>> models = [nn.Sequential(nn.Flatten(), nn.Linear(64, 2)) for _ in range(3)]
        >>> settings = [TrainSettings(epochs=2, lr=0.01, seed=i) for i in range(3)]
        >>> results = train_ensemble(models, data, settings, device="cpu")
        >>> len(results), results[0].final["epoch"]
        (3, 2)
    """
    data, per = _check_members(models, datasets, settings)
    s = per[0]
    reason = unsupported_reason(models[0], s)
    if reason is not None:
        raise InputError(
            f"these models cannot be trained as one vectorised ensemble: {reason}. Train them one "
            "by one with Trainer."
        )
    dev = resolve_device(device)
    for m, d in zip(models, data, strict=True):
        m.to(dev)
        check_model_fits(m, d, None, dev)
    hyper = _Hyper.of(s)
    ens = _Ensemble(models, dev, s.label_smoothing)
    opt = _Optimizer(list(ens.params.values()), hyper, ens.k)
    histories: list[list[dict[str, float]]] = [[] for _ in models]
    warned = [False] * ens.k
    with progress_bar("ensemble", s.epochs, progress, eta=True) as bar:
        for epoch in range(s.epochs):
            start = time.perf_counter()
            stats = _train_epoch(ens, opt, data, per, epoch)
            took = time.perf_counter() - start
            for i, (loss_total, n_correct) in enumerate(stats):
                n = len(data[i])
                if not math.isfinite(loss_total):
                    raise FloatingPointError(
                        f"ensemble member {i}: training loss became {loss_total} in epoch "
                        f"{epoch + 1}; lower the learning rate or set clip_grad_norm."
                    )
                histories[i].append({
                    "epoch": epoch + 1, "lr": s.lr_at(epoch), "train_loss": loss_total / n,
                    "epoch_seconds": took / ens.k, "train_accuracy": n_correct / n,
                })  # fmt: skip
                _warn_collapse(histories[i], data[i], i, warned, final=False)
            bar()
    for i in range(ens.k):
        _warn_collapse(histories[i], data[i], i, warned, final=True)
    ens.load_into(models)
    fmt = torch.channels_last if s.channels_last and data[0].x.dim() == 4 else None
    results = []
    for m, h in zip(models, histories, strict=True):
        if fmt is not None:
            m.to(memory_format=fmt)
        results.append(TrainResult(m.eval(), h))
    return results


def _warn_collapse(
    history: list[dict[str, float]], data: ArrayDataset, i: int, warned: list[bool], final: bool
) -> None:
    if warned[i]:
        return
    found = collapse(history, data.y, data.num_classes, final=final)
    if found is not None:
        warned[i] = True
        warnings.warn(f"ensemble member {i}: {found}", UserWarning, stacklevel=3)


def _train_epoch(
    ens: _Ensemble,
    opt: _Optimizer,
    data: list[ArrayDataset],
    per: list[TrainSettings],
    epoch: int,
) -> list[tuple[float, float]]:
    """One epoch of every member; returns per member (summed loss, correct predictions)."""
    s = per[0]
    lr, bs, k, dev = s.lr_at(epoch), s.batch_size, ens.k, ens.device
    orders = [
        epoch_indices(len(d), True, derive_seed(m.seed, "shuffle", epoch))
        for d, m in zip(data, per, strict=True)
    ]
    gens = [generator(derive_seed(m.seed, "augment", epoch, 0)) for m in per]
    steps = [math.ceil(len(d) / bs) for d in data]
    loss_sum = torch.zeros(k, dtype=torch.float64, device=dev)
    correct = torch.zeros(k, dtype=torch.int64, device=dev)
    non_blocking = dev.type == "cuda"
    for t in range(max(steps)):
        active = [i for i in range(k) if t < steps[i]]
        batches = {}
        for i in active:
            idx = orders[i][t * bs : (t + 1) * bs]
            x = data[i].x[idx].to(dev, non_blocking=non_blocking)
            if s.augment != "none":
                x = augment_batch(x, s.augment, gens[i])
            batches[i] = (x, data[i].y[idx].to(dev, non_blocking=non_blocking))
        for p in ens.params.values():
            p.grad = None
        for group in _groups(active, batches, ens.per_sample):
            size = max(batches[i][1].shape[0] for i in group)
            x, y, w, n = _stack(group, batches, size, dev)
            loss, logits = ens.forward_backward(group, x, y, w, n)
            members = torch.tensor(group, device=dev)
            loss_sum.index_add_(0, members, loss.double() * n.double())
            hits = ((logits.argmax(-1) == y) & (w > 0)).sum(1)
            correct.index_add_(0, members, hits)
        if s.clip_grad_norm is not None:
            _clip_grad_norm(list(ens.params.values()), s.clip_grad_norm)
        opt.step(active, lr, all_members=len(active) == k)
    return list(zip(loss_sum.tolist(), correct.double().tolist(), strict=True))


def _groups(
    active: list[int], batches: dict[int, tuple[torch.Tensor, torch.Tensor]], per_sample: bool
) -> list[list[int]]:
    """Members that run as one batched call: all active ones when padding is safe, else those
    with the same batch size."""
    if per_sample:
        return [active]
    by_size: dict[int, list[int]] = {}
    for i in active:
        by_size.setdefault(batches[i][1].shape[0], []).append(i)
    return list(by_size.values())


def _stack(
    group: list[int],
    batches: dict[int, tuple[torch.Tensor, torch.Tensor]],
    size: int,
    dev: torch.device,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The group's batches as ``x (G, size, ...)``, ``y (G, size)``, sample weights ``(G, size)``
    (1 for real samples, 0 for padding) and real batch sizes ``(G,)`` (float)."""
    sizes = [batches[i][1].shape[0] for i in group]
    if all(b == size for b in sizes):
        x = torch.stack([batches[i][0] for i in group])
        y = torch.stack([batches[i][1] for i in group])
        w = torch.ones(y.shape, device=dev)
    else:
        first = batches[group[0]][0]
        x = first.new_zeros((len(group), size, *first.shape[1:]))
        y = torch.zeros((len(group), size), dtype=torch.long, device=dev)
        w = torch.zeros((len(group), size), device=dev)
        for j, i in enumerate(group):
            b = sizes[j]
            x[j, :b], y[j, :b], w[j, :b] = batches[i][0], batches[i][1], 1.0
    n = torch.tensor(sizes, dtype=torch.float32, device=dev)
    return x, y, w, n
