"""Input-aware dynamic backdoor (IAD): Nguyen & Tran, "Input-Aware Dynamic Backdoor Attack",
NeurIPS 2020.

Every input gets its own trigger: a pattern generator ``G`` and a mask generator ``M`` (small
encoder-decoder networks) make ``x' = x + (G(x) - x) * M(x)``, and the classifier learns to
send ``x'`` to the target while the *cross* inputs ``x + (G(x2) - x) * M(x2)`` (the trigger of
another input ``x2``) keep their labels, so that a trigger works only on the input it was made
for. Re-implemented from the authors' code (github.com/VinAIResearch/input-aware-backdoor-attack-
release: ``train.py``, ``config.py``, ``networks/models.py``, ``networks/blocks.py``;
SCLBD/BackdoorBench ``attack/inputaware.py`` and ``config/attack/inputaware/default.yaml``
follow it, with its ``pratio`` as ``p_attack``, ``p_cross = p_attack`` and 25
``clean_train_epochs`` of mask pre-training):

- **Generators** (:class:`IADGenerator`, the authors' ``Generator``): ``steps`` x (conv-BN-ReLU,
  conv-BN-ReLU, max-pool 2), a middle conv block, ``steps`` x (bilinear upsampling 2, two conv
  blocks, the channels halving, the last block without ReLU), then ``tanh(.) / (2 + 1e-7) + 0.5``
  (values in (0, 1)); 3x3 convolutions, BatchNorm momentum 0.05. The authors' sizes: MNIST
  16 channels and 2 steps, CIFAR-10/GTSRB 32 channels and 3 steps; trustlab picks the MNIST
  size for 1-channel inputs and the CIFAR size otherwise (H and W must divide by
  ``2 ** steps``). ``M`` is the same network with one output channel; its output passes the
  authors' soft threshold ``tanh(20 m - 10) / (2 + 1e-7) + 0.5`` in training and at test time.
- **Mask pre-training** (the authors' ``train_mask_step``, in ``recipe.trigger(data, seed)``):
  ``M`` alone, Adam (lr 1e-2, betas (0.5, 0.9)), batches of 128 paired with an independently
  shuffled second batch, loss ``lambda_norm * mean(relu(M(x1) - mask_density)) + lambda_div *
  mean(||x1 - x2|| / (||M(x1) - M(x2)|| + 1e-7))`` (RMS distances per sample), ``mask_density
  = 0.032``, ``lambda_norm = 100``, ``lambda_div = 1``; the authors run 25 epochs with the
  learning rate divided by 10 after epochs 10 and 20. trustlab's ``mask_epochs`` (default 25)
  scales down for small budgets; the milestones scale with it (``10/25`` and ``20/25`` of the
  epochs). ``M`` is then frozen (eval mode, no gradients), as in the authors' code.
- **Joint training** (:class:`IADLoss`, the trainer's ``compute_loss``; the authors'
  ``train_step``): per batch the first ``int(p_attack * N)`` inputs get their own trigger and the
  target label, the next ``int(p_cross * N)`` get the trigger of another input with their labels
  kept, the rest stay clean; loss = cross-entropy of the whole batch + ``lambda_div *
  mean(||x_i - x2_j|| / (||G(x_i) - G(x2_j)|| + 1e-7))`` over the backdoor inputs and the cross
  partners (the authors' pairing). Defaults ``p_attack = p_cross = 0.1``, ``lambda_div = 1``.
  ``G`` trains with its own Adam (lr 1e-2, betas (0.5, 0.9), the authors').

trustlab's choices and deviations:

- **G's optimiser inside the loss.** The trainer steps only the classifier. ``G``'s parameters
  take their gradients from the trainer's ``backward`` of the loss this class returns; the
  pending gradients are applied (``G``'s Adam step, then zeroed) the next time ``G`` is used:
  at the start of the next ``compute_loss`` call or of the trigger's first application after
  training. Classifier and ``G`` both step on the gradients of the same batch before the next
  batch, as in the authors' loop. One departure: the authors' ``train_step`` zeroes only the
  classifier's optimiser (``optimizerC.zero_grad()``), never ``G``'s, so their ``G`` steps on
  the running sum of every batch's gradient since the start (BackdoorBench copies this);
  trustlab zeroes ``G``'s gradients after each step (a per-batch Adam step, what the paper
  describes). The classifier's gradient clipping (``clip_grad_norm``) does not touch ``G`` (the
  authors clip nothing).
- **Mask pre-training** runs ``M`` once on the pair of batches joined (BatchNorm sees both);
  the authors run it on each batch separately in train mode. Their pre-training loss
  multiplies the diversity term by ``lambda_div`` twice (the term already includes it);
  trustlab once (the same at the default of 1).
- **The second input.** The authors draw ``x2`` from a second, independently shuffled data
  loader; ``compute_loss`` sees one batch, so ``x2`` is the same batch cyclically shifted by a
  random offset in ``[1, N)`` (torch's global RNG, which the trainer seeds per epoch): every
  cross input gets the trigger of a different input of the batch.
- **Pixel space.** The authors' generators see normalised inputs and their pattern is mapped
  to the normalised space; trustlab's inputs are in [0, 1] and ``G(x)`` is a [0, 1] image, so
  ``x'`` is a convex mix of two images and stays in [0, 1] (the same triggered image).
- ``G``'s learning-rate schedule (divided by 10 after epochs 200, 300, 400, 500) is not
  applied: trustlab's runs are far shorter. Augmentation happens before ``compute_loss``
  (the authors' loader augments before the trigger too).
- ``rate``: the backdoor fraction ``p_attack`` is the recipe's (default 0.1, equal to
  ``train_backdoor``'s default ``rate``); ``recipe.loss(trigger, policy, rate=r)`` sets
  ``p_attack = r`` (``loss_uses_rate = True``: ``train_backdoor``'s ``rate`` is ``p_attack``).
- Two identical images in a diversity pair (possible when two shuffles meet) give a zero
  distance whose square root has an infinite gradient; the mean squared distance is floored
  at 1e-12 before the root (the authors' independently augmented loaders make such pairs
  unlikely; here they made the mask pre-training NaN).

Measured (digits: 1437 training and 360 test images of 16x16, the authors' MNIST-size
generators; cnn-small; SGD lr 0.05, batch 64; all-to-one to class 0; one seed; CPU):

- the paper's 25 mask epochs: 51 s CPU, mean mask on the test images 0.024 (the target
  0.032); then 3 joint epochs: C-Acc 96.7%, ASR 0.6%; 10 epochs: 96.9% / 16.0%. With the
  paper's sparse mask (a few pixels of a 16x16 image) and the cross mode the backdoor is slow
  to learn (the authors train 600 epochs);
- fewer mask epochs leave a dense mask that is learnt fast: 2 epochs (5 s CPU, mean mask
  0.50): 3 joint epochs C-Acc 96.4%, ASR 79.3%; 1 epoch (mean 0.41): 95.0% / 15.1%; no
  pre-training (mean about 0.4): 95.3% / 86.7%;
- 3 joint epochs take 3.9 s CPU.

The trigger (:class:`InputAwareTrigger`) holds both generators; ``state()`` stores their
weights and architecture, :func:`~trustlab.attacks.backdoor.triggers.trigger_from_state`
rebuilds it.
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
from trustlab.utils.modules import eval_mode, train_mode
from trustlab.utils.seed import derive_seed, generator

__all__ = ["IADGenerator", "IADLoss", "InputAwareBackdoor", "InputAwareTrigger", "pretrain_mask"]

#: the authors' ``EPSILON``
EPS = 1e-7


def _block(cin: int, cout: int, relu: bool = True) -> nn.Sequential:
    """The authors' ``Conv2dBlock``: 3x3 conv, BatchNorm (momentum 0.05), ReLU."""
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, 3, 1, 1),
        nn.BatchNorm2d(cout, eps=1e-5, momentum=0.05),
    ]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


