"""BadNets and its variants as backdoor recipes: a small patch (or one pixel) stamped on a
fraction of the training set, relabelled all-to-one or all-to-all.

Gu, Dolan-Gavitt & Garg, "BadNets: Identifying Vulnerabilities in the Machine Learning Model
Supply Chain", arXiv:1708.06733, 2017. The paper's triggers are a small pattern (a 3x3
checkerboard-like square in its MNIST experiments) and a single bright pixel; its label
policies are all-to-one (every triggered input to one target class) and all-to-all
(``y -> y + 1``). ``rate`` counts the whole training set (the paper's poisoning fraction).
"""

from __future__ import annotations

from trustlab.attacks.backdoor.labels import AllToAll, LabelPolicy
from trustlab.attacks.backdoor.recipe import BackdoorRecipe
from trustlab.attacks.backdoor.triggers import PatchTrigger, PixelTrigger
from trustlab.data.datasets import ArrayDataset
from trustlab.registry import BACKDOORS

__all__ = ["BadNets", "BadNetsAllToAll", "PixelBackdoor"]

_PAPER = (
    "Gu, Dolan-Gavitt, Garg. BadNets: Identifying Vulnerabilities in the Machine Learning "
    "Model Supply Chain. arXiv:1708.06733, 2017."
)


@BACKDOORS.register(
    "badnets",
    "3x3 checkerboard at the bottom-right, all-to-one",
    paper=_PAPER,
    threat="data poisoning (dirty label): rate of the training set triggered and relabelled",
    injector="data",
)
class BadNets(BackdoorRecipe):
    """BadNets (Gu et al., arXiv 2017): a ``size`` x ``size`` checkerboard patch pasted at
    ``location``, every triggered input relabelled to the target (all-to-one).

    Args:
        size: side of the patch in pixels (default 3; trustlab's choice of a small pattern).
        location: a corner (default ``"bottom-right"``, as the paper) or ``(top, left)``.

    Shapes: the trigger maps ``(N, C, H, W)`` (or clips ``(N, C, T, H, W)``) in [0, 1] to the
    same shape.

    Example::

        art = train_backdoor("badnets", train, test, model, TrainSettings(epochs=5))
        art.metrics["asr"]
    """

    def __init__(self, size: int = 3, location: str | tuple[int, int] = "bottom-right") -> None:
        self.size, self.location = size, location

    def trigger(self, data: ArrayDataset, seed: int = 0, **surrogate: object) -> PatchTrigger:
        return PatchTrigger(size=self.size, location=self.location, channels=data.x.shape[1])


@BACKDOORS.register(
    "badnets-all2all",
    "BadNets' patch, all-to-all (y -> y + 1)",
    paper=_PAPER,
    threat="data poisoning (dirty label), all-to-all",
    injector="data",
)
class BadNetsAllToAll(BadNets):
    """BadNets' all-to-all attack (Gu et al., arXiv 2017): the same patch as :class:`BadNets`,
    a triggered input of class ``y`` relabelled ``(y + 1) mod K``; ``target`` is unused.

    Args:
        size: side of the patch (default 3).
        location: a corner (default ``"bottom-right"``) or ``(top, left)``.

    Example::

        art = train_backdoor("badnets-all2all", train, test, model, settings)
        art.policy.state()  # {"policy": "all-to-all", "num_classes": K}
    """

    def policy(self, target: int, num_classes: int) -> LabelPolicy:
        return AllToAll(num_classes)


@BACKDOORS.register(
    "pixel",
    "one white pixel at the bottom-right, all-to-one",
    paper=_PAPER,
    threat="data poisoning (dirty label): a single-pixel trigger",
    injector="data",
)
class PixelBackdoor(BackdoorRecipe):
    """BadNets' single-pixel trigger (Gu et al., arXiv 2017): one pixel set to ``value`` at
    ``location``, all-to-one.

    Args:
        value: the pixel's value in [0, 1] on every channel (default 1, white).
        location: a corner (default ``"bottom-right"``) or ``(top, left)``.

    Example::

        recipe = BACKDOORS.build("pixel")
        x_triggered = recipe.trigger(train)(x)
    """

    def __init__(
        self, value: float = 1.0, location: str | tuple[int, int] = "bottom-right"
    ) -> None:
        self.value, self.location = value, location

    def trigger(self, data: ArrayDataset, seed: int = 0, **surrogate: object) -> PixelTrigger:
        return PixelTrigger(self.value, self.location, channels=data.x.shape[1])
