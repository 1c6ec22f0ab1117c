"""The blended backdoor as a recipe: a whole-image pattern mixed into the input.

Chen, Liu, Li, Lu & Song, "Targeted Backdoor Attacks on Deep Learning Systems Using Data
Poisoning", arXiv:1712.05526, 2017: the blended injection strategy, ``(1 - alpha) x + alpha p``
with a pattern image ``p`` (the paper blends a cartoon image or random noise), all-to-one.
trustlab's default: uniform noise drawn from the attack's seed, ``alpha = 0.2``.
"""

from __future__ import annotations

from trustlab.attacks.backdoor.recipe import BackdoorRecipe
from trustlab.attacks.backdoor.triggers import BlendTrigger
from trustlab.data.datasets import ArrayDataset
from trustlab.registry import BACKDOORS

__all__ = ["BlendBackdoor"]


@BACKDOORS.register(
    "blend",
    "uniform-noise pattern blended at alpha 0.2, all-to-one",
    paper="Chen, Liu, Li, Lu, Song. Targeted Backdoor Attacks on Deep Learning Systems Using "
    "Data Poisoning. arXiv:1712.05526, 2017.",
    threat="data poisoning (dirty label): a blended whole-image trigger",
    injector="data",
)
class BlendBackdoor(BackdoorRecipe):
    """The blended backdoor (Chen et al., arXiv 2017): ``(1 - alpha) x + alpha p``, all-to-one.

    Args:
        pattern: ``"random"`` (uniform noise drawn from the attack's seed; default) or the
            name of a bundled photograph.
        alpha: the blend ratio (default 0.2).

    Shapes: the pattern is made at the data's ``(C, H, W)``; inputs ``(N, C, H, W)`` in [0, 1].

    Example::

        art = train_backdoor("blend", train, test, model, settings, rate=0.1, seed=0)
        art.trigger.alpha  # 0.2
    """

    def __init__(self, pattern: str = "random", alpha: float = 0.2) -> None:
        self.pattern, self.alpha = pattern, alpha

    def trigger(self, data: ArrayDataset, seed: int = 0, **surrogate: object) -> BlendTrigger:
        c, size = data.x.shape[1], tuple(data.x.shape[-2:])
        return BlendTrigger(self.pattern, self.alpha, c, size, seed)