def default_size(channels: int) -> tuple[int, int]:
    """``(channel_init, steps)`` of the authors' generator: MNIST's (16, 2) for 1-channel
    inputs, CIFAR-10's (32, 3) otherwise."""
    return (16, 2) if channels == 1 else (32, 3)


class IADGenerator(nn.Module):
    """The authors' encoder-decoder ``Generator`` (Nguyen & Tran, NeurIPS 2020): the pattern
    generator (``out_channels`` = the inputs' channels) or the mask generator (1).

    Args:
        channels: input channels.
        out_channels: output channels (default ``channels``).
        channel_init: channels of the first block (default 32; the authors' MNIST 16).
        steps: down/upsampling steps, at least 2 (default 3; the authors' MNIST 2).

    Shapes: ``(N, channels, H, W)`` -> ``(N, out_channels, H, W)`` in (0, 1); ``H`` and ``W``
    divisible by ``2 ** steps``.

    Example::

        g = IADGenerator(3)
        pattern = g(torch.rand(4, 3, 32, 32))
    """

    def __init__(
        self,
        channels: int,
        out_channels: int | None = None,
        channel_init: int = 32,
        steps: int = 3,
    ) -> None:
        super().__init__()
        if steps < 2 or channel_init < 2:
            raise InputError(
                f"the generator needs steps >= 2 and channel_init >= 2, got {steps}, "
                f"{channel_init}."
            )
        out = channels if out_channels is None else out_channels
        self.steps = steps
        layers: list[nn.Module] = []
        cur, nxt = channels, channel_init
        for step in range(steps):
            layers += [_block(cur, nxt), _block(nxt, nxt), nn.MaxPool2d(2, 2)]
            if step < steps - 1:
                cur, nxt = nxt, nxt * 2
        layers.append(_block(nxt, nxt))
        cur, nxt = nxt, nxt // 2
        for step in range(steps):
            layers += [nn.Upsample(scale_factor=2, mode="bilinear"), _block(cur, cur)]
            layers.append(_block(cur, nxt, relu=step < steps - 1))
            cur, nxt = nxt, nxt // 2
            if step == steps - 2:
                nxt = out
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.net(x)) / (2 + EPS) + 0.5


