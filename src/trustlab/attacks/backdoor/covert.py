"""Covert-task blind backdoors: Bagdasaryan & Shmatikov, "Blind Backdoors in Deep Learning
Models", USENIX Security 2021 (the covert, "privacy-violating" task).

The trigger switches the model to a *different task on the same inputs*: with the trigger
present the model no longer reports the main-task class but another attribute of the input,
mapped onto the same output classes (the paper's examples: a digit-recognition model that sums
or multiplies the digits when a pixel pattern is present; a model that counts faces which
identifies a specific person instead). The compromised loss is the ordinary blind loss with a
label hook: ``BlindBackdoorLoss(trigger, backdoor_labels=BrightnessBand(10))`` trains
``model(trigger(x)) -> backdoor_labels(x, y)`` next to ``model(x) -> y``; the covert labels are
computed from the *clean* batch by the attacker's code, so nothing outside the loss is needed.

:class:`BrightnessBand` is such a covert task that any image batch carries: the band of the
image's mean luma (Rec. 601 weights ``0.299 R + 0.587 G + 0.114 B``; the channel itself for grey
images), ``floor(bands * luma)`` clamped to ``[0, bands - 1]``; default ``bands = 10``, equal
width over ``[0, 1]``. On ``shapes10`` (10 output classes) the shape is the main task and the
brightness band the covert one; the bands are not balanced (the commonest band holds 28.45% of
the test images: what a constant guess scores).

:func:`evaluate_covert` measures main-task accuracy on clean inputs and the covert task's
accuracy on triggered inputs (the backdoor accuracy of the paper).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from trustlab.attacks.backdoor.triggers import Trigger
from trustlab.data.datasets import ArrayDataset
from trustlab.errors import InputError
from trustlab.utils.modules import frozen

#: Rec. 601 luma weights (R, G, B).
LUMA = (0.299, 0.587, 0.114)


def mean_luma(x: torch.Tensor) -> torch.Tensor:
    """Mean luma ``(N,)`` of images ``(N, C, H, W)`` or clips ``(N, C, T, H, W)`` in ``[0, 1]``:
    Rec. 601 weights for three channels, the plain channel mean otherwise."""
    if not isinstance(x, torch.Tensor) or x.dim() not in (4, 5):
        raise InputError(
            "brightness needs a batch of images (N, C, H, W) or clips (N, C, T, H, W)."
        )
    per_channel = x.float().mean(dim=tuple(range(2, x.dim())))  # (N, C)
    if x.shape[1] == 3:
        return per_channel @ torch.tensor(LUMA, device=x.device)
    return per_channel.mean(1)


class BrightnessBand:
    """Covert task ``backdoor_labels(x, y) -> band of x's mean luma`` (``y`` is ignored):
    ``floor(bands * mean_luma(x))`` clamped to ``[0, bands - 1]``; default 10 bands.

    Example::

        task = BrightnessBand(10)
        loss = BlindBackdoorLoss(trigger, backdoor_labels=task)
    """

    name = "brightness-band"

    def __init__(self, bands: int = 10) -> None:
        if int(bands) != bands or bands < 2:
            raise InputError(f"a covert task needs at least 2 brightness bands, got {bands!r}.")
        self.bands = int(bands)

    def __call__(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return (mean_luma(x) * self.bands).floor().long().clamp(0, self.bands - 1)

    def state(self) -> dict[str, object]:
        return {"covert_task": self.name, "bands": self.bands}


def evaluate_covert(
    model: nn.Module,
    test: ArrayDataset,
    trigger: Trigger,
    labels: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    batch_size: int = 512,
    device: torch.device | str = "cpu",
) -> dict[str, float]:
    """``{"clean_acc", "asr", "ra"}`` of a covert-task backdoor.

    ``clean_acc``: main-task accuracy on the clean test set; ``asr``: the covert task's accuracy
    on the triggered test set (the model's prediction on ``trigger(x)`` equals
    ``labels(x, y)``, all test inputs); ``ra``: the fraction of triggered inputs still given
    their main-task class.
    """
    if test.num_classes < 2:
        raise InputError("a covert task needs a test set with at least 2 classes.")
    clean, trig, covert = [], [], []
    with frozen(model), torch.no_grad():
        for s in range(0, len(test), batch_size):
            x = test.x[s : s + batch_size].to(device)
            y = test.y[s : s + batch_size].to(device)
            clean.append(model(x).argmax(1).cpu())
            trig.append(model(trigger(x)).argmax(1).cpu())
            covert.append(labels(x, y).cpu())
    pc, pt, yc = torch.cat(clean), torch.cat(trig), torch.cat(covert)
    return {
        "clean_acc": float((pc == test.y).float().mean()),
        "asr": float((pt == yc).float().mean()),
        "ra": float((pt == test.y).float().mean()),
    }
