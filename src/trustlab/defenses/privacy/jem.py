"""The JEM membership-inference defense: resample the training distribution from the classifier.

Chen et al., "Protect Privacy of Deep Classification Networks by Exploiting Their Generative
Power" (Machine Learning 110, 2021; code: github.com/ChenJiyu/meminf-defense), built on
Grathwohl et al., "Your Classifier is Secretly an Energy Based Model and You Should Treat it
Like One" (JEM, ICLR 2020). A classifier ``f`` is also an energy model
``E(x) = -logsumexp_y f(x)[y]`` (:func:`energy`). The defense has three phases:

1. **Transfer to a JEM.** A copy of the trained (private) classifier is fine-tuned on the private
   set with ``CE + 0.1 CE^2 + D + 0.1 D^2``, ``D = E(x_data) - E(x_sgld)`` (:class:`JEMLoss`,
   plugged into the one training loop :class:`~trustlab.train.Trainer` as its
   ``compute_loss``), where ``x_sgld`` comes from persistent SGLD with a replay buffer
   (:class:`SGLDSampler`), and the learning rate warms up linearly over the first 1,000 steps.
2. **Sample** a labelled synthetic set from the JEM (:func:`sample_synthetic`).
3. **Retrain** a *fresh* network of the same architecture only on the synthetic set, so that
   the released model is a function of samples that are independent of the private set given
   the JEM (:class:`JEMDefense`).

Defaults are the papers' where they fix them:

- SGLD (JEM, and the authors' ``train_jem.py``): 20 steps per draw, step size 1, noise std 0.01,
  replay buffer of 10,000 initialised from uniform noise, each draw re-initialised from uniform
  noise with probability 0.05 (a Bernoulli draw per sample, as in JEM's code); the chains
  *ascend* ``logsumexp f(x)`` (``x += step * grad + noise * N(0, I)``, JEM's update, which keeps
  the step and the noise decoupled rather than the textbook ``step = noise^2 / 2``).
- Loss weights 1 and 1 (JEM's ``p_y_given_x_weight = p_x_weight = 1``); data noise std 0.03
  added to every training input (JEM's ``sigma``).
- The defense authors' stabilisers of the transfer (their ``train_jem.py`` run with
  ``params/transfer_params.txt``; JEM's ``train_wrn_ebm.py`` has no such penalty): ``--l2reg``
  with ``--p_x_weight_l2reg 0.1`` and ``--p_y_given_x_weight_l2reg 0.1``, i.e. ``0.1 * D^2 +
  0.1 * CE^2`` added to the loss, where ``D`` is the batch's mean data energy minus its mean
  sample energy and ``CE`` the batch's mean cross-entropy (squares of batch means: the gap is
  damped, the energies' level is not pinned); and ``--warmup_iters 1000``: the lr of optimiser
  step ``k`` (counted from 0 over all epochs) is ``lr * min(k, 1000) / 1000``, so the first
  step has lr 0 (JEM's own README command and ``jem_params.txt`` use the same 1,000-step
  warm-up; the squared penalties are the defense authors' addition). On CIFAR-10 1,000 steps are
  1.4 of the authors' 50 epochs (2.8% of their 35,150 steps); the library default keeps the
  count of steps, so on a small private set the warm-up lasts longer than that (500 members make
  8 steps per epoch: 50 epochs, 400 steps, would end at 40% of the peak lr), and the
  ``meminf-jem`` quick and real presets keep the authors' share instead (11 of 400 steps).
  ``energy_l2 = ce_l2 = warmup_iters = 0`` gives JEM's loss without the stabilisers.
- Class-conditional sampling (the authors' ``--class_cond_p_x_sample``, on by default here,
  ``conditional=False`` gives JEM's unconditional sampling): each draw asks for a class ``y``
  (uniform during fine-tuning), starts from the class-``y`` part of the buffer (the buffer is
  split into ``num_classes`` equal parts, as in JEM) and ascends ``f(x)[y]``; the energy term
  still scores the sample with the unconditional ``E(x)``, as the authors' code does.
- Synthetic set (the authors' ``sample_from_model``): class-conditional draws from the fine-tuned
  JEM's persistent buffer, a sample of class ``y`` kept when the classifier predicts ``y`` with a
  softmax probability above ``threshold = 0.5``; balanced classes. Labels are the JEM
  classifier's argmax (= the requested class for every kept sample; unconditional sampling keeps
  samples whose argmax is confident and labels them with it). The authors filter with the
  *original* classifier; trustlab uses the JEM's own classifier by default (``labeler=`` takes
  another model).

**Pixel range.** trustlab's images live in ``[0, 1]`` and the models normalise inside, while JEM
works on images scaled to ``[-1, 1]`` (``u = 2x - 1``). ``step_size``, ``noise`` and
``data_noise`` are given in JEM's ``[-1, 1]`` units, so the paper's numbers apply unchanged; in
trustlab's ``[0, 1]`` coordinates the same chain is ``x += step_size / 4 * grad_x f +
noise / 2 * N(0, I)`` (since ``grad_u = grad_x / 2`` and ``x = (u + 1) / 2``) and the data noise
has std ``data_noise / 2``. The uniform initialisation ``U(-1, 1)`` is ``U(0, 1)`` in ``[0, 1]``.

trustlab's choices and deviations (the papers do not fix these, or fix them for CIFAR on a GPU):

- **Clamping.** Every SGLD step is clamped to the image range (``[0, 1]``; JEM's chains are
  unclamped and its samples may leave ``[-1, 1]``), so that the buffer and the synthetic set
  are valid trustlab images.
- **Modes.** The sampler runs the model in eval mode with no parameter gradients (gradients
  w.r.t. the input only) and restores both. The energy term of the loss is also computed in
  eval mode, so that BatchNorm's running statistics are neither used on nor polluted by SGLD
  samples and the loss contrasts the same energy that the chains sample; the CE term runs in
  the training mode as in any other training step. (JEM's and the authors' networks have no
  BatchNorm, where the two coincide.)
- **Fine-tuning recipe** (:data:`FINETUNE`): Adam at lr 1e-4 (the authors' transfer setting),
  batch 64, no weight decay, constant lr after the warm-up, **10 epochs** (the authors run 50 on
  CIFAR-10 on a GPU; each step costs ``steps + 2`` forward/backward passes). The authors' code
  computes the CE on a second, independently shuffled batch and the energy term on another; here
  both use the same batch. Their transfer recipe also adds ``N(0, 0.05^2)`` noise to the weights
  of every layer except the convolutions among the network's first 50 layers
  (``--freeze_conv_layers --freeze_conv_num 50``; nothing is frozen without
  ``--freeze_conv_fix``); that is not done.
- **Synthetic set size**: as many samples as the private set (the authors sample 6,000 per
  CIFAR class). At most ``max_draws_factor`` (20) times that many chains are drawn; a class
  short of samples after that is reported (``report.synthetic``), not padded.
- **Retraining recipe** (:data:`RETRAIN`): the authors' ``retrain_params``: Adam at lr 1e-4,
  batch 64, no weight decay, constant lr, 50 epochs, plain CE on the synthetic set (no data
  noise, as their retraining loader adds none). trustlab first defaulted to its own
  ``TrainSettings()`` (SGD at lr 0.1, cosine, 10 epochs); on digits/cnn-small that recipe
  diverged on the synthetic set (training loss 2.5-2.7 in the first epoch, 4.5-5.7 in the
  second, then a constant predictor, in two runs), see docs/privacy.md. The fresh network
  is built from the private model's :class:`~trustlab.models.spec.ModelSpec` (or
  ``make_model``), with initial weights seeded from ``seed``.

Everything random (buffer, chains, data noise, class requests, initial weights, the two training
runs) is derived from ``seed``: the same seed gives the same defended model on CPU.

Measured (docs/privacy.md, one seed): on 500 digits members with cnn-small and 50 fine-tuning
epochs (400 steps), without the stabilisers the energies diverge after epoch ~35 (``E(x_data)``
-10.0 -> -33.3 by epoch 50, the JEM's test accuracy 97.2% -> 77.5%); the penalties alone keep
the gap positive and the JEM at 96.1%; with every default (the warm-up then never reaches the
peak lr) nothing diverges, the JEM ends at 97.8% and the released model at 80.8% (advantage
0.108 -> 0.062; 86.7% and 0.060 without the stabilisers). Earlier, without the stabilisers, on
all 1,437 digits: 97.5% -> 80.8%, loss-threshold advantage 0.051 -> 0.042; 173 s of CPU.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn
from torch.utils.data import Dataset

from trustlab.data.datasets import ArrayDataset, as_array_dataset
from trustlab.errors import InputError
from trustlab.models.spec import ModelSpec
from trustlab.registry import PRIVACY_DEFENSES
from trustlab.train.evaluate import evaluate
from trustlab.train.trainer import Trainer, TrainResult, TrainSettings, check_model_fits
from trustlab.utils.device import resolve_device
from trustlab.utils.modules import device_of, eval_mode, frozen
from trustlab.utils.progress import progress_bar
from trustlab.utils.seed import derive_seed, generator
from trustlab.utils.validate import check_int, parse_config

__all__ = [
    "FINETUNE",
    "RETRAIN",
    "JEMDefense",
    "JEMLoss",
    "JEMReport",
    "JEMResult",
    "JEMSettings",
    "SGLDSampler",
    "energy",
    "sample_synthetic",
]

#: trustlab's default JEM fine-tuning recipe (see the module docstring)
FINETUNE = TrainSettings(
    epochs=10, batch_size=64, optimizer="adam", lr=1e-4, weight_decay=0.0, schedule="constant"
)

#: the authors' retraining recipe (see the module docstring)
RETRAIN = TrainSettings(
    epochs=50, batch_size=64, optimizer="adam", lr=1e-4, weight_decay=0.0, schedule="constant"
)

LogFn = Callable[[str, int, dict[str, float]], None]


def energy(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """JEM's energy ``E(x) = -logsumexp_y f(x)[y]`` of each input, shape ``(N,)``."""
    return -torch.logsumexp(model(x), dim=1)