def soft_threshold(m: torch.Tensor) -> torch.Tensor:
    """The authors' mask threshold ``tanh(20 m - 10) / (2 + 1e-7) + 0.5``."""
    return torch.tanh(m * 20 - 10) / (2 + EPS) + 0.5


def _rms(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-sample root-mean-square distance (the authors' ``sqrt(mean(MSE))``); the mean is
    floored at 1e-12 before the root so that two identical inputs (a pair of the same image)
    give a zero gradient instead of NaN."""
    return (a - b).pow(2).flatten(1).mean(1).clamp_min(1e-12).sqrt()


class InputAwareTrigger(Trigger):
    """The input-aware dynamic trigger (Nguyen & Tran, "Input-Aware Dynamic Backdoor Attack",
    NeurIPS 2020): ``x + (G(x) - x) * threshold(M(x))`` with a pattern generator ``G`` and a
    mask generator ``M`` (:class:`IADGenerator`).

    Args:
        channels: the inputs' channels.
        channel_init, steps: the generators' size (default: the authors' for the channels,
            :func:`default_size`).
        seed: initialises both generators.

    Shapes: ``(N, C, H, W)`` -> the same, in [0, 1]; ``H``, ``W`` divisible by ``2 ** steps``.

    Example::

        trig = InputAwareTrigger(1, seed=0)
        x_triggered = trig(x)            # each input its own pattern and mask
        x_cross = trig.compose(x, x.roll(1, 0))  # the trigger of another input
    """

    kind = "input-aware"

    def __init__(
        self,
        channels: int,
        channel_init: int | None = None,
        steps: int | None = None,
        seed: int = 0,
    ) -> None:
        ci, st = default_size(channels)
        self.channels = int(channels)
        self.channel_init = ci if channel_init is None else int(channel_init)
        self.steps = st if steps is None else int(steps)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(seed, "iad", "generators"))
            self.pattern_net = IADGenerator(self.channels, None, self.channel_init, self.steps)
            self.mask_net = IADGenerator(self.channels, 1, self.channel_init, self.steps)
        # no gradients outside training (IADLoss turns G's on while it trains it)
        self.mask_net.requires_grad_(False).eval()
        self.pattern_net.requires_grad_(False).eval()
        #: ``G``'s optimiser while a loss trains it (see :meth:`step_pending`)
        self.optimizer: torch.optim.Optimizer | None = None

    def _check(self, x: torch.Tensor) -> None:
        if x.dim() != 4:
            raise InputError("the input-aware trigger transforms image batches (N, C, H, W).")
        if x.shape[1] != self.channels:
            raise InputError(
                f"a {self.channels}-channel trigger for {x.shape[1]}-channel inputs; make it "
                "with the data's channels."
            )
        k = 2**self.steps
        if x.shape[-2] % k or x.shape[-1] % k:
            raise InputError(
                f"the generators need H and W divisible by {k} (steps={self.steps}), got "
                f"{tuple(x.shape[-2:])}; resize the inputs or pass fewer steps."
            )

    def to(self, device: torch.device | str) -> InputAwareTrigger:
        """Move both generators (and their optimiser's state follows the parameters)."""
        self.pattern_net.to(device)
        self.mask_net.to(device)
        return self

    def _on(self, x: torch.Tensor) -> None:
        dev = next(self.pattern_net.parameters()).device
        if dev != x.device:
            self.to(x.device)

    def step_pending(self) -> None:
        """Apply ``G``'s pending gradients (left by the trainer's ``backward``): one step of
        its optimiser, then zero them. Does nothing without an optimiser or gradients."""
        if self.optimizer is None:
            return
        params = list(self.pattern_net.parameters())
        if any(p.grad is not None for p in params):
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)

    def finish(self) -> None:
        """End of training as far as the trigger knows: apply ``G``'s pending step and stop
        ``G`` collecting gradients (so that a defense back-propagating through triggered
        inputs cannot move it); :class:`IADLoss` turns them back on when it is called."""
        self.step_pending()
        self.pattern_net.requires_grad_(False)

    def mask(self, x: torch.Tensor) -> torch.Tensor:
        """``threshold(M(x))``, ``(N, 1, H, W)`` in (0, 1) (``M`` in eval mode)."""
        with eval_mode(self.mask_net):
            return soft_threshold(self.mask_net(x))

    def compose(self, x: torch.Tensor, source: torch.Tensor | None = None) -> torch.Tensor:
        """``x + (G(s) - x) * threshold(M(s))`` with ``s = source`` (default ``x`` itself; the
        cross mode passes another input), in the generators' current modes."""
        s = x if source is None else source
        return (x + (self.pattern_net(s) - x) * self.mask(s)).clamp(0, 1)

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x)
        self._on(x)
        self.finish()
        with eval_mode(self.pattern_net):
            return self.compose(x)

    def state(self) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
        self.finish()
        config = {
            "kind": self.kind, "channels": self.channels, "channel_init": self.channel_init,
            "steps": self.steps,
        }  # fmt: skip
        tensors = {f"G.{k}": v.detach().cpu() for k, v in self.pattern_net.state_dict().items()}
        tensors.update({f"M.{k}": v.detach().cpu() for k, v in self.mask_net.state_dict().items()})
        return config, tensors

    @classmethod
    def from_state(cls, config: dict[str, Any], tensors: dict[str, torch.Tensor]) -> Trigger:
        t = cls(int(config["channels"]), int(config["channel_init"]), int(config["steps"]))
        g = {k[2:]: v for k, v in tensors.items() if k.startswith("G.")}
        m = {k[2:]: v for k, v in tensors.items() if k.startswith("M.")}
        t.pattern_net.load_state_dict(g)
        t.mask_net.load_state_dict(m)
        return t


