"""Backdoor triggers: pure, seeded tensor transforms ``x -> x'`` with serialisable parameters.

Every trigger maps a batch in ``[0, 1]`` (images ``(N, C, H, W)``; the patch triggers also clips
``(N, C, T, H, W)``, on every frame) to a batch in ``[0, 1]``; whatever is random (a random
pattern, the reflection's blur and shift) is drawn once, from ``seed``, when the trigger is made,
so the same trigger transforms the same input the same way every time. ``state()`` returns
``(config, tensors)``: JSON-able parameters and the tensors (pattern, reflection) that rebuild it
with :func:`trigger_from_state`, for the attack artefact on disk.

- :class:`PatchTrigger`: BadNets (Gu et al., 2017): a ``size`` x ``size`` pattern (default 3x3
  checkerboard) pasted at a corner (default bottom-right) or ``(top, left)``. A learned pattern
  (a universal adversarial patch, :func:`trustlab.attacks.evasion.uap.universal_patch`) is a
  ``PatchTrigger`` with ``pattern=`` that tensor.
- :class:`PixelTrigger`: one pixel (default the bottom-right) set to ``value`` (default 1).
- :class:`BlendTrigger`: Chen et al. (2017): ``(1 - alpha) x + alpha p`` with a pattern image
  ``p`` (default uniform noise from ``seed``), ``alpha = 0.2``.
- :class:`ReflectionTrigger`: Refool (Liu et al., ECCV 2020), three reflection models of a
  reflection image ``R``: ``in-focus``: ``x + w R`` (intensity weight ``w = 0.4``);
  ``out-of-focus``: ``R`` blurred by a Gaussian of ``sigma ~ U(1, 5)``, added in gamma-2.2 space;
  ``ghost``: ``R`` plus a copy shifted by 3-8 pixels, attenuated (``alpha ~ U(0.15, 0.35)`` on the
  copy), added with weight ``w``. Results are clipped to [0, 1].
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from trustlab.attacks.evasion.uap import apply_patch
from trustlab.errors import InputError
from trustlab.utils.seed import generator

REFLECTIONS = ("in-focus", "out-of-focus", "ghost")


def _check_batch(x: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor) or x.dim() not in (4, 5):
        raise InputError("a trigger transforms a batch (N, C, H, W) or clips (N, C, T, H, W).")


def _resize(img: torch.Tensor, channels: int, size: tuple[int, int]) -> torch.Tensor:
    """``(C', H', W')`` -> ``(channels, *size)`` (bilinear; RGB to grey by the mean)."""
    if img.dim() != 3:
        raise InputError(f"a trigger image must be (C, H, W), got {tuple(img.shape)}.")
    if img.shape[0] != channels:
        if channels == 1:
            img = img.mean(0, keepdim=True)
        elif img.shape[0] == 1:
            img = img.expand(channels, -1, -1)
        else:
            raise InputError(f"a {img.shape[0]}-channel image for {channels}-channel inputs.")
    out = F.interpolate(img[None].float(), size=size, mode="bilinear", align_corners=False)[0]
    return out.clamp(0, 1)


class Trigger:
    """Base class of the backdoor triggers: ``trigger(x) -> x'`` on a batch in [0, 1]
    (``(N, C, H, W)``, or clips ``(N, C, T, H, W)``), and ``state() -> (config, tensors)``
    to store it (:func:`trigger_from_state` rebuilds it).

    Example::

        trig = PatchTrigger(size=3, channels=3)
        x_triggered = trig(x)
    """

    kind = "trigger"
    #: every trigger class by its ``kind`` (filled as subclasses are defined), so that a stored
    #: trigger of any kind, also one a new recipe defines in its own file, can be rebuilt
    kinds: ClassVar[dict[str, type[Trigger]]] = {}

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        if "kind" in cls.__dict__:
            Trigger.kinds[cls.kind] = cls

    @classmethod
    def from_state(cls, config: dict[str, Any], tensors: dict[str, torch.Tensor]) -> Trigger:
        """Rebuild a trigger of this kind from :meth:`state` (nothing is recomputed)."""
        raise NotImplementedError  # pragma: no cover - every stored kind defines it

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        _check_batch(x)
        return self.apply(x)

    def apply(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def state(self) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:  # pragma: no cover
        raise NotImplementedError


class PatchTrigger(Trigger):
    """BadNets' patch (Gu et al., arXiv 2017): a ``(C, h, w)`` pattern pasted at a corner.

    Args:
        pattern: ``"checkerboard"`` (default), ``"white"``, ``"random"`` (from ``seed``) or a
            ``(C, h, w)`` tensor in [0, 1] (a learnt patch).
        size: the side of a named pattern (default 3).
        location: ``"bottom-right"`` (default), another corner or ``(top, left)``.
        channels: the inputs' channels (default 3).
        seed: draws the ``"random"`` pattern.

    Shapes: ``(N, C, H, W)`` or ``(N, C, T, H, W)`` -> the same.

    Example::

        trig = PatchTrigger(size=3, channels=1)
        trig(x)[..., -3:, -3:]  # the checkerboard
    """

    kind = "patch"

    def __init__(
        self,
        pattern: torch.Tensor | str = "checkerboard",
        size: int = 3,
        location: tuple[int, int] | str = "bottom-right",
        channels: int = 3,
        seed: int = 0,
    ) -> None:
        if isinstance(pattern, str):
            if size < 1:
                raise InputError(f"patch size must be >= 1, got {size}.")
            if pattern == "checkerboard":
                ii, jj = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
                p = ((ii + jj) % 2 == 0).float()[None].expand(channels, -1, -1).clone()
            elif pattern == "white":
                p = torch.ones(channels, size, size)
            elif pattern == "random":
                p = torch.rand(channels, size, size, generator=generator(seed))
            else:
                raise InputError(
                    f"unknown pattern {pattern!r}; use checkerboard, white, random or a tensor."
                )
        else:
            p = pattern.detach().float().cpu()
            if p.dim() != 3 or float(p.min()) < 0 or float(p.max()) > 1:
                raise InputError("a patch pattern must be a (C, h, w) tensor in [0, 1].")
        self.pattern = p
        self.location = location

    def position(self, x: torch.Tensor) -> tuple[int, int]:
        """``(top, left)`` of the patch on inputs shaped like ``x``."""
        h, w = self.pattern.shape[-2:]
        H, W = x.shape[-2:]
        if isinstance(self.location, str):
            corners = {
                "bottom-right": (H - h, W - w), "bottom-left": (H - h, 0),
                "top-right": (0, W - w), "top-left": (0, 0),
            }  # fmt: skip
            if self.location not in corners:
                raise InputError(
                    f"unknown location {self.location!r}; use a corner or (top, left)."
                )
            return corners[self.location]
        return int(self.location[0]), int(self.location[1])

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        if self.pattern.shape[0] != x.shape[1]:
            raise InputError(
                f"a {self.pattern.shape[0]}-channel pattern for {x.shape[1]}-channel inputs; "
                "make the trigger with channels= the data's channels."
            )
        return apply_patch(x, self.pattern, self.position(x))

    def state(self):
        loc = self.location if isinstance(self.location, str) else list(self.location)
        return {"kind": self.kind, "location": loc}, {"pattern": self.pattern}

    @classmethod
    def from_state(cls, config: dict[str, Any], tensors: dict[str, torch.Tensor]) -> Trigger:
        loc = config["location"]
        t = PatchTrigger(tensors["pattern"], location=loc if isinstance(loc, str) else tuple(loc))
        t.kind = config["kind"]
        return t


class PixelTrigger(PatchTrigger):
    """BadNets' single-pixel trigger (Gu et al., arXiv 2017): one pixel set to ``value``.

    Args:
        value: in [0, 1] on every channel (default 1, white).
        location: ``"bottom-right"`` (default), another corner or ``(top, left)``.
        channels: the inputs' channels (default 3).

    Example::

        trig = PixelTrigger(channels=3)
        trig(x)[..., -1, -1]  # 1.0
    """

    kind = "pixel"

    def __init__(
        self,
        value: float = 1.0,
        location: tuple[int, int] | str = "bottom-right",
        channels: int = 3,
    ) -> None:
        if not 0 <= value <= 1:
            raise InputError(f"the pixel value must be in [0, 1], got {value}.")
        super().__init__(torch.full((channels, 1, 1), float(value)), 1, location, channels)


class BlendTrigger(Trigger):
    """The blended trigger (Chen et al., arXiv 2017): ``(1 - alpha) x + alpha p``.

    Args:
        pattern: ``"random"`` (uniform noise from ``seed``; default), a bundled photograph's
            name, or a ``(C, H, W)`` tensor in [0, 1].
        alpha: the blend ratio (default 0.2).
        channels, size: the pattern's channels and ``(H, W)`` (default 3, (32, 32)); resized
            to the inputs when they differ.
        seed: draws the random pattern.

    Example::

        trig = BlendTrigger("random", 0.2, channels=3, size=(32, 32), seed=0)
        x_triggered = trig(x)
    """

    kind = "blend"

    def __init__(
        self,
        pattern: torch.Tensor | str = "random",
        alpha: float = 0.2,
        channels: int = 3,
        size: tuple[int, int] = (32, 32),
        seed: int = 0,
    ) -> None:
        if not 0 < alpha <= 1:
            raise InputError(f"alpha must be in (0, 1], got {alpha}.")
        if isinstance(pattern, str):
            if pattern != "random":
                from trustlab.data.synthetic import bundled_image

                pattern = bundled_image(pattern)
            else:
                pattern = torch.rand(channels, *size, generator=generator(seed))
        self.pattern = _resize(pattern, channels, size)
        self.alpha = float(alpha)

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        p = self.pattern
        if p.shape[-2:] != x.shape[-2:] or p.shape[0] != x.shape[1]:
            p = _resize(p, x.shape[1], tuple(x.shape[-2:]))
        p = p.to(x.device, x.dtype)
        if x.dim() == 5:
            p = p[:, None]
        return ((1 - self.alpha) * x + self.alpha * p).clamp(0, 1)

    def state(self):
        return {"kind": self.kind, "alpha": self.alpha}, {"pattern": self.pattern}

    @classmethod
    def from_state(cls, config: dict[str, Any], tensors: dict[str, torch.Tensor]) -> Trigger:
        t = cls.__new__(cls)
        t.pattern, t.alpha = tensors["pattern"], float(config["alpha"])
        return t


def _gaussian_blur(img: torch.Tensor, sigma: float) -> torch.Tensor:
    radius = max(1, min(math.ceil(3 * sigma), min(img.shape[-2:]) - 1))
    t = torch.arange(-radius, radius + 1, dtype=img.dtype)
    k = torch.exp(-(t**2) / (2 * sigma**2))
    k = k / k.sum()
    c = img.shape[0]
    x = img[None]
    x = F.conv2d(
        F.pad(x, (radius, radius, 0, 0), mode="reflect"),
        k.view(1, 1, 1, -1).expand(c, 1, 1, -1),
        groups=c,
    )
    x = F.conv2d(
        F.pad(x, (0, 0, radius, radius), mode="reflect"),
        k.view(1, 1, -1, 1).expand(c, 1, -1, 1),
        groups=c,
    )
    return x[0]


class ReflectionTrigger(Trigger):
    """Refool's reflection trigger (Liu et al., ECCV 2020); see the module for the three
    reflection models.

    Args:
        reflection: a bundled photograph's name or a ``(C, H, W)`` tensor in [0, 1].
        model: ``"in-focus"``, ``"out-of-focus"`` (default) or ``"ghost"``.
        weight: the reflection's intensity weight (default 0.4).
        channels, size: the inputs' channels and ``(H, W)`` (default 3, (32, 32)).
        seed: draws the blur (``sigma ~ U(1, 5)``), the ghost's shift and attenuation.

    Example::

        trig = ReflectionTrigger("chelsea", "ghost", channels=3, size=(32, 32), seed=0)
        x_triggered = trig(x)
    """

    kind = "reflection"

    def __init__(
        self,
        reflection: torch.Tensor | str,
        model: str = "out-of-focus",
        weight: float = 0.4,
        channels: int = 3,
        size: tuple[int, int] = (32, 32),
        seed: int = 0,
    ) -> None:
        if model not in REFLECTIONS:
            raise InputError(f"unknown reflection model {model!r}; use {', '.join(REFLECTIONS)}.")
        if not 0 < weight <= 1:
            raise InputError(f"weight must be in (0, 1], got {weight}.")
        self.source = reflection if isinstance(reflection, str) else "image"
        if isinstance(reflection, str):
            from trustlab.data.synthetic import bundled_image

            reflection = bundled_image(reflection)
        g = generator(seed)
        r = _resize(reflection, channels, size)
        self.model, self.weight = model, float(weight)
        self.sigma = 1 + 4 * float(torch.rand((), generator=g))
        self.shift = (int(torch.randint(3, 9, (1,), generator=g)),
                      int(torch.randint(3, 9, (1,), generator=g)))  # fmt: skip
        self.attenuation = 0.15 + 0.2 * float(torch.rand((), generator=g))
        if model == "out-of-focus":
            r = _gaussian_blur(r, self.sigma)
        elif model == "ghost":
            shifted = torch.roll(r, self.shift, dims=(-2, -1))
            r = (1 - self.attenuation) * r + self.attenuation * shifted
        self.reflection = r.clamp(0, 1)

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        r = self.reflection
        if r.shape[-2:] != x.shape[-2:] or r.shape[0] != x.shape[1]:
            r = _resize(r, x.shape[1], tuple(x.shape[-2:]))
        r = r.to(x.device, x.dtype)
        if x.dim() == 5:
            r = r[:, None]
        if self.model == "out-of-focus":  # add in linear light (gamma 2.2), back to sRGB
            mixed = x.clamp(0, 1) ** 2.2 + self.weight * r**2.2
            return mixed.clamp(0, 1) ** (1 / 2.2)
        return (x + self.weight * r).clamp(0, 1)

    def state(self):
        config = {
            "kind": self.kind, "model": self.model, "weight": self.weight, "sigma": self.sigma,
            "shift": list(self.shift), "attenuation": self.attenuation, "source": self.source,
        }  # fmt: skip
        return config, {"reflection": self.reflection}

    @classmethod
    def from_state(cls, config: dict[str, Any], tensors: dict[str, torch.Tensor]) -> Trigger:
        t = cls.__new__(cls)
        t.reflection, t.model, t.weight = tensors["reflection"], config["model"], config["weight"]
        t.sigma, t.shift = config["sigma"], tuple(config["shift"])
        t.attenuation = config["attenuation"]
        t.source = config.get("source", "image")
        return t


def apply_mask(x: torch.Tensor, mask: torch.Tensor, pattern: torch.Tensor) -> torch.Tensor:
    """``(1 - m) x + m p`` (a mask-and-pattern trigger, e.g. one Neural Cleanse reverse-
    engineers): mask ``(H, W)`` and pattern ``(C, H, W)`` for the whole batch, or per input
    ``(N, 1, H, W)`` and ``(N, C, H, W)``."""
    m = mask.to(x.device, x.dtype)
    return (1 - m) * x + m * pattern.to(x.device, x.dtype)


def trigger_from_state(config: dict[str, Any], tensors: dict[str, torch.Tensor]) -> Trigger:
    """Rebuild a trigger from :meth:`Trigger.state` (the artefact's trigger): the class of its
    ``kind`` (:attr:`Trigger.kinds`) rebuilds it."""
    kind = config.get("kind")
    if kind not in Trigger.kinds:
        raise InputError(
            f"unknown trigger kind {kind!r} in the artefact; expected {', '.join(Trigger.kinds)}."
        )
    return Trigger.kinds[kind].from_state(config, tensors)