def _module(model: nn.Module) -> nn.Module:
    """The model under a (Distributed)DataParallel wrapper (the Trainer's ``net``)."""
    if isinstance(model, nn.DataParallel | nn.parallel.DistributedDataParallel):
        return model.module
    return model


def _check_prob(name: str, value: float, upper_open: bool = False) -> float:
    value = float(value)
    ok = 0.0 <= value < 1.0 if upper_open else 0.0 <= value <= 1.0
    if not ok:
        bound = "[0, 1)" if upper_open else "[0, 1]"
        raise InputError(f"{name} must be in {bound}, got {value}.")
    return value


class SGLDSampler:
    """JEM's persistent SGLD sampler with a replay buffer, vectorised over the batch.

    Grathwohl, Wang, Jacobsen, Duvenaud, Norouzi, Swersky, "Your Classifier is Secretly an Energy
    Based Model and You Should Treat it Like One", ICLR 2020 (its ``sample_q``).

    Each :meth:`sample` draws buffer entries (a fraction ``reinit`` of them replaced by fresh
    uniform noise), runs ``steps`` SGLD steps on all of them at once and writes the results back
    into the buffer (persistent chains). ``step_size`` and ``noise`` are in JEM's ``[-1, 1]``
    pixel units (module docstring); chains stay clamped to ``[0, 1]``.

    Args:
        input_shape: ``(C, H, W)`` of one input.
        num_classes: classes of the model (the buffer is split into this many equal parts for
            class-conditional draws).
        buffer_size: replay buffer entries (JEM: 10,000).
        steps: SGLD steps per draw (JEM: 20).
        step_size: gradient step (JEM: 1).
        noise: std of the Gaussian noise per step (JEM: 0.01).
        reinit: probability that a drawn entry restarts from uniform noise (JEM: 0.05).
        seed: seeds the buffer's initial noise and every draw.

    After each draw ``last_reinit`` holds the boolean mask of the re-initialised samples.

    Shapes: the buffer is ``(buffer_size, *input_shape)`` in ``[0, 1]``; :meth:`sample` returns
    ``(n, *input_shape)`` on the model's device.

    Example::

        sampler = SGLDSampler((1, 28, 28), 10, buffer_size=1000, steps=20)
        x = sampler.sample(model, y=torch.tensor([0, 1, 2]))  # (3, 1, 28, 28)
    """

    def __init__(
        self,
        input_shape: tuple[int, ...] | torch.Size,
        num_classes: int,
        buffer_size: int = 10_000,
        steps: int = 20,
        step_size: float = 1.0,
        noise: float = 0.01,
        reinit: float = 0.05,
        seed: int = 0,
    ) -> None:
        self.num_classes = check_int("num_classes", num_classes, minimum=1)
        self.buffer_size = check_int(
            "buffer_size", buffer_size, minimum=self.num_classes,
            fix="The buffer needs at least one entry per class.",
        )  # fmt: skip
        self.steps = check_int("steps", steps, minimum=0)
        if not step_size > 0:
            raise InputError(f"SGLD step_size must be > 0, got {step_size}.")
        if not noise >= 0:
            raise InputError(f"SGLD noise must be >= 0, got {noise}.")
        self.step_size, self.noise = float(step_size), float(noise)
        self.reinit = _check_prob("reinit", reinit)
        self.input_shape = tuple(int(s) for s in input_shape)
        self.seed = seed
        self.per_class = self.buffer_size // self.num_classes
        self.buffer = torch.rand(
            (self.buffer_size, *self.input_shape), generator=generator(derive_seed(seed, "buffer"))
        )
        self._gen = generator(derive_seed(seed, "sgld"))
        self.last_reinit: torch.Tensor | None = None
        self.draws = 0

    def _start(self, n: int, y: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Initial chains and their buffer indices (JEM's ``sample_p_0``)."""
        g = self._gen
        if y is None:
            idx = torch.randint(0, self.buffer_size, (n,), generator=g)
        else:
            idx = y * self.per_class + torch.randint(0, self.per_class, (n,), generator=g)
        fresh = torch.rand((n, *self.input_shape), generator=g)
        reinit = torch.rand(n, generator=g) < self.reinit
        mask = reinit.view(-1, *([1] * len(self.input_shape)))
        self.last_reinit = reinit
        return torch.where(mask, fresh, self.buffer[idx]), idx

    def langevin(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``steps`` SGLD steps from ``x`` ascending ``logsumexp f(x)`` (or ``f(x)[y]``), in
        eval mode with no parameter gradients (both restored); returns detached inputs in
        ``[0, 1]``."""
        grad_scale = self.step_size / 4.0  # JEM's step on u = 2x - 1, written in x (see module)
        noise_scale = self.noise / 2.0
        col = None if y is None else y.to(x.device).view(-1, 1)
        with frozen(model), torch.enable_grad():
            for _ in range(self.steps):
                x = x.detach().requires_grad_(True)
                logits = model(x)
                f = logits.logsumexp(1) if col is None else logits.gather(1, col).squeeze(1)
                (grad,) = torch.autograd.grad(f.sum(), x)
                eps = torch.randn(x.shape, generator=self._gen).to(x.device, x.dtype)
                x = (x.detach() + grad_scale * grad + noise_scale * eps).clamp_(0.0, 1.0)
        return x.detach()

    def sample(
        self, model: nn.Module, n: int | None = None, y: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``n`` samples (or one per label of ``y``, class-conditional), on the model's device.

        The chains start from the replay buffer (``reinit`` of them from uniform noise) and
        their end points replace the entries they started from.
        """
        if y is not None:
            y = torch.as_tensor(y).long().cpu().flatten()
            if y.numel() and (int(y.min()) < 0 or int(y.max()) >= self.num_classes):
                raise InputError(
                    f"requested classes span [{int(y.min())}, {int(y.max())}] but the sampler "
                    f"has {self.num_classes} classes."
                )
            n = y.numel()
        elif n is None:
            raise InputError("give the number of samples n or the classes y to sample.")
        n = check_int("n", n, minimum=1)
        start, idx = self._start(n, y)
        out = self.langevin(model, start.to(device_of(model)), y)
        self.buffer[idx] = out.float().cpu()
        self.draws += 1
        return out


class JEMLoss:
    """``compute_loss(model, x, y)`` of JEM fine-tuning for :class:`~trustlab.train.Trainer`:
    ``CE + ce_l2 * CE^2 + energy_weight * D + energy_l2 * D^2`` with ``CE = CE(f(x), y)`` and
    ``D = mean E(x) - mean E(x_sgld)`` (= ``mean logsumexp f(x_sgld) - mean logsumexp f(x)``),
    returning ``(loss, logits)``.

    The two squared terms are the defense authors' stabilisers (``train_jem.py`` with
    ``--l2reg``: ``L += p_x_weight_l2reg * l_p_x ** 2`` and ``L += p_y_given_x_weight_l2reg *
    l_p_y_given_x ** 2``; their transfer recipe ``params/transfer_params.txt`` sets both weights
    to 0.1). They square the *batch means*: the gap between the data's and the samples' energy
    and the batch's CE, not each energy (they do not pin the energies' level). JEM's own
    ``train_wrn_ebm.py`` has neither; ``energy_l2 = ce_l2 = 0`` gives JEM's loss.

    ``x`` gets Gaussian noise of std ``data_noise / 2`` (JEM's ``sigma`` in ``[-1, 1]`` units)
    before both terms. ``x_sgld`` has one sample per batch element: class-conditional draws for
    uniformly random classes when ``conditional`` (the authors' setting), else JEM's
    unconditional draws. The energy term is computed in eval mode (module docstring).
    :meth:`pop_stats` gives the mean ``ce``, ``energy_data`` and ``energy_sgld`` of the batches
    since its last call (kept on the device meanwhile: no host sync per step).

    Grathwohl et al., ICLR 2020 (JEM's objective ``log p(y|x) + log p(x)``), as the JEM defense
    of Chen et al. (Machine Learning 2021) fine-tunes with it.

    Args:
        sampler: the :class:`SGLDSampler` drawing ``x_sgld``.
        conditional: class-conditional draws (default True, the authors' setting).
        data_noise: std of the Gaussian noise on ``x``, in ``[-1, 1]`` units (default 0.03,
            JEM's ``sigma``).
        energy_weight: weight of ``E(x) - E(x_sgld)`` (default 1, JEM's ``p_x_weight``).
        energy_l2: weight of the squared energy gap ``D^2`` (default 0.1, the authors'
            ``--p_x_weight_l2reg`` in their transfer recipe; their flag's default is 0.01,
            off unless ``--l2reg``). Only with the energy term (``energy_weight > 0``).
        ce_l2: weight of ``CE^2`` (default 0.1, the authors' ``--p_y_given_x_weight_l2reg``
            in their transfer recipe).
        seed: seeds the data noise and the class requests.

    Shapes: ``x`` ``(N, C, H, W)``, ``y`` ``(N,)`` -> ``(loss (), logits (N, K))``.

    Example::

        loss = JEMLoss(SGLDSampler(data.input_shape, data.num_classes))
        Trainer(model, FINETUNE, compute_loss=loss).fit(data)
    """

    def __init__(
        self,
        sampler: SGLDSampler,
        conditional: bool = True,
        data_noise: float = 0.03,
        energy_weight: float = 1.0,
        energy_l2: float = 0.1,
        ce_l2: float = 0.1,
        seed: int = 0,
    ) -> None:
        for name, value in (
            ("data_noise", data_noise), ("energy_weight", energy_weight),
            ("energy_l2", energy_l2), ("ce_l2", ce_l2),
        ):  # fmt: skip
            if not value >= 0:
                raise InputError(f"{name} must be >= 0, got {value}.")
        self.sampler, self.conditional = sampler, bool(conditional)
        self.data_noise, self.energy_weight = float(data_noise), float(energy_weight)
        self.energy_l2, self.ce_l2 = float(energy_l2), float(ce_l2)
        self._gen = generator(derive_seed(seed, "jem-loss"))
        self._sums: torch.Tensor | None = None
        self._batches = 0

    def _record(self, *values: torch.Tensor) -> None:
        row = torch.stack([v.detach().double() for v in values])
        self._sums = row if self._sums is None else self._sums + row
        self._batches += 1

    def pop_stats(self) -> dict[str, float]:
        """Means over the batches since the last call: ``ce``, ``energy_data``,
        ``energy_sgld`` (the energies only when the energy term is on); then reset."""
        if self._sums is None:
            return {}
        names = ("ce", "energy_data", "energy_sgld")
        means = (self._sums / self._batches).tolist()
        self._sums, self._batches = None, 0
        return dict(zip(names, means, strict=False))

    def __call__(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.data_noise > 0:
            eps = torch.randn(x.shape, generator=self._gen).to(x.device, x.dtype)
            x = x + (self.data_noise / 2.0) * eps
        logits = model(x)
        ce = F.cross_entropy(logits, y)
        loss = ce + self.ce_l2 * ce.square() if self.ce_l2 > 0 else ce
        if self.energy_weight == 0:
            self._record(ce)
            return loss, logits
        net = _module(model)
        n = x.shape[0]
        if self.conditional:
            want = torch.randint(0, self.sampler.num_classes, (n,), generator=self._gen)
            x_q = self.sampler.sample(net, y=want)
        else:
            x_q = self.sampler.sample(net, n=n)
        with eval_mode(net):
            e = energy(net, torch.cat([x, x_q.to(x.dtype)]))
        e_data, e_q = e[:n].mean(), e[n:].mean()
        self._record(ce, e_data, e_q)
        gap = e_data - e_q
        loss = loss + self.energy_weight * gap
        if self.energy_l2 > 0:
            loss = loss + self.energy_l2 * gap.square()
        return loss, logits


def sample_synthetic(
    model: nn.Module,
    sampler: SGLDSampler,
    n: int,
    like: ArrayDataset,
    conditional: bool = True,
    threshold: float = 0.5,
    labeler: nn.Module | None = None,
    batch_size: int = 100,
    max_draws_factor: float = 20.0,
    progress: bool = False,
) -> ArrayDataset:
    """A labelled synthetic set of ``n`` samples drawn from the JEM ``model`` with ``sampler``.

    Conditional (default): balanced classes (``n // K`` each, the first ``n % K`` classes one
    more); chains for class ``y`` are kept when the labeler (default: ``model``) predicts ``y``
    with softmax probability ``> threshold``. Unconditional: chains on ``logsumexp f`` kept when
    the labeler's top probability is ``> threshold``, labelled with its argmax (classes as they
    come). At most ``max_draws_factor * n`` chains are drawn.

    Returns an :class:`~trustlab.data.ArrayDataset` with ``like``'s classes, mean and std;
    its ``sampling`` attribute records the chains drawn, the samples kept per class and the
    acceptance rate. Raises :class:`InputError` when no sample at all was accepted.
    """
    n = check_int("synthetic set size", n, minimum=1)
    threshold = _check_prob("threshold", threshold, upper_open=True)
    batch_size = check_int("batch_size", batch_size, minimum=1)
    k = like.num_classes
    if sampler.num_classes != k:
        raise InputError(
            f"the sampler has {sampler.num_classes} classes but the dataset has {k}; build the "
            "sampler with num_classes=like.num_classes."
        )
    labeler = model if labeler is None else labeler
    max_draws = max(n, int(math.ceil(max_draws_factor * n)))
    need = [n // k + (1 if c < n % k else 0) for c in range(k)] if conditional else [n]
    kept_x: list[list[torch.Tensor]] = [[] for _ in need]
    kept_y: list[list[torch.Tensor]] = [[] for _ in need]
    drawn = 0
    with progress_bar("JEM sampling", n, progress) as advance, eval_mode(labeler):
        while sum(need) > 0 and drawn < max_draws:
            size = min(batch_size, max_draws - drawn)
            if conditional:
                open_classes = torch.tensor([c for c in range(k) if need[c] > 0])
                want = open_classes.repeat(math.ceil(size / len(open_classes)))[:size]
                x = sampler.sample(model, y=want)
            else:
                want = None
                x = sampler.sample(model, n=size)
            drawn += size
            with torch.no_grad():
                prob = F.softmax(labeler(x).float(), 1).cpu()
            top, label = prob.max(1)
            ok = top > threshold
            if want is not None:
                ok &= label == want
            x = x.cpu()
            for slot in range(len(need)):
                take = ok & (label == slot) if conditional else ok
                idx = torch.nonzero(take).flatten()[: need[slot]]
                if idx.numel():
                    kept_x[slot].append(x[idx])
                    kept_y[slot].append(label[idx])
                    need[slot] -= idx.numel()
                    for _ in range(idx.numel()):
                        advance()
    xs = [t for part in kept_x for t in part]
    if not xs:
        raise InputError(
            f"JEM sampling kept none of {drawn} chains (none was classified with probability "
            f"> {threshold}); fine-tune the JEM longer or lower the threshold."
        )
    ys = torch.cat([t for part in kept_y for t in part])
    out = ArrayDataset(
        torch.cat(xs).clamp_(0.0, 1.0), ys, like.classes, like.mean, like.std,
        name=f"{like.name}-jem", validate=True,
    )  # fmt: skip
    per_class = torch.bincount(ys, minlength=k).tolist()
    out.sampling = {  # type: ignore[attr-defined]
        "requested": n,
        "kept": len(out),
        "drawn": drawn,
        "acceptance": len(out) / drawn,
        "per_class": per_class,
        "short": n - len(out),
    }
    return out


class JEMSettings(BaseModel):
    """The JEM defense's own settings (validated; unknown keys are errors). Units of
    ``step_size``, ``noise`` and ``data_noise``: JEM's ``[-1, 1]`` pixel scale.

    Defaults are JEM's (Grathwohl et al., ICLR 2020) and the authors' of the defense (Chen et
    al., Machine Learning 2021), each field's description says which; ``synthetic_size``
    (default: the private set's size; the authors sample 6,000 per CIFAR class),
    ``max_draws_factor`` and ``sample_batch`` are trustlab's. ``energy_l2``, ``ce_l2`` and
    ``warmup_iters`` are the authors' transfer stabilisers (their ``params/transfer_params.txt``:
    0.1, 0.1, 1,000 steps); all three 0 give JEM's plain fine-tuning.

    Example::

        settings = JEMSettings(steps=20, buffer_size=10_000, seed=0)
        defense = JEMDefense(settings)
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    steps: int = Field(20, ge=1, description="SGLD steps per draw (JEM: 20)")
    step_size: float = Field(1.0, gt=0, description="SGLD gradient step (JEM: 1)")
    noise: float = Field(0.01, ge=0, description="SGLD noise std (JEM: 0.01)")
    reinit: float = Field(0.05, ge=0, le=1, description="buffer re-initialisation (JEM: 0.05)")
    buffer_size: int = Field(10_000, ge=1, description="replay buffer entries (JEM: 10,000)")
    conditional: bool = Field(True, description="class-conditional SGLD (the authors' setting)")
    data_noise: float = Field(0.03, ge=0, description="Gaussian noise on data (JEM: 0.03)")
    energy_weight: float = Field(1.0, ge=0, description="weight of E(x_data) - E(x_sgld)")
    energy_l2: float = Field(
        0.1, ge=0, description="weight of (E(x_data) - E(x_sgld))^2 (the authors' transfer: 0.1)"
    )
    ce_l2: float = Field(0.1, ge=0, description="weight of CE^2 (the authors' transfer: 0.1)")
    warmup_iters: int = Field(
        1000,
        ge=0,
        description="fine-tuning lr warm-up: lr * k / warmup_iters at step k = 0..warmup_iters "
        "(the authors' transfer: 1000; 0: none)",
    )
    synthetic_size: int | None = Field(
        None, ge=1, description="synthetic samples (default: the private set's size)"
    )
    threshold: float = Field(
        0.5, ge=0, lt=1, description="keep samples classified with probability above this"
    )
    max_draws_factor: float = Field(20.0, ge=1, description="at most this many chains per sample")
    sample_batch: int = Field(100, ge=1, description="chains per draw when sampling the set")
    seed: int = Field(0, ge=0)


@dataclass
class JEMReport:
    """What the defense did: settings, both training histories, the synthetic set's sampling
    record, test accuracies (undefended, JEM, defended) when a test set was given, seconds.

    Example::

        report = JEMDefense().defend(model, private, test).report
        report.accuracy["defended"], report.synthetic["acceptance"]
    """

    settings: dict[str, Any]
    finetune: dict[str, Any]
    retrain: dict[str, Any]
    synthetic: dict[str, Any]
    accuracy: dict[str, float] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "settings": self.settings,
            "finetune": self.finetune,
            "retrain": self.retrain,
            "synthetic": self.synthetic,
            "accuracy": self.accuracy,
            "seconds": self.seconds,
        }


@dataclass
class JEMResult:
    """The defended model (fresh, trained on ``synthetic`` only), the fine-tuned JEM, the
    synthetic set and the report.

    Example::

        result = JEMDefense().defend(model, private, test)
        released = result.model  # not result.jem: that one was trained on the private set
    """

    model: nn.Module
    jem: nn.Module
    synthetic: ArrayDataset
    report: JEMReport


@PRIVACY_DEFENSES.register(
    "jem",
    "resample the training distribution from the classifier as a JEM; release a fresh network "
    "retrained on the synthetic set",
    paper="Chen et al. Protect Privacy of Deep Classification Networks by Exploiting Their "
    "Generative Power. Machine Learning 110, 2021; built on Grathwohl, Wang, "
    "Jacobsen, Duvenaud, Norouzi, Swersky. Your Classifier is Secretly an Energy Based Model "
    "and You Should Treat it Like One. ICLR 2020.",
    threat="membership inference on the released model; the defender holds the trained model "
    "and its private training set",
    settings=JEMSettings,
)
class JEMDefense:
    """The JEM membership-inference defense (module docstring): fine-tune a copy of the model as
    a JEM on the private set, sample a labelled synthetic set, retrain a fresh network on it.

    Chen et al., "Protect Privacy of Deep Classification Networks by Exploiting Their Generative
    Power", Machine Learning 110 (2021), built on JEM (Grathwohl et al., ICLR 2020).

    Args:
        settings: the :class:`JEMSettings` (default: all defaults, JEM's and the authors').
        finetune: the JEM fine-tuning recipe (default :data:`FINETUNE`: Adam 1e-4, 10 epochs;
            the authors run 50, a GPU budget). Its lr warms up per step over
            ``settings.warmup_iters`` steps (default 1,000, the authors').
        retrain: the retraining recipe (default :data:`RETRAIN`, the authors': Adam 1e-4, 50
            epochs).
        **overrides: :class:`JEMSettings` fields, e.g. ``steps=20``.

    The recipes' ``seed`` is replaced by one derived from ``settings.seed``.

    Example::

        defense = JEMDefense(steps=20, buffer_size=10_000)
        released = defense.defend(model, private_train, test).model
    """

    def __init__(
        self,
        settings: JEMSettings | None = None,
        *,
        finetune: TrainSettings | None = None,
        retrain: TrainSettings | None = None,
        **overrides: Any,
    ) -> None:
        if settings is None:
            settings = parse_config(JEMSettings, overrides)
        elif overrides:
            settings = parse_config(JEMSettings, {**settings.model_dump(), **overrides})
        for name, s in (("finetune", finetune), ("retrain", retrain)):
            if s is not None and not isinstance(s, TrainSettings):
                raise InputError(f"{name} must be a TrainSettings, got {type(s).__name__}.")
            if s is not None and getattr(s, "dp", None) is not None:
                raise InputError(f"the JEM defense does not run DP-SGD; drop dp from {name}.")
        self.settings = settings
        s = settings.seed
        self.finetune = (finetune or FINETUNE).model_copy(
            update={"seed": derive_seed(s, "jem-finetune") % 2**31}
        )
        self.retrain = (retrain or RETRAIN).model_copy(
            update={"seed": derive_seed(s, "jem-retrain") % 2**31}
        )

    def sampler(self, data: ArrayDataset) -> SGLDSampler:
        """A fresh replay-buffer sampler for ``data``'s inputs and classes."""
        s = self.settings
        return SGLDSampler(
            data.input_shape, data.num_classes, s.buffer_size, s.steps, s.step_size, s.noise,
            s.reinit, seed=derive_seed(s.seed, "jem-sampler"),
        )  # fmt: skip

    def loss(self, sampler: SGLDSampler) -> JEMLoss:
        """The fine-tuning loss with these settings, drawing from ``sampler``."""
        s = self.settings
        return JEMLoss(
            sampler, s.conditional, s.data_noise, s.energy_weight, s.energy_l2, s.ce_l2,
            seed=derive_seed(s.seed, "jem-loss"),
        )  # fmt: skip

    def defend(
        self,
        model: nn.Module,
        private_train: Dataset | ArrayDataset,
        test: Dataset | ArrayDataset | None = None,
        *,
        make_model: Callable[[], nn.Module] | None = None,
        device: str | torch.device = "auto",
        progress: bool = False,
        log: LogFn | None = None,
    ) -> JEMResult:
        """Defend ``model`` (trained on ``private_train``); ``model`` itself is not modified.

        Args:
            model: the trained classifier (made by ``create_model``, optionally ``Normalized``,
                unless ``make_model`` is given).
            private_train: its training set (the members to protect).
            test: evaluated after each epoch of both trainings and for the report's accuracies.
            make_model: builds the fresh network to retrain (default: from the model's spec).
            device: ``auto``, ``cpu``, ``cuda`` or a ``torch.device``.
            progress: progress bars (on a terminal only).
            log: ``log(phase, epoch, metrics)`` after each epoch, phase ``"jem"`` (fine-tuning)
                or ``"retrain"``.
        """
        if not isinstance(model, nn.Module):
            raise InputError(f"the JEM defense takes a torch.nn.Module, got {type(model)}.")
        data = as_array_dataset(private_train, name="private_train")
        test_data = as_array_dataset(test, name="test") if test is not None else None
        dev = resolve_device(device)
        if make_model is None:
            spec = ModelSpec.from_model(model)
            if spec is None:
                raise InputError(
                    "the JEM defense retrains a fresh network of the model's architecture, but "
                    "this model was not made by trustlab.models.create_model; pass "
                    "make_model=lambda: MyNet(...) to build one."
                )
            make_model = spec.build
        s = self.settings
        seconds: dict[str, float] = {}
        accuracy: dict[str, float] = {}
        jem = copy.deepcopy(model).to(dev)
        check_model_fits(jem, data, test_data, dev)
        if test_data is not None:
            accuracy["undefended"] = evaluate(jem, test_data, device=dev)["accuracy"]

        sampler = self.sampler(data)
        loss = self.loss(sampler)
        energies: list[dict[str, float]] = []

        def log_jem(epoch: int, metrics: dict[str, float]) -> None:
            energies.append(loss.pop_stats())  # the epoch's mean CE and energies
            if log is not None:
                warm = {} if tuner.last_lr is None else {"lr_end": tuner.last_lr}
                log("jem", epoch, {**metrics, **energies[-1], **warm})

        def log_retrain(epoch: int, metrics: dict[str, float]) -> None:
            if log is not None:
                log("retrain", epoch, metrics)

        # 1. transfer the classifier to a JEM
        t0 = time.perf_counter()
        tuner = _WarmupTrainer(
            jem, self.finetune, warmup_iters=s.warmup_iters, compute_loss=loss, device=dev,
            progress=progress, log=log_jem,
        )  # fmt: skip
        tuned = tuner.fit(data, test_data)
        seconds["finetune"] = time.perf_counter() - t0
        if test_data is not None:
            accuracy["jem"] = evaluate(jem, test_data, device=dev)["accuracy"]

        # 2. a labelled synthetic set from the JEM's persistent chains
        t0 = time.perf_counter()
        synthetic = sample_synthetic(
            jem, sampler, s.synthetic_size or len(data), data, s.conditional, s.threshold,
            batch_size=s.sample_batch, max_draws_factor=s.max_draws_factor, progress=progress,
        )  # fmt: skip
        seconds["sample"] = time.perf_counter() - t0

        # 3. a fresh network trained on the synthetic set alone
        t0 = time.perf_counter()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(s.seed, "jem-init"))
            fresh = make_model()
        retrained = Trainer(
            fresh, self.retrain, device=dev, progress=progress, log=log_retrain
        ).fit(synthetic, test_data)
        seconds["retrain"] = time.perf_counter() - t0
        if test_data is not None:
            accuracy["defended"] = evaluate(fresh, test_data, device=dev)["accuracy"]
        report = JEMReport(
            settings=s.model_dump(),
            finetune={**_history(tuned, self.finetune), "energies": energies},
            retrain=_history(retrained, self.retrain),
            synthetic=dict(synthetic.sampling),  # type: ignore[attr-defined]
            accuracy=accuracy,
            seconds=seconds,
        )
        return JEMResult(fresh, jem, synthetic, report)


class _WarmupTrainer(Trainer):
    """The :class:`~trustlab.train.Trainer` with the defense authors' per-iteration linear
    learning-rate warm-up (``train_jem.py``: ``if cur_iter <= warmup_iters: lr = args.lr *
    cur_iter / warmup_iters``, ``cur_iter`` counting optimiser steps from 0 over all epochs):
    step ``k`` uses ``lr_at(epoch) * min(k, warmup_iters) / warmup_iters`` (the first step has
    lr 0, as theirs). ``TrainSettings.warmup_epochs`` warms up per epoch, too coarse for the
    authors' 1,000 iterations (1.4 of their 50 CIFAR-10 epochs). ``warmup_iters=0``: the plain
    Trainer. ``last_lr`` is the lr of the latest step."""

    def __init__(self, *args: Any, warmup_iters: int = 0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.warmup_iters = check_int("warmup_iters", warmup_iters, minimum=0)
        self.last_lr: float | None = None

    def _loop(self, net: nn.Module, optimizer: torch.optim.Optimizer, *args: Any) -> TrainResult:
        if self.warmup_iters == 0:
            return super()._loop(net, optimizer, *args)
        # optimiser steps taken so far: a resumed run continues the warm-up where it stopped
        # (the loop's last argument is the number of steps per epoch)
        steps = self.epoch * int(args[-1])

        def warm(opt: torch.optim.Optimizer, *_: Any) -> None:
            nonlocal steps
            lr = self.settings.lr_at(self.epoch) * min(steps, self.warmup_iters)
            lr /= self.warmup_iters
            for group in opt.param_groups:
                group["lr"] = lr
            self.last_lr = lr
            steps += 1

        handle = optimizer.register_step_pre_hook(warm)
        try:
            return super()._loop(net, optimizer, *args)
        finally:
            handle.remove()


def _history(result: TrainResult, settings: TrainSettings) -> dict[str, Any]:
    return {"settings": settings.model_dump(), "history": result.history}