def pretrain_mask(
    trigger: InputAwareTrigger,
    x: torch.Tensor,
    epochs: int = 25,
    batch_size: int = 128,
    lr: float = 1e-2,
    mask_density: float = 0.032,
    lambda_norm: float = 100.0,
    lambda_div: float = 1.0,
    seed: int = 0,
) -> list[float]:
    """Pre-train the trigger's mask generator as the authors' ``train_mask_step`` does (see the
    module): Adam(lr, betas (0.5, 0.9)), the rate divided by 10 at ``10/25`` and ``20/25`` of
    ``epochs``; then freeze it. ``x``: the training inputs ``(N, C, H, W)`` in [0, 1]. Returns
    each epoch's mean loss."""
    if epochs < 0:
        raise InputError(f"mask_epochs must be >= 0, got {epochs}.")
    trigger._check(x[:1])
    net = trigger.mask_net
    net.requires_grad_(True).train()
    opt = torch.optim.Adam(net.parameters(), lr, betas=(0.5, 0.9))
    milestones = sorted({max(1, round(epochs * f)) for f in (10 / 25, 20 / 25)})
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones, 0.1)
    history = []
    n = len(x)
    with torch.random.fork_rng(devices=[]):
        for epoch in range(epochs):
            g = generator(derive_seed(seed, "iad", "mask", epoch))
            torch.manual_seed(derive_seed(seed, "iad", "mask-rng", epoch))
            p1, p2 = torch.randperm(n, generator=g), torch.randperm(n, generator=g)
            total, count = 0.0, 0
            for s in range(0, n, batch_size):
                x1, x2 = x[p1[s : s + batch_size]], x[p2[s : s + batch_size]]
                if len(x1) < 2:  # BatchNorm needs two samples
                    continue
                m = soft_threshold(net(torch.cat([x1, x2])))
                m1, m2 = m[: len(x1)], m[len(x1) :]
                div = (_rms(x1, x2) / (_rms(m1, m2) + EPS)).mean()
                norm = F.relu(m1 - mask_density).mean()
                loss = lambda_norm * norm + lambda_div * div
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total, count = total + float(loss.detach()) * len(x1), count + len(x1)
            sched.step()
            history.append(total / max(count, 1))
    net.requires_grad_(False).eval()
    return history


