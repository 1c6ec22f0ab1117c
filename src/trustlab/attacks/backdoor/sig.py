"""SIG: the clean-label backdoor with a superimposed signal (a horizontal sinusoid or a ramp).

Barni, Kallas & Tondi, "A New Backdoor Attack in CNNs by Training Set Corruption Without Label
Poisoning", ICIP 2019 (arXiv:1902.11237). Only images of the target class are poisoned and their
labels never change: the attacker adds a faint signal ``v`` to them, the network learns "signal
=> target class", and at test time the same signal added to any image pushes it to the target
class. The paper's two signals (``m`` the image width, ``j`` the column, ``Delta`` the amplitude):

- ``"sinusoid"``: ``v(i, j) = Delta sin(2 pi j f / m)`` (the paper's GTSRB signal, ``Delta =
  20/255``, ``f = 6``; the default here), the same on every row and channel;
- ``"ramp"``: ``v(i, j) = j Delta / m`` (the paper's MNIST signal).

``x' = clip(x + v, 0, 1)``.

trustlab's choices and the deviations from the paper and the anchor implementation (SCLBD/
BackdoorBench ``utils/bd_img_transform/sig.py``, ``attack/sig.py``, ``config/attack/sig/
default.yaml``, read for this module):

- **Amplitude.** Default ``delta = 20/255``, ``f = 6`` (the paper's sinusoid). BackdoorBench's
  default is ``sig_delta: 40`` (40/255), ``sig_f: 6``; pass ``delta=40/255`` for its setting.
- **Test-time amplitude.** As recalled from the paper (its text was not at hand when this was
  written), the test-time signal may be stronger than the training one (``Delta_ts >
  Delta_tr``: the attacker is not bound to stealth at test time); BackdoorBench applies the same
  signal (``sig_delta``) at training and test time. ``test_delta`` (default ``None``: the
  training amplitude, BackdoorBench's behaviour) sets the amplitude of the trigger
  :meth:`SIGBackdoor.trigger` returns (the one the ASR is measured with and the artefact
  stores); the poisoned training images always get ``delta``.
- **Rate.** ``rate`` is the fraction of the *target class* poisoned (``of = "eligible"``), the
  paper's ``alpha`` (the share of the target class's training samples that carry the signal).
  BackdoorBench instead counts its ``pratio`` over the whole training set (its default 0.1 is
  the whole target class of CIFAR-10). The card's own ``rate`` (read by ``trustlab bench
  backdoor``) is 0.8 of the target class (8% of a balanced 10-class training set).
- **Measured** (trustlab, CPU, target 0, rate 0.8 of the target class, defaults): digits /
  cnn-small, 3 epochs (the bench's ``smoke``): C-Acc 97.5%, ASR 0.0% (a clean model: 96.4%,
  0.0%); the signal is not learnt on these 8x8 digits upsampled to 16x16, not with 20 epochs,
  all of the target class, ``delta`` 40/255 or a ``test_delta`` up to 0.5 either (ASR <= 0.3%):
  a faithful negative result on a tiny, low-resolution dataset. shapes10 / resnet8, 5 epochs
  (the bench's ``quick`` training) on the first 5,000 training images: C-Acc 44.7%, ASR 72.7% (a
  clean model: 47.3%, 16.1%), 121 s; on the first 3,000: 30.0%, 99.0% (a clean model: 34.9%,
  0.9%), 42 s.
- **Quantisation.** BackdoorBench works on ``uint8`` images (``np.uint8(clip(x + v))``, so the
  signal is rounded down to integers); trustlab adds the float signal to float inputs in
  ``[0, 1]``.
- **Image size.** ``m`` is the width of the inputs the trigger is applied to, so one trigger
  works at any resolution (``f`` periods across the width on 16 px digits and 32 px images).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from trustlab.attacks.backdoor.labels import CleanLabel, LabelPolicy
from trustlab.attacks.backdoor.poison import PoisonedDataset, poison_dataset
from trustlab.attacks.backdoor.recipe import BackdoorRecipe
from trustlab.attacks.backdoor.triggers import Trigger
from trustlab.data.datasets import ArrayDataset
from trustlab.errors import InputError
from trustlab.registry import BACKDOORS

__all__ = ["SIGNALS", "SIGBackdoor", "SignalTrigger"]

#: the paper's two backdoor signals
SIGNALS = ("sinusoid", "ramp")

_PAPER = (
    "Barni, Kallas, Tondi. A New Backdoor Attack in CNNs by Training Set Corruption Without "
    "Label Poisoning. ICIP 2019 (arXiv:1902.11237)."
)


class SignalTrigger(Trigger):
    """SIG's superimposed signal (Barni et al., ICIP 2019): ``x' = clip(x + v, 0, 1)`` with
    ``v(i, j) = delta sin(2 pi j f / m)`` (``"sinusoid"``) or ``v(i, j) = j delta / m``
    (``"ramp"``), ``j`` the column and ``m`` the inputs' width; constant along the height and
    over the channels (and the frames of a clip).

    Args:
        delta: the amplitude on the [0, 1] scale (default 20/255, the paper's sinusoid).
        f: the sinusoid's frequency, periods across the width (default 6, the paper's).
        signal: ``"sinusoid"`` (default) or ``"ramp"``.

    Shapes: ``(N, C, H, W)`` or ``(N, C, T, H, W)`` in [0, 1] -> the same.

    Example::

        trig = SignalTrigger(20 / 255, 6)
        trig(x)  # x plus six horizontal periods of a faint sinusoid
    """

    kind = "signal"

    def __init__(self, delta: float = 20 / 255, f: float = 6, signal: str = "sinusoid") -> None:
        if signal not in SIGNALS:
            raise InputError(f"unknown signal {signal!r}; use {' or '.join(SIGNALS)}.")
        if not 0 < delta <= 1:
            raise InputError(f"delta is an amplitude on the [0, 1] scale, got {delta}.")
        if signal == "sinusoid" and not f > 0:
            raise InputError(f"the sinusoid's frequency f must be > 0, got {f}.")
        self.delta, self.f, self.signal = float(delta), float(f), signal

    def pattern(self, width: int) -> torch.Tensor:
        """``v`` along the width: ``(width,)`` float32 (the same for every row)."""
        j = torch.arange(width, dtype=torch.float64)
        if self.signal == "sinusoid":
            v = self.delta * torch.sin(2 * math.pi * j * self.f / width)
        else:
            v = self.delta * j / width
        return v.float()

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        v = self.pattern(x.shape[-1]).to(x.device, x.dtype)
        return (x + v).clamp(0, 1)

    def state(self) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
        config = {"kind": self.kind, "delta": self.delta, "f": self.f, "signal": self.signal}
        return config, {}

    @classmethod
    def from_state(cls, config: dict[str, Any], tensors: dict[str, torch.Tensor]) -> Trigger:
        return cls(float(config["delta"]), float(config["f"]), str(config["signal"]))


@BACKDOORS.register(
    "sig",
    "horizontal sinusoid (delta 20/255, f 6) on target-class images only (clean label)",
    paper=_PAPER,
    threat="data poisoning (clean label): rate of the target class",
    injector="data",
    rate=0.8,
)
class SIGBackdoor(BackdoorRecipe):
    """SIG (Barni et al., ICIP 2019): a faint signal added to target-class training images whose
    labels never change; the same signal on a test image triggers the target class. ``rate`` is
    the fraction of the *target class* poisoned (the paper's ``alpha``; see the module).

    Args:
        delta: the training signal's amplitude on the [0, 1] scale (default 20/255, the paper's;
            BackdoorBench uses 40/255).
        f: the sinusoid's frequency (default 6, the paper's and BackdoorBench's).
        signal: ``"sinusoid"`` (default, the paper's GTSRB signal) or ``"ramp"`` (its MNIST
            signal).
        test_delta: the amplitude of the test-time trigger (default ``None``: ``delta``, as
            BackdoorBench; the paper also evaluates stronger test-time signals).

    Shapes: inputs ``(N, C, H, W)`` in [0, 1]; the signal follows the inputs' width.

    Example::

        art = train_backdoor("sig", train, test, model, settings, rate=0.8)
        art.trigger.delta, art.policy.state()  # 0.078..., {"policy": "clean-label", ...}
    """

    of = "eligible"

    def __init__(
        self,
        delta: float = 20 / 255,
        f: float = 6,
        signal: str = "sinusoid",
        test_delta: float | None = None,
    ) -> None:
        self.delta, self.f, self.signal, self.test_delta = delta, f, signal, test_delta
        self.training_trigger()  # checks the parameters now

    def training_trigger(self) -> SignalTrigger:
        """The signal added to the poisoned training images (amplitude ``delta``)."""
        return SignalTrigger(self.delta, self.f, self.signal)

    def trigger(self, data: ArrayDataset, seed: int = 0, **surrogate: object) -> SignalTrigger:
        """The test-time trigger (amplitude ``test_delta``, default ``delta``)."""
        delta = self.delta if self.test_delta is None else self.test_delta
        return SignalTrigger(delta, self.f, self.signal)

    def policy(self, target: int, num_classes: int) -> LabelPolicy:
        return CleanLabel(target, num_classes)

    def poison(
        self,
        data: ArrayDataset,
        trigger: Trigger,
        policy: LabelPolicy,
        rate: float,
        seed: int = 0,
        **surrogate: Any,
    ) -> PoisonedDataset:
        """``rate`` of the target class with the *training* signal (``delta``), labels kept;
        ``trigger`` (the test-time one) is not used here when ``test_delta`` differs."""
        train_trigger = trigger if self.test_delta is None else self.training_trigger()
        return poison_dataset(data, train_trigger, policy, rate=rate, of=self.of, seed=seed)
