"""Semantic blind backdoors: Bagdasaryan & Shmatikov, "Blind Backdoors in Deep Learning Models",
USENIX Security 2021 (backdoors that need no input change at inference time).

The backdoor feature is a natural one that some inputs already have (the paper's example: movie
reviews that mention a particular name are classified as positive); at test time nothing is
added to the input. The compromised loss cannot change the training data and sees only
``(model, x, y)``, so its backdoor batch comes from two honest sources, either or both:

- ``has_feature(x) -> (N,) bool``: inputs *of the batch* that already carry the feature,
  relabelled to the target (the attacker's code recognises the feature itself);
- ``feature_images``: the attacker's own inputs with the feature (the paper's attack code
  synthesises backdoor inputs, e.g. inserts the name into reviews); ``per_batch`` of them
  (default: as many as the batch has inputs) are drawn per call with the global torch RNG, which
  a trustlab trainer seeds per epoch, so a run is deterministic and resumable.

All backdoor inputs get the ``target`` label. Use it as the loss's synthesiser:
``BlindBackdoorLoss(synthesize=SemanticBackdoor(0, feature_images=...))``; the main loss stays
the plain loss of the batch (feature-bearing inputs included, with their true labels), and MGDA
balances the two as for any blind backdoor.

On ``shapes10`` a natural feature is the background photograph (the dataset records it per image
as ``.texture``): :func:`texture_feature_images` renders the attacker's own shapes on crops of one
photograph with the public generator and a seed of the attacker's, never the dataset's images.
:func:`evaluate_semantic` measures the backdoor on the natural test images with the feature.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from trustlab.data.datasets import ArrayDataset
from trustlab.errors import InputError
from trustlab.utils.modules import frozen


class SemanticBackdoor:
    """``synthesize(x, y) -> (x_b, y_b)``: the feature-bearing inputs of the batch and/or the
    attacker's own feature images, all labelled ``target``; see the module. Defaults: no
    recogniser, ``per_batch`` = the batch size.

    Example::

        pool = texture_feature_images("hubble_deep_field", 2000, seed=1)
        loss = BlindBackdoorLoss(synthesize=SemanticBackdoor(0, feature_images=pool))
    """

    def __init__(
        self,
        target: int,
        feature_images: torch.Tensor | None = None,
        has_feature: Callable[[torch.Tensor], torch.Tensor] | None = None,
        per_batch: int | None = None,
    ) -> None:
        if int(target) != target or target < 0:
            raise InputError(f"the semantic backdoor's target must be a class index, got {target}.")
        if feature_images is None and has_feature is None:
            raise InputError(
                "a semantic backdoor needs feature_images (the attacker's own inputs with the "
                "feature) or has_feature (a recogniser x -> bool mask), or both."
            )
        if feature_images is not None:
            f = feature_images
            if not isinstance(f, torch.Tensor) or f.dim() not in (4, 5) or len(f) == 0:
                raise InputError(
                    "feature_images must be a non-empty float tensor (M, C, H, W) or "
                    "(M, C, T, H, W)."
                )
            f = f.float()
            if float(f.min()) < 0.0 or float(f.max()) > 1.0:
                raise InputError(
                    "feature_images must lie in [0, 1]; divide uint8 images by 255 first."
                )
            feature_images = f
        if per_batch is not None and per_batch < 1:
            raise InputError(f"per_batch must be >= 1, got {per_batch}.")
        self.target = int(target)
        self.feature_images = feature_images
        self.has_feature = has_feature
        self.per_batch = per_batch

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        parts = []
        if self.has_feature is not None:
            mask = torch.as_tensor(self.has_feature(x), device=x.device)
            if mask.shape != (len(x),):
                raise InputError(
                    f"has_feature must return one bool per input, shape ({len(x)},); got "
                    f"{tuple(mask.shape)}."
                )
            parts.append(x[mask.bool()])
        if self.feature_images is not None:
            pool = self.feature_images
            if pool.shape[1:] != x.shape[1:]:
                raise InputError(
                    f"feature_images are {tuple(pool.shape[1:])} but the batch is "
                    f"{tuple(x.shape[1:])}; make them the shape of the training inputs."
                )
            k = self.per_batch if self.per_batch is not None else len(x)
            idx = torch.randint(len(pool), (k,))
            parts.append(pool[idx].to(device=x.device, dtype=x.dtype))
        xb = torch.cat(parts)
        return xb, torch.full((len(xb),), self.target, dtype=torch.long, device=x.device)


def texture_feature_images(source: str, n: int, seed: int) -> torch.Tensor:
    """``n`` shapes10-style images ``(n, 3, 32, 32)`` in ``[0, 1]`` whose backgrounds are all
    crops of the bundled photograph ``source`` (one of
    :data:`trustlab.data.synthetic.TEXTURE_SOURCES`): the attacker's own feature images, drawn
    with ``seed`` (use one that is not the dataset's)."""
    from trustlab.data.synthetic import SEEDS, make_shapes10

    if seed in (SEEDS["shapes10"], SEEDS["shapes10"] + 1):
        raise InputError(
            f"seed {seed} is the seed of shapes10's own split; the attacker's images must be "
            "drawn with another seed."
        )
    if n < 1:
        raise InputError(f"n must be >= 1, got {n}.")
    return make_shapes10(n, seed, sources=[source])["x"].float().div_(255.0)


def evaluate_semantic(
    model: nn.Module,
    test: ArrayDataset,
    feature: torch.Tensor,
    target: int,
    batch_size: int = 512,
    device: torch.device | str = "cpu",
) -> dict[str, float]:
    """Main-task and backdoor accuracy of a semantic backdoor on the natural test set.

    ``feature``: ``(N,)`` bool, the test inputs that carry the feature (e.g.
    ``test.texture == k``). Returns ``clean_acc`` (accuracy on the inputs *without* the feature:
    the untriggered inputs), ``clean_acc_all`` (on every test input), ``asr`` (the fraction of
    feature-bearing inputs whose true class is not the target that are classified as the target:
    the backdoor accuracy) and ``ra`` (those still given their true class).
    """
    feature = torch.as_tensor(feature).bool().cpu()
    if feature.shape != (len(test),):
        raise InputError(f"feature must be one bool per test input ({len(test)},).")
    hit = feature & (test.y != target)
    if not bool(hit.any()) or bool(feature.all()):
        raise InputError(
            "the test set needs inputs with the feature outside the target class and inputs "
            "without it to measure a semantic backdoor."
        )
    preds = []
    with frozen(model), torch.no_grad():
        for s in range(0, len(test), batch_size):
            preds.append(model(test.x[s : s + batch_size].to(device)).argmax(1).cpu())
    p = torch.cat(preds)
    right = p == test.y
    return {
        "clean_acc": float(right[~feature].float().mean()),
        "clean_acc_all": float(right.float().mean()),
        "asr": float((p[hit] == target).float().mean()),
        "ra": float(right[hit].float().mean()),
    }