class IADLoss:
    """``compute_loss(model, x, y) -> loss``: the input-aware backdoor's joint training step
    (Nguyen & Tran, NeurIPS 2020; the authors' ``train_step``); ``G`` trains with its own Adam
    on the gradients the trainer's ``backward`` leaves (see the module).

    Args:
        trigger: the :class:`InputAwareTrigger` (its mask generator pre-trained).
        policy: the backdoor labels (all-to-one by default in the recipe).
        p_attack: backdoor fraction of each batch (default 0.1, the authors').
        p_cross: cross fraction of each batch (default 0.1, the authors').
        lambda_div: weight of the diversity loss (default 1, the authors').
        lr: ``G``'s Adam learning rate (default 1e-2, betas (0.5, 0.9), the authors').

    Shapes: ``x`` ``(N, C, H, W)`` in [0, 1], ``y`` ``(N,)`` int64; returns a scalar loss.

    Example::

        loss = IADLoss(trigger, AllToOne(0))
        Trainer(model, settings, compute_loss=loss).fit(train)
        trigger(x_test)  # G's last update applied first
    """

    def __init__(
        self,
        trigger: InputAwareTrigger,
        policy: LabelPolicy,
        p_attack: float = 0.1,
        p_cross: float = 0.1,
        lambda_div: float = 1.0,
        lr: float = 1e-2,
    ) -> None:
        if not (0 <= p_attack <= 1 and 0 <= p_cross <= 1 and p_attack + p_cross <= 1):
            raise InputError(
                f"p_attack and p_cross must be in [0, 1] with a sum <= 1, got {p_attack}, "
                f"{p_cross}."
            )
        self.trigger, self.policy = trigger, policy
        self.p_attack, self.p_cross, self.lambda_div = float(p_attack), float(p_cross), lambda_div
        self.trigger.pattern_net.requires_grad_(True)
        trigger.optimizer = torch.optim.Adam(trigger.pattern_net.parameters(), lr, betas=(0.5, 0.9))
        self.last: dict[str, float] = {}

    def counts(self, n: int) -> tuple[int, int]:
        """``(num_bd, num_cross)`` of a batch of ``n`` (the authors' rounding)."""
        nb = int(self.p_attack * n)
        return nb, min(int(self.p_cross * n), n - nb)

    def _pattern(self, s: torch.Tensor) -> torch.Tensor:
        """``G(s)`` in training mode (the authors'); a single input in eval mode (BatchNorm's
        batch statistics need two)."""
        g = self.trigger.pattern_net
        with train_mode(g) if len(s) > 1 else eval_mode(g):
            return g(s)

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        trig = self.trigger
        trig._on(x)
        trig.step_pending()  # G's step on the previous batch's gradients
        trig.pattern_net.requires_grad_(True)
        n = len(x)
        nb, nc = self.counts(n)
        if n < 2 or nb + nc == 0:
            return F.cross_entropy(model(x), y)
        shift = int(torch.randint(1, n, (1,)))
        x2 = x.roll(-shift, 0)  # x2[j] = x[(j + shift) % n]: another input of the batch
        parts, div = [], None
        if nb:
            p1 = self._pattern(x[:nb])
            x_bd = (x[:nb] + (p1 - x[:nb]) * trig.mask(x[:nb])).clamp(0, 1)
            parts.append(x_bd)
        if nc:
            src = x2[nb : nb + nc]
            p2 = self._pattern(src)
            x_cross = (x[nb : nb + nc] + (p2 - x[nb : nb + nc]) * trig.mask(src)).clamp(0, 1)
            parts.append(x_cross)
            m = min(nb, nc)
            if m:
                # the authors' pairing: backdoor input i with the cross partner i
                d_img = _rms(x[:m], src[:m])
                d_pat = _rms(p1[:m], p2[:m])
                div = (d_img / (d_pat + EPS)).mean() * self.lambda_div
        labels = torch.cat([self.policy(y[:nb]).to(y.device, y.dtype), y[nb:]])
        inputs = torch.cat([*parts, x[nb + nc :]])
        ce = F.cross_entropy(model(inputs), labels)
        self.last = {"ce": float(ce.detach())}
        if div is None:
            return ce
        self.last["div"] = float(div.detach())
        return ce + div


