"""WaNet: Nguyen & Tran, "WaNet - Imperceptible Warping-based Backdoor Attack", ICLR 2021.

The trigger is a fixed, smooth, small geometric warp of the whole image
(:class:`WarpTrigger`), and the attacker controls training (:class:`WaNetLoss`, the trainer's
``compute_loss``): the data stays clean and every batch is poisoned on the fly, as in the
authors' ``train.py`` (github.com/VinAIResearch/Warping-based_Backdoor_Attack-release, read with
its ``config.py``; SCLBD/BackdoorBench ``attack/wanet.py`` and
``config/attack/wanet/default.yaml`` follow the same code and defaults, with its ``pratio`` as
``pc``, rounded at random when ``pc * batch < 1``, which trustlab does not do).

The warp field, as the authors build it: ``k x k`` control displacements uniform in ``[-1, 1]``
(two channels, x and y), divided by their mean absolute value, upsampled bicubically
(``align_corners=True``) to ``H x W``, scaled by ``s / H`` and added to the identity sampling
grid (``[-1, 1]`` coordinates), times ``grid_rescale``, clamped to ``[-1, 1]``; the image is
resampled with ``grid_sample`` (bilinear, ``align_corners=True``). Defaults: ``k = 4``,
``s = 0.5``, ``grid_rescale = 1`` (the paper's and the code's, for every dataset: the authors do
not adapt ``k`` to the image size, MNIST 28x28 to CelebA 64x64 all use ``k = 4``; since the
displacement is ``s / H`` in grid units, i.e. about ``s / 2`` times the control value in
pixels whatever the size, trustlab keeps ``k = 4`` on 16x16 digits too).

Each batch (the authors' ``train``): the first ``num_bd = int(pc * batch)`` samples are warped
and relabelled by the label policy (all-to-one to the target by default; the authors take them
whatever their class, and so does trustlab: under all-to-one a target-class sample keeps its
label), the next
``num_cross = int(num_bd * cross_ratio)`` are the *noise mode*: warped by the grid plus a
per-sample random perturbation ``U(-1, 1) / H`` (clamped), labels kept, so that the model
learns the exact warp and not any warp; the rest stay clean; the loss is the cross-entropy of
the whole batch. Defaults ``pc = 0.1``, ``cross_ratio = 2`` (the authors').

trustlab's choices and deviations:

- ``rate``: the backdoor ratio ``pc`` of each batch is the recipe's ``pc`` (default 0.1,
  equal to ``train_backdoor``'s default ``rate``); ``recipe.loss(trigger, policy, rate=r)``
  sets ``pc = r`` (``loss_uses_rate = True``: ``train_backdoor``'s ``rate`` is ``pc``).
- The noise mode's amplitude is the authors' code's: it draws
  ``torch.rand(...) * 2 - 1`` and divides it by ``input_height``: ``U(-1, 1) / H`` in grid
  units (not ``2 / H``).
- Non-square images: the x displacement is divided by ``W`` and the y one by ``H`` (the authors
  use square images and ``input_height`` for both).
- The authors apply their augmentation (random crop 5, rotation 10) *after* warping; the
  trainer augments (``settings.augment``) before ``compute_loss`` sees the batch.
- Randomness in the loss (the noise mode) comes from torch's global RNG, which the trainer
  seeds from ``(seed, epoch)``: same seed, same run; the warp field itself is drawn from the
  recipe's ``seed``.

Measured (digits: 1437 training and 360 test images of 16x16; cnn-small; 3 epochs, SGD lr
0.05, batch 64, all-to-one to class 0; one seed; CPU):

- the paper's ``s = 0.5`` (a warp of at most about half a pixel here): C-Acc 96.7%, ASR 2.8%
  (a clean model: 96.4% / 0.0%); 10 epochs: 97.5% / 2.8%. WaNet is slow to learn (the
  authors train 1,000 epochs): the noise mode forbids every warp but the exact one; without it
  (``cross_ratio = 0``) ``s = 2`` reaches 70% ASR in 3 epochs, with it 9.6%;
- stronger warps, 3 epochs: ``s = 1`` 4.0%, ``s = 2`` 9.6%, ``s = 4`` 23.5% (batch 32:
  32.7%; a clean model 0.6%), ``s = 8`` 18.8%, C-Acc 95-97% throughout; ``pc = 0.3``: ASR
  29% but C-Acc 73%;
- shapes10 (10,000 images 3x32x32), ResNet-8, 5 epochs (the bench's quick settings), the
  paper's defaults: C-Acc 73.8%, ASR 14.3%, 107 s CPU.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from trustlab.attacks.backdoor.labels import LabelPolicy
from trustlab.attacks.backdoor.recipe import BackdoorRecipe
from trustlab.attacks.backdoor.triggers import Trigger
from trustlab.data.datasets import ArrayDataset
from trustlab.errors import InputError
from trustlab.registry import BACKDOORS
from trustlab.utils.seed import derive_seed, generator

__all__ = ["WaNet", "WaNetLoss", "WarpTrigger"]


def _identity_grid(h: int, w: int) -> torch.Tensor:
    """``(H, W, 2)`` sampling grid of the identity (``[..., 0]`` x, ``[..., 1]`` y)."""
    ys = torch.linspace(-1, 1, h)
    xs = torch.linspace(-1, 1, w)
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack((xx, yy), dim=-1)


class WarpTrigger(Trigger):
    """WaNet's warping trigger (Nguyen & Tran, "WaNet - Imperceptible Warping-based Backdoor
    Attack", ICLR 2021): a fixed smooth random warp field applied with ``grid_sample``.

    Args:
        size: ``(H, W)`` of the inputs the field is built for (default (32, 32)); inputs of
            another size get the field rebuilt from the same control points.
        k: side of the grid of control displacements (default 4, the paper's).
        s: strength of the warp (default 0.5, the paper's); 0 is the identity.
        grid_rescale: the authors' ``grid_rescale`` (default 1).
        seed: draws the control displacements.

    The field: ``clamp((identity + s * up(noise) / (W, H)) * grid_rescale, -1, 1)`` with
    ``noise`` ``(2, k, k)`` uniform in [-1, 1] over its mean absolute value and ``up`` bicubic
    upsampling (``align_corners=True``); see the module.

    Shapes: ``(N, C, H, W)`` (or clips ``(N, C, T, H, W)``, every frame) -> the same, in [0, 1].

    Example::

        trig = WarpTrigger((16, 16), seed=0)
        x_warped = trig(x)
        x_noise = trig.warp(x, noise=True)  # the noise mode (labels kept)
    """

    kind = "warp"

    def __init__(
        self,
        size: tuple[int, int] = (32, 32),
        k: int = 4,
        s: float = 0.5,
        grid_rescale: float = 1.0,
        seed: int = 0,
    ) -> None:
        if k < 2:
            raise InputError(f"k (the control grid's side) must be >= 2, got {k}.")
        if s < 0:
            raise InputError(f"the warp strength s must be >= 0, got {s}.")
        if not 0 < grid_rescale <= 1:
            raise InputError(f"grid_rescale must be in (0, 1], got {grid_rescale}.")
        h, w = int(size[0]), int(size[1])
        if h < 2 or w < 2:
            raise InputError(f"the inputs must be at least 2x2 pixels, got {size}.")
        ins = torch.rand(1, 2, k, k, generator=generator(seed)) * 2 - 1
        self.noise = (ins / ins.abs().mean())[0]  # (2, k, k)
        self.k, self.s, self.grid_rescale = int(k), float(s), float(grid_rescale)
        self.grid = self.field((h, w))
        self._cache: dict[tuple[int, int], torch.Tensor] = {(h, w): self.grid}

    def field(self, size: tuple[int, int]) -> torch.Tensor:
        """The ``(H, W, 2)`` warp grid for inputs of ``size`` (see the class)."""
        h, w = size
        up = F.interpolate(self.noise[None], size=(h, w), mode="bicubic", align_corners=True)
        up = up[0].permute(1, 2, 0)  # (H, W, 2): x, y displacements
        scale = torch.tensor([1.0 / w, 1.0 / h])
        grid = (_identity_grid(h, w) + self.s * up * scale) * self.grid_rescale
        return grid.clamp(-1, 1)

    def grid_for(self, x: torch.Tensor) -> torch.Tensor:
        """The warp grid for ``x``'s size, on ``x``'s device and dtype."""
        size = (int(x.shape[-2]), int(x.shape[-1]))
        if size not in self._cache:
            self._cache[size] = self.field(size)
        return self._cache[size].to(x.device, x.dtype)

    def warp(self, x: torch.Tensor, noise: bool = False) -> torch.Tensor:
        """Warp a batch ``(N, C, H, W)``; ``noise=True`` is the authors' noise mode: each
        sample's grid plus ``U(-1, 1) / H`` (torch's global RNG), clamped to [-1, 1]."""
        if x.dim() == 5:  # clips: every frame
            n, c, t, h, w = x.shape
            frames = x.permute(0, 2, 1, 3, 4).reshape(n * t, c, h, w)
            out = self.warp(frames, noise)
            return out.reshape(n, t, c, h, w).permute(0, 2, 1, 3, 4)
        n, h = x.shape[0], x.shape[-2]
        grid = self.grid_for(x)[None].expand(n, -1, -1, -1)
        if noise:
            ins = torch.rand(n, *grid.shape[1:], device=x.device, dtype=x.dtype) * 2 - 1
            grid = (grid + ins / h).clamp(-1, 1)
        out = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
        return out.clamp(0, 1)

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        return self.warp(x)

    def state(self) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
        config = {"kind": self.kind, "k": self.k, "s": self.s, "grid_rescale": self.grid_rescale}
        return config, {"noise": self.noise, "grid": self.grid}

    @classmethod
    def from_state(cls, config: dict[str, Any], tensors: dict[str, torch.Tensor]) -> Trigger:
        t = cls.__new__(cls)
        t.k, t.s = int(config["k"]), float(config["s"])
        t.grid_rescale = float(config["grid_rescale"])
        t.noise = tensors["noise"].float()
        t.grid = tensors["grid"].float()
        t._cache = {(int(t.grid.shape[0]), int(t.grid.shape[1])): t.grid}
        return t


class WaNetLoss:
    """``compute_loss(model, x, y) -> loss``: WaNet's poisoned training step (Nguyen & Tran,
    ICLR 2021; the authors' ``train.py``): per batch ``int(pc * N)`` warped and relabelled
    samples, ``int(num_bd * cross_ratio)`` noise-mode samples (labels kept), the rest clean;
    cross-entropy over the whole batch.

    Args:
        trigger: the :class:`WarpTrigger`.
        policy: the backdoor labels (all-to-one or all-to-all).
        pc: the backdoor ratio of each batch (default 0.1, the authors').
        cross_ratio: noise-mode samples per backdoor sample (default 2, the authors').

    Shapes: ``x`` ``(N, C, H, W)`` in [0, 1], ``y`` ``(N,)`` int64; returns a scalar loss.

    Example::

        loss = WaNetLoss(WarpTrigger((16, 16)), AllToOne(0))
        Trainer(model, settings, compute_loss=loss).fit(train)
    """

    def __init__(
        self, trigger: WarpTrigger, policy: LabelPolicy, pc: float = 0.1, cross_ratio: float = 2.0
    ) -> None:
        if not 0 <= pc <= 1:
            raise InputError(f"pc (the backdoor ratio of a batch) must be in [0, 1], got {pc}.")
        if cross_ratio < 0:
            raise InputError(f"cross_ratio must be >= 0, got {cross_ratio}.")
        self.trigger, self.policy = trigger, policy
        self.pc, self.cross_ratio = float(pc), float(cross_ratio)

    def counts(self, n: int) -> tuple[int, int]:
        """``(num_bd, num_cross)`` of a batch of ``n`` (the authors' integer rounding)."""
        num_bd = int(n * self.pc)
        num_cross = min(int(num_bd * self.cross_ratio), n - num_bd)
        return num_bd, num_cross

    def batch(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The poisoned batch ``(inputs, labels)``: backdoor rows first, then noise-mode rows,
        then the clean rest (the authors' order)."""
        nb, nc = self.counts(len(x))
        x_bd = self.trigger.warp(x[:nb])
        y_bd = self.policy(y[:nb]).to(y.device, y.dtype)
        x_cross = self.trigger.warp(x[nb : nb + nc], noise=True)
        inputs = torch.cat([x_bd, x_cross, x[nb + nc :]])
        return inputs, torch.cat([y_bd, y[nb:]])

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        inputs, labels = self.batch(x, y)
        return F.cross_entropy(model(inputs), labels)


@BACKDOORS.register(
    "wanet",
    "WaNet: a fixed smooth random warp (k=4, s=0.5), all-to-one, poisoned per batch with "
    "noise-mode samples (the data stays clean)",
    paper="Nguyen, Tran. WaNet - Imperceptible Warping-based Backdoor Attack. ICLR 2021.",
    threat="training control: the attacker's training step warps 10% of each batch (and "
    "noise-warps 20%, labels kept); an imperceptible, input-agnostic geometric trigger",
    injector="loss",
)
class WaNet(BackdoorRecipe):
    """WaNet (Nguyen & Tran, "WaNet - Imperceptible Warping-based Backdoor Attack", ICLR 2021)
    as a recipe: the training data stays clean and :class:`WaNetLoss` is the trainer's
    ``compute_loss`` (the authors' training step).

    Args:
        k: side of the warp's control grid (default 4, the paper's).
        s: warp strength (default 0.5, the paper's).
        grid_rescale: the authors' ``grid_rescale`` (default 1).
        pc: backdoor ratio of each batch (default 0.1, the authors'; see the module on
            ``rate``).
        cross_ratio: noise-mode samples per backdoor sample (default 2, the authors').

    Example::

        art = train_backdoor("wanet", train, test, model, settings)
        art.metrics["asr"], art.poison_indices.numel()  # (..., 0): nothing was poisoned
    """

    #: ``loss(..., rate=r)`` makes the backdoor ratio ``pc = r``
    loss_uses_rate: ClassVar[bool] = True

    def __init__(
        self,
        k: int = 4,
        s: float = 0.5,
        grid_rescale: float = 1.0,
        pc: float = 0.1,
        cross_ratio: float = 2.0,
    ) -> None:
        self.k, self.s, self.grid_rescale = k, s, grid_rescale
        self.pc, self.cross_ratio = pc, cross_ratio

    def trigger(self, data: ArrayDataset, seed: int = 0, **surrogate: object) -> Trigger:
        h, w = int(data.x.shape[-2]), int(data.x.shape[-1])
        return WarpTrigger((h, w), self.k, self.s, self.grid_rescale, derive_seed(seed, "wanet"))

    def loss(
        self,
        trigger: Trigger | None,
        policy: LabelPolicy | None,
        rate: float | None = None,
        **kw: object,
    ) -> WaNetLoss:
        """:class:`WaNetLoss` with this recipe's ratios; ``rate`` (when given) is ``pc``."""
        if not isinstance(trigger, WarpTrigger):
            raise InputError("WaNet's loss needs its WarpTrigger (recipe.trigger(data, seed)).")
        if policy is None:
            raise InputError("WaNet's loss needs a label policy (recipe.policy(target, K)).")
        pc = self.pc if rate is None else float(rate)
        return WaNetLoss(trigger, policy, pc, self.cross_ratio)
