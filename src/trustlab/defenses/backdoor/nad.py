"""Neural Attention Distillation (NAD): Li, Lyu, Koren, Lyu, Li & Ma, "Neural Attention
Distillation: Erasing Backdoor Triggers from Deep Neural Networks", ICLR 2021.

Two steps on the defender's small clean set:

1. **Teacher**: a copy of the backdoored model fine-tuned on the clean set (the authors: "5~10
   epochs"; BackdoorBench's ``te_epochs: 10``).
2. **Student**: the backdoored model itself, trained with cross-entropy plus attention
   distillation from the teacher at chosen layers:
   ``loss = CE(student(x), y) + sum_l beta_l * AT(a_l^S, a_l^T)``, where the attention map of an
   activation ``a`` of shape ``(N, C, H, W)`` is ``A(a) = sum_c |a_c|^p`` (``(N, H, W)``),
   divided by its L2 norm over ``(H, W)`` plus ``1e-6``, and ``AT`` is the mean squared error of
   the two maps over all ``N * H * W`` entries (the authors' ``at.py``, from Zagoruyko &
   Komodakis' attention transfer; the teacher's maps are constants).

Sources read: the authors' code (bboylyg/NAD: ``main.py``, ``at.py``, ``config.py``,
``utils/util.py``, ``models/wresnet.py``, ``README.md``) and BackdoorBench's ``defense/nad.py``
with ``config/defense/nad/config.yaml``. trustlab's choices (defaults and deviations):

- **No augmentation by default**: the authors' loader crops (32, padding 4), flips and applies
  Cutout(1, 3) to the clean set, and their teacher is fine-tuned "with data augmentation";
  trustlab's default settings have none (a flip changes a digit; Cutout is not among the
  trainer's augmentations): pass ``settings`` with ``augment="crop-flip"`` for images where it
  fits.
- **Student training = the authors' main.py**: 20 epochs, batch 64, SGD lr 0.1, momentum 0.9,
  weight decay 1e-4, Nesterov, lr 0.1 for epochs 0-1 then 0.01 (their ``adjust_learning_rate``:
  ``TrainSettings(schedule="step", milestones=[2], gamma=0.1)``), p = 2. BackdoorBench keeps
  the betas, p and teacher epochs but trains 100 epochs at lr 0.01 with the same step rule.
- **Teacher training**: the authors obtain the teacher "by setting all the param beta = 0" in
  the same script, i.e. the same optimiser and schedule; trustlab trains it with the student's
  settings for ``teacher_epochs`` epochs (default: half the student's, 10 of the authors' 20;
  with the bench's 1-2 epoch budget, 1 epoch). Milestones beyond the teacher's epochs and
  warm-up epochs that would not leave one schedule epoch are dropped for the teacher.
- **Layers and betas.** The authors distil the outputs of the three groups of a WRN-16-1
  (``block1``, ``block2``, ``block3``, before the final BN-ReLU) with betas 500, 1000, 1000
  (low, middle, high; their ``config.py``, also BackdoorBench's). trustlab takes the analogous
  stage outputs (:func:`nad_layers`): ``layer1``, ``layer2``, ``layer3`` of ``resnet8/20`` (the
  stage outputs, before the ``final`` BN-ReLU, as in the WRN); the top-level ``block1..3`` of
  ``cnn8``; the two convolution outputs after their ReLU (``body.relu1``, ``body.relu2``) of
  ``cnn-small`` (the only spatial maps it has); the last ReLU of every stage of the VGGs
  (:func:`~trustlab.models.wrappers.stage_layers`). Default betas: 500 for the first layer and
  1000 for every later one (so exactly 500/1000/1000 for three layers and 500/1000 for
  ``cnn-small``); ``layers=`` and ``betas=`` override both.
- **Attention map.** The authors sum ``|a|^p`` over channels; the brief "mean over channels"
  gives the same normalised map up to the ``1e-6`` in the denominator. Activations must have
  spatial dimensions (``(N, C, ...)`` with at least one more axis); those are flattened.
- **No checkpoint selection.** The authors save the epoch whose clean accuracy passes a
  threshold; trustlab returns the student after the last epoch (the defender has no triggered
  data to select with).
- The teacher and the student run through the one :class:`~trustlab.train.Trainer` (the student
  with a ``compute_loss``; the teacher in eval mode, frozen, tapped with
  :func:`~trustlab.models.wrappers.feature_taps`). ``repair`` edits the model in place and
  returns it; the teacher is discarded.
- Measured (BadNets at 10% on ``digits``, models trained 3 epochs; evaluation half of the test
  split; one loaded CPU core). ``cnn-small`` (C-Acc 93.9%, ASR 72.4%): the authors' defaults
  (20 + 10 epochs, 7 s) give ASR 0.0% at C-Acc 90.6%; the bench's smoke budget (1 epoch, lr
  0.05; 0.7 s) 35.6% at 95.6%. ``resnet8`` (C-Acc 94.4%, ASR 100%): the authors' betas
  **destroy** the model on these 16x16 images (bench budget: C-Acc 6.7%, ASR 90.2%; authors'
  settings: C-Acc 25%, ASR 14.7%), while betas 50/100/100 with the authors' settings give ASR
  0.6% at C-Acc 93.3%. The AT loss is a mean over the map's ``H * W`` entries of squared
  normalised values, so it grows as ``1 / (H * W)``: a 4x4 map (resnet8's ``layer3`` on 16x16
  inputs) weighs 64 times a 32x32 one, and betas tuned on CIFAR's 32/16/8 maps are too strong
  for small images; lower the betas there. On a weak ``shapes10`` ``resnet8`` (3,000 training
  images, 5 epochs: C-Acc 30%, ASR 97%), the bench's quick budget (2 epochs) took 17 s and gave
  ASR 62% at C-Acc 12%.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from trustlab.data.datasets import ArrayDataset, as_array_dataset
from trustlab.defenses.backdoor.case import DefenseCase, after_repair
from trustlab.errors import InputError
from trustlab.models.wrappers import feature_taps, layer_names, stage_layers, unwrap
from trustlab.registry import DEFENSES
from trustlab.train.evaluate import evaluate
from trustlab.train.trainer import Trainer, TrainSettings
from trustlab.utils.modules import device_of, frozen

__all__ = ["NAD", "at_loss", "attention_map", "nad_layers"]

#: the authors' main.py / config.py (20 epochs, batch 64, lr 0.1 -> 0.01 after 2 epochs, ...)
NAD_SETTINGS = TrainSettings(
    epochs=20, batch_size=64, lr=0.1, momentum=0.9, weight_decay=1e-4, nesterov=True,
    schedule="step", milestones=[2], gamma=0.1,
)  # fmt: skip
EPS = 1e-6


def attention_map(a: torch.Tensor, p: float = 2.0, eps: float = EPS) -> torch.Tensor:
    """The NAD / attention-transfer map of activations ``a`` ``(N, C, *S)``: ``sum_c |a|^p``
    flattened to ``(N, prod(S))`` and divided by its L2 norm plus ``eps`` (the authors' at.py).

    Example::

        attention_map(torch.randn(2, 8, 4, 4)).shape  # (2, 16)
    """
    if a.dim() < 3:
        raise InputError(
            f"an attention map needs activations (N, C, H, W) with spatial axes, got shape "
            f"{tuple(a.shape)}; choose convolutional layers (layers=[...])."
        )
    am = a.abs().pow(p).sum(1).flatten(1)
    return am / (am.norm(dim=1, keepdim=True) + eps)


def at_loss(student: torch.Tensor, teacher: torch.Tensor, p: float = 2.0) -> torch.Tensor:
    """Mean squared difference of the two attention maps (the teacher's is detached): the AT
    loss of the authors' at.py. Shapes: both ``(N, C, *S)`` with equal ``N`` and ``S``."""
    if student.shape[0] != teacher.shape[0] or student.shape[2:] != teacher.shape[2:]:
        raise InputError(
            f"student activations {tuple(student.shape)} and teacher activations "
            f"{tuple(teacher.shape)} differ in batch or spatial size; distil the same layers of "
            "the same architecture."
        )
    return F.mse_loss(attention_map(student, p), attention_map(teacher.detach(), p))


def nad_layers(model: nn.Module) -> list[str]:
    """The distilled layers of trustlab's networks (see the module): the stage outputs
    ``layer1..K`` of the ResNets (without the stem), ``block1..K`` of ``cnn8``, else
    :func:`~trustlab.models.wrappers.stage_layers` (``cnn-small``, the VGGs)."""
    inner = unwrap(model)
    top = [n for n, _ in inner.named_children()]
    for prefix in ("layer", "block"):
        stages = sorted(
            (n for n in top if re.fullmatch(prefix + r"\d+", n)),
            key=lambda s: int(s[len(prefix) :]),
        )
        if stages:
            return stages
    try:
        return stage_layers(model)
    except InputError:
        raise InputError(
            f"NAD knows no attention layers for {type(inner).__name__}; pass layers=[...] "
            f"(convolutional outputs, low to high). Tappable layers: "
            f"{', '.join(layer_names(inner)[:12])}..."
        ) from None


def _teacher_settings(s: TrainSettings, epochs: int) -> TrainSettings:
    return TrainSettings(
        **{
            **s.model_dump(),
            "epochs": epochs,
            "milestones": [m for m in s.milestones if m <= epochs],
            "warmup_epochs": min(s.warmup_epochs, epochs - 1),
        }
    )


@DEFENSES.register(
    "nad",
    "NAD: fine-tune a teacher, then distil its attention maps into the backdoored model",
    paper="Li, Lyu, Koren, Lyu, Li, Ma. Neural Attention Distillation: Erasing Backdoor "
    "Triggers from Deep Neural Networks. ICLR 2021.",
    threat="model repair with a small clean set",
    protocol="repairer",
    filter=False,
    trains=True,
    budget="settings",
    headline=("asr_after", "ASR after repair"),
)
class NAD:
    """Neural Attention Distillation (Li et al., ICLR 2021; see the module): ``repair(model,
    clean_data) -> model``.

    Args:
        betas: the weight of each layer's AT loss (default 500 for the first layer, 1000 for
            the others: the authors' 500/1000/1000 for three layers).
        layers: the distilled layers, low to high (default :func:`nad_layers`).
        p: the power of the attention map (2.0).
        teacher_epochs: the teacher's fine-tuning epochs (default half the student's, at least
            1: 10 with the default settings).
        settings: the student's training settings (default the authors': 20 epochs, batch 64,
            SGD lr 0.1, 0.01 from epoch 2, momentum 0.9, Nesterov, weight decay 1e-4); the
            teacher uses them too, for ``teacher_epochs``.
        batch_size: inference batch size of the accuracies in :attr:`report`.
        progress: show the training progress bars.

    Shapes: clean data of inputs ``(N, C, H, W)`` in [0, 1] with labels ``(N,)``; the layers'
    outputs ``(N, C_l, H_l, W_l)``.

    Example::

        model = NAD(settings=TrainSettings(epochs=5, lr=0.01)).repair(model, clean)
    """

    @classmethod
    def run_case(cls, c: DefenseCase) -> dict[str, float]:
        """Repair a copy of the artefact's model on the clean half (the bench's budget as the
        student's and teacher's settings) and measure it."""
        kw = c.kwargs()
        nad = cls(progress=c.progress, **kw)
        model = nad.repair(copy.deepcopy(c.art.model), c.clean)
        c.keep["report"] = nad.report
        return after_repair(c.art, model, c.ev, c.before)

    def __init__(
        self,
        betas: Sequence[float] | None = None,
        layers: Sequence[str] | None = None,
        p: float = 2.0,
        teacher_epochs: int | None = None,
        settings: TrainSettings | None = None,
        batch_size: int = 256,
        progress: bool = False,
    ) -> None:
        if settings is not None and not isinstance(settings, TrainSettings):
            raise InputError(
                f"settings must be a trustlab TrainSettings, got {type(settings).__name__}."
            )
        if isinstance(layers, str):
            layers = [layers]
        if layers is not None and len(layers) == 0:
            raise InputError("layers is empty; give at least one layer to distil (or None).")
        if betas is not None:
            betas = [float(b) for b in betas]
            if any(not b >= 0 for b in betas):
                raise InputError(f"betas must be >= 0, got {betas}.")
            if layers is not None and len(betas) != len(layers):
                raise InputError(
                    f"{len(betas)} betas for {len(layers)} layers; give one beta per layer."
                )
        if not p > 0:
            raise InputError(f"p must be > 0, got {p}.")
        if teacher_epochs is not None and teacher_epochs < 1:
            raise InputError(f"teacher_epochs must be >= 1, got {teacher_epochs}.")
        if batch_size < 1:
            raise InputError(f"batch_size must be >= 1, got {batch_size}.")
        self.betas = None if betas is None else list(betas)
        self.layers = None if layers is None else list(layers)
        self.p, self.teacher_epochs = float(p), teacher_epochs
        self.settings = settings or NAD_SETTINGS
        self.batch_size, self.progress = batch_size, progress
        self.report: dict[str, Any] | None = None

    def _plan(self, model: nn.Module) -> tuple[list[str], list[float]]:
        layers = self.layers if self.layers is not None else nad_layers(model)
        betas = self.betas if self.betas is not None else [500.0] + [1000.0] * (len(layers) - 1)
        if len(betas) != len(layers):
            raise InputError(
                f"{len(betas)} betas for the {len(layers)} layers {layers}; give one beta per "
                "layer (or layers=[...] with them)."
            )
        return layers, betas

    def teacher(self, model: nn.Module, clean_data: Dataset | ArrayDataset) -> nn.Module:
        """A fine-tuned copy of ``model`` (the teacher); ``model`` is unchanged."""
        data = as_array_dataset(clean_data)
        te = self.teacher_epochs or max(1, self.settings.epochs // 2)
        t = copy.deepcopy(model)
        dev = device_of(model)
        Trainer(t, _teacher_settings(self.settings, te), device=dev, progress=self.progress).fit(
            data
        )
        return t

    def repair(self, model: nn.Module, clean_data: Dataset | ArrayDataset) -> nn.Module:
        """Train a teacher, then distil it into ``model`` (in place); returns the model.
        :attr:`report` holds the layers, betas and the clean accuracies on ``clean_data``."""
        data = as_array_dataset(clean_data)
        if len(data) == 0:
            raise InputError("the clean set is empty; NAD needs labelled clean samples.")
        if next(iter(model.parameters()), None) is None:
            raise InputError("the model has no parameters to repair.")
        layers, betas = self._plan(model)
        # fail early (before any training) on layers without spatial maps
        with feature_taps(model, layers, detach=True) as feats, frozen(model), torch.no_grad():
            model(data.x[:2].to(device_of(model)))
        for name in layers:
            attention_map(feats[name], self.p)
        acc0 = evaluate(model, data, self.batch_size)["accuracy"]
        teacher = self.teacher(model, data)
        acc_t = evaluate(teacher, data, self.batch_size)["accuracy"]
        p = self.p

        with (
            frozen(teacher),
            feature_taps(teacher, layers) as ft,
            feature_taps(model, layers) as fs,
        ):

            def loss(student: nn.Module, x: torch.Tensor, y: torch.Tensor):
                with torch.no_grad():
                    teacher(x)
                logits = student(x)
                total = F.cross_entropy(logits, y)
                for name, beta in zip(layers, betas, strict=True):
                    if beta:
                        total = total + beta * at_loss(fs[name], ft[name], p)
                return total, logits

            dev = device_of(model)
            Trainer(
                model, self.settings, compute_loss=loss, device=dev, progress=self.progress
            ).fit(data)
        self.report = {
            "layers": layers, "betas": betas, "p": p,
            "accuracy_before": acc0, "accuracy_teacher": acc_t,
            "accuracy_after": evaluate(model, data, self.batch_size)["accuracy"],
        }  # fmt: skip
        return model