@BACKDOORS.register(
    "iad",
    "input-aware dynamic backdoor: a trained generator makes each input its own pattern and "
    "mask (cross triggers do not transfer), all-to-one; the data stays clean",
    paper="Nguyen, Tran. Input-Aware Dynamic Backdoor Attack. NeurIPS 2020.",
    threat="training control: the attacker trains a trigger generator with the classifier; "
    "every input gets a different, input-specific trigger",
    injector="loss",
)
class InputAwareBackdoor(BackdoorRecipe):
    """The input-aware dynamic backdoor (Nguyen & Tran, "Input-Aware Dynamic Backdoor Attack",
    NeurIPS 2020) as a recipe: ``trigger(data, seed)`` builds the generators and pre-trains the
    mask generator on ``data``; :meth:`loss` trains the classifier and the pattern generator
    together (:class:`IADLoss`); the data stays clean.

    Args:
        mask_epochs: mask pre-training epochs (default 25, the paper's; scale down for small
            budgets).
        mask_density: the mask's target density (default 0.032, the authors').
        lambda_norm: weight of the mask's norm loss (default 100, the authors').
        lambda_div: weight of the diversity losses (default 1, the authors').
        p_attack: backdoor fraction of each batch (default 0.1, the authors').
        p_cross: cross fraction of each batch (default 0.1, the authors').
        lr_g: ``G``'s Adam learning rate (default 1e-2, the authors').
        lr_m: ``M``'s Adam learning rate (default 1e-2, the authors').
        batch_size: the mask pre-training batch (default 128, the authors').
        channel_init, steps: the generators' size (default: the authors' MNIST size for
            1-channel inputs, CIFAR-10's otherwise).

    Example::

        art = train_backdoor("iad", train, test, model, settings)
        art.trigger(x)  # each input its own trigger
    """

    #: ``loss(..., rate=r)`` makes the backdoor fraction ``p_attack = r``
    loss_uses_rate: ClassVar[bool] = True

    def __init__(
        self,
        mask_epochs: int = 25,
        mask_density: float = 0.032,
        lambda_norm: float = 100.0,
        lambda_div: float = 1.0,
        p_attack: float = 0.1,
        p_cross: float = 0.1,
        lr_g: float = 1e-2,
        lr_m: float = 1e-2,
        batch_size: int = 128,
        channel_init: int | None = None,
        steps: int | None = None,
    ) -> None:
        if not 0 < mask_density < 1:
            raise InputError(f"mask_density must be in (0, 1), got {mask_density}.")
        self.mask_epochs, self.mask_density = mask_epochs, mask_density
        self.lambda_norm, self.lambda_div = lambda_norm, lambda_div
        self.p_attack, self.p_cross, self.lr_g, self.lr_m = p_attack, p_cross, lr_g, lr_m
        self.batch_size, self.channel_init, self.steps = batch_size, channel_init, steps
        self.mask_history: list[float] = []

    def trigger(self, data: ArrayDataset, seed: int = 0, **surrogate: object) -> Trigger:
        trig = InputAwareTrigger(int(data.x.shape[1]), self.channel_init, self.steps, seed)
        self.mask_history = pretrain_mask(
            trig, data.x.float(), self.mask_epochs, self.batch_size, self.lr_m,
            self.mask_density, self.lambda_norm, self.lambda_div, seed,
        )  # fmt: skip
        return trig

    def loss(
        self,
        trigger: Trigger | None,
        policy: LabelPolicy | None,
        rate: float | None = None,
        **kw: object,
    ) -> IADLoss:
        """:class:`IADLoss` with this recipe's settings; ``rate`` (when given) is
        ``p_attack``."""
        if not isinstance(trigger, InputAwareTrigger):
            raise InputError("IAD's loss needs its InputAwareTrigger (recipe.trigger(data)).")
        if policy is None:
            raise InputError("IAD's loss needs a label policy (recipe.policy(target, K)).")
        p = self.p_attack if rate is None else float(rate)
        return IADLoss(trigger, policy, p, self.p_cross, self.lambda_div, self.lr_g)
