"""Fine-pruning: Liu, Dolan-Gavitt & Garg, "Fine-Pruning: Defending Against Backdooring Attacks
on Deep Neural Networks", RAID 2018.

Backdoor behaviour tends to live in neurons that clean inputs leave dormant. The defender runs
clean (validation) data through the network, records the mean activation of every channel of
the **last convolutional layer**, and prunes channels in increasing order of mean activation
until the clean accuracy falls more than a tolerance below the original (or a maximum fraction
is pruned); then fine-tunes the pruned network on the clean data, which removes backdoors that
pruning alone leaves (and recovers accuracy).

trustlab's choices (defaults and deviations):

- **Which layer.** The last ``Conv1d/2d/3d`` in the module tree (``layer=`` names another).
  *Plain stacks* (``cnn-small``, the VGGs): a channel is pruned by zeroing its filter and bias and
  the weight and bias of the ``BatchNorm`` registered right after the convolution, if any, so the
  channel's output is exactly 0 before the activation. *Residual networks* (the last
  convolution sits in a ``residual`` branch, e.g. ``resnet8/20``): zeroing the branch leaves the
  skip path carrying the channel, so the pruned units are the channels of the **final feature
  map** (the last stage's output, what global average pooling reads): the mean activation is
  ``model.features(x)`` (the spatially averaged final map) and a channel is pruned by zeroing
  its column of ``model.classifier``. Both are plain parameter edits: the model keeps its
  architecture and state-dict keys (``save_model`` / ``load_model`` still work) and no hook is
  left behind. The mean activation is taken after the ReLU (``relu`` applied to the tapped
  convolution/BatchNorm output), as the paper ranks activations.
- **When to stop.** Channels are pruned ``step`` at a time (default: one at a time up to 64
  channels, else ``ceil(C / 64)``, at most 64 accuracy checks) while the clean accuracy stays
  within ``tolerance = 0.04`` (4 points) of the unpruned model's, up to ``max_fraction = 0.9``
  of the channels; the last step within tolerance is kept.
- **Fine-tuning** runs through the trustlab :class:`~trustlab.train.Trainer` on the same clean
  data (the paper fine-tunes on its validation data too), default 10 epochs of SGD at lr 0.05,
  batch 32, cosine schedule (the paper does not fix these for us); the pruned parameters are
  re-zeroed after every step (a :class:`~trustlab.train.Callback`), so pruned channels stay
  pruned. Measured on ``cnn-small`` trained 3 epochs on ``digits`` with BadNets at 10% (ASR
  100%), 180 clean test images for the defense and the other 180 to measure: pruning stops at
  the 90% cap (57 of 64 channels) with ASR still 100%; fine-tuning then brings ASR to 47% (clean
  accuracy 96%), while the same fine-tuning without pruning leaves it at 97%. A gentler
  fine-tuning (5 epochs at lr 0.01) left ASR at 98%. On ``resnet8`` (final-map pruning, 58% of
  the channels within tolerance) neither pruning nor fine-pruning moved ASR from 100%: the
  trigger there rides on channels that clean inputs use as well.
- ``repair`` edits the model in place and returns it (as Neural Cleanse's ``repair``); the
  report of the last call is ``FinePruning.report``.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from trustlab.data.datasets import ArrayDataset, as_array_dataset
from trustlab.defenses.backdoor.case import DefenseCase, after_repair
from trustlab.errors import InputError
from trustlab.models.wrappers import residual_branches, resolve_layer
from trustlab.registry import DEFENSES
from trustlab.train.evaluate import evaluate
from trustlab.train.trainer import Callback, Trainer, TrainSettings
from trustlab.utils.modules import device_of, frozen

CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
MAX_CHECKS = 64


@dataclass
class FinePruningReport:
    """What :meth:`FinePruning.repair` did: the layer, the pruned channels in pruning order,
    the clean accuracy before, after pruning and after fine-tuning, and the pruning curve.

    Example::

        fp = FinePruning(); fp.repair(model, clean)
        fp.report.fraction, fp.report.to_dict()["curve"]
    """

    layer: str  # the pruned convolution ("conv"), or the classifier whose columns are zeroed
    mode: str  # "conv" (filters zeroed) or "head" (classifier columns zeroed)
    channels: int
    activations: torch.Tensor  # (C,) mean clean activation per channel
    pruned: list[int]  # pruned channels, in pruning order
    accuracy_before: float
    accuracy_pruned: float
    accuracy_after: float | None = None  # after fine-tuning
    curve: list[tuple[int, float]] = field(default_factory=list)  # (pruned count, accuracy)

    @property
    def fraction(self) -> float:
        return len(self.pruned) / self.channels

    def to_dict(self) -> dict[str, Any]:
        return {
            "layer": self.layer, "mode": self.mode, "channels": self.channels,
            "pruned": list(self.pruned), "fraction": self.fraction,
            "accuracy_before": self.accuracy_before, "accuracy_pruned": self.accuracy_pruned,
            "accuracy_after": self.accuracy_after, "curve": [list(p) for p in self.curve],
        }  # fmt: skip


def last_conv(model: nn.Module) -> str:
    """The name of the last convolution (``Conv1d/2d/3d``) registered in ``model``."""
    names = [n for n, m in model.named_modules() if isinstance(m, CONVS)]
    if not names:
        raise InputError(
            f"{type(model).__name__} has no convolutional layer; fine-pruning prunes the "
            "channels of the last one (pass layer='...' to name a convolution)."
        )
    return names[-1]


class _Target:
    """The parameters whose slices silence a channel, with their original values."""

    def __init__(self, params: list[tuple[torch.Tensor, int]]) -> None:
        self.params = params  # (parameter, the dimension that indexes channels)
        self.original = [p.detach().clone() for p, _ in params]

    def apply(self, pruned: torch.Tensor) -> None:
        """Restore the originals, then zero the ``pruned`` channels."""
        with torch.no_grad():
            for (p, dim), orig in zip(self.params, self.original, strict=True):
                p.copy_(orig)
                p.index_fill_(dim, pruned.to(p.device), 0.0)

    def zero(self, pruned: torch.Tensor) -> None:
        with torch.no_grad():
            for p, dim in self.params:
                p.index_fill_(dim, pruned.to(p.device), 0.0)


class _KeepPruned(Callback):
    def __init__(self, target: _Target, pruned: torch.Tensor) -> None:
        self.target, self.pruned = target, pruned

    def on_batch_end(self, trainer: Trainer, step: int, loss: torch.Tensor) -> None:
        self.target.zero(self.pruned)


@DEFENSES.register(
    "fine-pruning",
    "fine-pruning: prune the channels clean data leaves dormant, then fine-tune",
    paper="Liu, Dolan-Gavitt, Garg. Fine-Pruning: Defending Against Backdooring Attacks on "
    "Deep Neural Networks. RAID 2018.",
    threat="model repair with a small clean set",
    protocol="repairer",
    filter=False,
    trains=True,
    budget="settings",
    headline=("asr_after", "ASR after repair"),
)
class FinePruning:
    """Fine-pruning (Liu et al., RAID 2018; see the module): ``repair(model, clean_data) ->
    model``.

    Args:
        tolerance: the largest clean-accuracy drop pruning may cause (0.04).
        max_fraction: the largest fraction of channels pruned (0.9).
        step: channels pruned between accuracy checks (default: see the module).
        layer: the convolution to prune (default: the last one).
        settings: fine-tuning settings (default 10 epochs, SGD lr 0.05, batch 32, cosine);
            use :meth:`prune` for pruning alone.
        batch_size: inference batch size for activations and accuracy.
        progress: show the fine-tuning progress bar.

    Shapes: clean data of inputs ``(N, C, H, W)`` in [0, 1] with labels ``(N,)``.

    Example::

        model = FinePruning(tolerance=0.04).repair(model, clean)
    """

    @classmethod
    def run_case(cls, c: DefenseCase) -> dict[str, float]:
        """Repair a copy of the artefact's model on the clean half: ``pruned`` (fraction of
        channels) and the repair's numbers."""
        kw = c.kwargs()
        fp = cls(progress=c.progress, **kw)
        model = fp.repair(copy.deepcopy(c.art.model), c.clean)
        assert fp.report is not None
        c.keep["report"] = fp.report
        return {"pruned": fp.report.fraction, **after_repair(c.art, model, c.ev, c.before)}

    def __init__(
        self,
        tolerance: float = 0.04,
        max_fraction: float = 0.9,
        step: int | None = None,
        layer: str | None = None,
        settings: TrainSettings | None = None,
        batch_size: int = 256,
        progress: bool = False,
    ) -> None:
        if not 0 <= tolerance < 1:
            raise InputError(f"tolerance must be in [0, 1), got {tolerance}.")
        if not 0 < max_fraction < 1:
            raise InputError(
                f"max_fraction must be in (0, 1) (some channels must stay), got {max_fraction}."
            )
        if step is not None and step < 1:
            raise InputError(f"step must be >= 1, got {step}.")
        if batch_size < 1:
            raise InputError(f"batch_size must be >= 1, got {batch_size}.")
        self.tolerance, self.max_fraction = tolerance, max_fraction
        self.step, self.layer = step, layer
        self.settings = settings or TrainSettings(epochs=10, lr=0.05, batch_size=32)
        self.batch_size, self.progress = batch_size, progress
        self.report: FinePruningReport | None = None
        self._target: _Target | None = None
        self._pruned = torch.zeros(0, dtype=torch.long)

    # -- locating the channels -----------------------------------------------------------------
    def _locate(self, model: nn.Module) -> tuple[str, str, _Target, Any]:
        """``(layer name, mode, target, activation function x -> (N, C))``."""
        name = self.layer if self.layer is not None else last_conv(model)
        conv = resolve_layer(model, name)
        if not isinstance(conv, CONVS):
            raise InputError(f"layer {name!r} is a {type(conv).__name__}, not a convolution.")
        in_branch = any(name.startswith(b + ".") for b, _ in residual_branches(model))
        if in_branch and self.layer is None:
            head = getattr(model, "classifier", None)
            if not isinstance(head, nn.Linear) or not callable(getattr(model, "features", None)):
                raise InputError(
                    f"the last convolution {name!r} is inside a residual branch and "
                    f"{type(model).__name__} has no features(x)/classifier to prune the final "
                    "feature map at; pass layer='...' to prune a convolution's filters instead."
                )

            def head_act(x: torch.Tensor) -> torch.Tensor:
                return F.relu(model.features(x).flatten(1))

            head_name = next(n for n, m in model.named_modules() if m is head)
            return head_name, "head", _Target([(head.weight, 1)]), head_act
        params: list[tuple[torch.Tensor, int]] = [(conv.weight, 0)]
        if conv.bias is not None:
            params.append((conv.bias, 0))
        tap: nn.Module = conv
        mods = [m for _, m in model.named_modules()]
        i = next(j for j, m in enumerate(mods) if m is conv)
        nxt = mods[i + 1] if i + 1 < len(mods) else None
        if (
            isinstance(nxt, nn.modules.batchnorm._BatchNorm)
            and nxt.num_features == conv.out_channels
            and nxt.affine
        ):
            params += [(nxt.weight, 0), (nxt.bias, 0)]
            tap = nxt

        def conv_act(x: torch.Tensor) -> torch.Tensor:
            seen: list[torch.Tensor] = []
            handle = tap.register_forward_hook(lambda m, i, out: seen.append(out))
            try:
                model(x)
            finally:
                handle.remove()
            return F.relu(seen[-1]).flatten(2).mean(2)

        return name, "conv", _Target(params), conv_act

    # -- the defense ---------------------------------------------------------------------------
    def prune(self, model: nn.Module, clean_data: Dataset | ArrayDataset) -> FinePruningReport:
        """Prune (in place) the most dormant channels within the accuracy tolerance."""
        data = as_array_dataset(clean_data)
        if next(iter(model.parameters()), None) is None:
            raise InputError("the model has no parameters to prune.")
        dev = device_of(model)
        name, mode, target, act = self._locate(model)
        with frozen(model), torch.no_grad():
            sums = sum(
                act(data.x[s : s + self.batch_size].to(dev)).double().sum(0)
                for s in range(0, len(data), self.batch_size)
            )
        mean_act = (sums / len(data)).float().cpu()
        channels = len(mean_act)
        order = torch.argsort(mean_act, stable=True)
        acc0 = evaluate(model, data, self.batch_size)["accuracy"]
        limit = math.floor(self.max_fraction * channels)
        step = self.step or max(1, math.ceil(channels / MAX_CHECKS))
        kept, acc_kept, curve = 0, acc0, [(0, acc0)]
        while kept < limit:
            k = min(kept + step, limit)
            target.apply(order[:k])
            acc = evaluate(model, data, self.batch_size)["accuracy"]
            curve.append((k, acc))
            if acc < acc0 - self.tolerance:
                break
            kept, acc_kept = k, acc
        target.apply(order[:kept])
        self._target, self._pruned = target, order[:kept].clone()
        self.report = FinePruningReport(
            name, mode, channels, mean_act, [int(c) for c in order[:kept]], acc0, acc_kept,
            curve=curve,
        )  # fmt: skip
        return self.report

    def repair(self, model: nn.Module, clean_data: Dataset | ArrayDataset) -> nn.Module:
        """Prune, then fine-tune on ``clean_data`` with the pruned channels held at zero; the
        model is edited in place and returned (see :attr:`report`)."""
        data = as_array_dataset(clean_data)
        report = self.prune(model, data)
        assert self._target is not None
        dev = device_of(model)
        keep = _KeepPruned(self._target, self._pruned)
        Trainer(model, self.settings, callbacks=[keep], device=dev, progress=self.progress).fit(
            data
        )
        self._target.zero(self._pruned)
        report.accuracy_after = evaluate(model, data, self.batch_size)["accuracy"]
        return model
