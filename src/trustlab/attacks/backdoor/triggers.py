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
- :class:`ReflectionTrigger`: Refool (Liu et al., ECCV 2020) as the authors' code does it
  (github.com/DreamtaleCore/Refool): a reflection layer made by :func:`refool_blend` (their
  ``blend_images``: ``in-focus``, ``out-of-focus`` blurred by ``sigma ~ U(1, 5)`` under a
  vignette, or ``ghost``, a copy shifted 3-8 px; in gamma-2.2 space at a working size of 560 px,
  intensity ``1 - alpha_t ~ U(0.05, 0.45)``), mixed into each image with weights proportional to
  the two images' mean brightness (their ``blend_image``), clipped to [0, 1].
"""

from __future__ import annotations

import functools
import math
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from trustlab.attacks.evasion.uap import apply_patch
from trustlab.errors import InputError
from trustlab.utils.seed import generator

REFLECTIONS = ("in-focus", "out-of-focus", "ghost")
#: how a reflection layer joins the image: the authors' brightness-weighted mix, or a sum
BLENDS = ("brightness", "additive")


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


def _gaussian_blur(img: torch.Tensor, sigma: float, radius: int | None = None) -> torch.Tensor:
    """Separable Gaussian blur of ``(C, H, W)`` with reflected borders; ``radius`` defaults to
    ``ceil(3 sigma)`` (capped by the image)."""
    radius = math.ceil(3 * sigma) if radius is None else radius
    radius = max(1, min(radius, min(img.shape[-2:]) - 1))
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


@functools.lru_cache(maxsize=4)
def _vignette(size: int, nsig: float = 3.0) -> torch.Tensor:
    """The authors' ``gen_kernel(size, 3)``: a ``(size, size)`` Gaussian window, peak 1."""
    interval = (2 * nsig + 1.0) / size
    x = torch.linspace(-nsig - interval / 2, nsig + interval / 2, size + 1, dtype=torch.float64)
    k1 = torch.diff(torch.special.ndtr(x))
    k = torch.sqrt(torch.outer(k1, k1))
    k = k / k.sum()
    return (k / k.max()).float()


def draw_reflection_params(g: torch.Generator, weight: float | None = None) -> dict[str, Any]:
    """One draw of the random parameters of the authors' ``blend_images`` (Refool's
    ``scripts/insert_reflection.py``): the reflection's intensity ``weight = 1 - alpha_t``,
    ``alpha_t = 1 - U(0.05, 0.45)`` (kept when given); the blur ``sigma ~ U(1, 5)``; the ghost's
    ``shift`` (3-8 px each way) and ``ghost_alpha = |round(U) - U(0.15, 0.5)|``; where the
    vignette window sits (``vignette``, two fractions of the free range) and the overflow
    attenuation ``att = 1.08 + U / 10``."""

    def u() -> float:
        return float(torch.rand((), generator=g))

    drawn = 0.05 + 0.4 * u()
    sigma = 1 + 4 * u()
    shift = (
        int(torch.randint(3, 9, (1,), generator=g)),
        int(torch.randint(3, 9, (1,), generator=g)),
    )
    ghost_alpha = abs(round(u()) - (0.15 + 0.35 * u()))
    vignette = (u(), u())
    att = 1.08 + u() / 10
    return {
        "weight": drawn if weight is None else float(weight), "sigma": sigma, "shift": shift,
        "ghost_alpha": ghost_alpha, "vignette": vignette, "att": att,
    }  # fmt: skip


def _working_size(h: int, w: int, max_size: int) -> tuple[int, int]:
    """The authors' working size: the longer side scaled to ``max_size``, aspect kept."""
    if w > h:
        return max(1, round(h * max_size / w)), max_size
    return max_size, max(1, round(w * max_size / h))


def refool_blend(
    reflection: torch.Tensor,
    model: str,
    params: dict[str, Any],
    background: torch.Tensor | None = None,
    max_image_size: int = 560,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The authors' ``blend_images`` (Refool, ``scripts/insert_reflection.py``) in torch:
    ``(blended, transmission, reflection_layer)``, each ``(3, h, w)`` in [0, 1] at the working
    size (the background's, or without one the reflection's, longer side ``max_image_size``).

    In gamma-2.2 space, with ``a = 1 - weight`` (the authors' ``alpha_t``): ``ghost``: the
    reflection plus a copy shifted by ``shift`` (weights ``ghost_alpha``, ``1 - ghost_alpha``),
    times ``weight``; ``out-of-focus``: the reflection blurred (Gaussian ``sigma``, kernel side
    ``2 ceil(2 sigma) + 1``), lowered where reflection + background overflows 1, times the
    vignette window and ``1 - a / 2``; the layer returned is that times ``min(1, 4 weight)``;
    ``in-focus`` (the paper's type I, not in the authors' code): the reflection times ``weight``.
    The blend adds ``a`` times the background; the transmission is ``a`` times the background.
    Without a background the background is black (the blend is the reflection layer).
    """
    if model not in REFLECTIONS:
        raise InputError(f"unknown reflection model {model!r}; use {', '.join(REFLECTIONS)}.")
    ref = reflection if background is None else background
    h, w = _working_size(ref.shape[-2], ref.shape[-1], max_image_size)
    r = _resize(reflection.float(), 3, (h, w)) ** 2.2
    t = None if background is None else _resize(background.float(), 3, (h, w))
    return _blend_linear(r, t, None if t is None else t**2.2, model, params, max_image_size)


def _blend_linear(
    r: torch.Tensor,
    t_srgb: torch.Tensor | None,
    t: torch.Tensor | None,
    model: str,
    params: dict[str, Any],
    max_image_size: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`refool_blend` on the reflection ``r`` and background ``t`` already at the working
    size and in gamma-2.2 space (``t_srgb``: the background before the gamma)."""
    h, w = r.shape[-2:]
    weight = float(params["weight"])
    alpha_t = 1 - weight
    if model == "ghost":
        dy, dx = params["shift"]
        ga = float(params["ghost_alpha"])
        r1 = F.pad(r, (0, dx, 0, dy))  # zeros after (bottom/right)
        r2 = F.pad(r, (dx, 0, dy, 0))  # zeros before (top/left)
        ghost = (ga * r1 + (1 - ga) * r2)[:, dy:-dy, dx:-dx]
        mask = _resize(ghost, 3, (h, w)) * weight
        layer = mask
    elif model == "in-focus":
        mask = layer = r * weight
    else:
        sigma = float(params["sigma"])
        blur = _gaussian_blur(r, sigma, radius=math.ceil(2 * sigma))
        if t is not None:
            over = blur + t
            for c in range(3):  # the authors' per-channel correction of an overflowing blend
                m = over[c] > 1
                mean = max(1.0, float((over[c] * m).sum()) / (float(m.sum()) + 1e-6))
                blur[c] = blur[c] - (mean - 1) * float(params["att"])
        blur = blur.clamp(0, 1)
        fy, fx = params["vignette"]
        oy = int(fy * (max_image_size - h - 10)) if h < max_image_size - 10 else 0
        ox = int(fx * (max_image_size - w - 10)) if w < max_image_size - 10 else 0
        window = _vignette(max_image_size)[oy : oy + h, ox : ox + w]
        mask = blur * window * (1 - alpha_t / 2)
        layer = min(1.0, 4 * weight) * mask
    if t is None or t_srgb is None:
        blended, transmission = mask, torch.zeros_like(mask)
    else:
        blended = mask + alpha_t * t
        transmission = alpha_t ** (1 / 2.2) * t_srgb
    return blended.clamp(0, 1) ** (1 / 2.2), transmission, layer.clamp(0, 1) ** (1 / 2.2)


class ReflectionTrigger(Trigger):
    """Refool's reflection trigger (Liu et al., ECCV 2020), following the authors' code
    (github.com/DreamtaleCore/Refool): the reflection layer of :func:`refool_blend`
    (``scripts/insert_reflection.py``'s ``blend_images``) mixed into each image with weights
    proportional to the two images' mean brightness (``strategy.py``'s ``blend_image``;
    TrojanZoo's ``Refool.add_mark`` likewise): ``x' = (m_x x + m_R R) / (m_x + m_R)``, ``m``
    the mean over the image's pixels and channels, clipped to [0, 1].

    Args:
        reflection: a bundled photograph's name or a ``(C, H, W)`` tensor in [0, 1].
        model: ``"in-focus"``, ``"out-of-focus"`` (default) or ``"ghost"``.
        weight: the reflection's intensity, the authors' ``1 - alpha_t``; default None: drawn
            from ``seed`` as the authors do, ``U(0.05, 0.45)``.
        channels, size: the inputs' channels and ``(H, W)`` (default 3, (32, 32)).
        seed: draws the blur (``sigma ~ U(1, 5)``), the ghost's shift and weights, the vignette.
        background: the image the layer was made against (its size is the working size, and the
            out-of-focus layer is lowered where the two overflow); default None.
        max_image_size: the working size's longer side (default 560, the authors'); the layer is
            made there and resized (bilinear, antialiased) to ``size``.
        blend: ``"brightness"`` (default, the authors') or ``"additive"``: ``x + weight R``
            clipped (the gamma-2.2 sum for out-of-focus), what trustlab did before; artefacts
            stored without a blend rebuild that way.

    Departures: the authors resize with OpenCV's bilinear resize (no antialiasing) and add the
    reflection to uint8 images; the in-focus model is the paper's (their code has ghost and
    out-of-focus only).

    Example::

        trig = ReflectionTrigger("chelsea", "ghost", channels=3, size=(32, 32), seed=0)
        x_triggered = trig(x)
    """

    kind = "reflection"

    def __init__(
        self,
        reflection: torch.Tensor | str,
        model: str = "out-of-focus",
        weight: float | None = None,
        channels: int = 3,
        size: tuple[int, int] = (32, 32),
        seed: int = 0,
        background: torch.Tensor | None = None,
        max_image_size: int = 560,
        blend: str = "brightness",
    ) -> None:
        if model not in REFLECTIONS:
            raise InputError(f"unknown reflection model {model!r}; use {', '.join(REFLECTIONS)}.")
        if weight is not None and not 0 < weight <= 1:
            raise InputError(f"weight must be in (0, 1], got {weight}.")
        if blend not in BLENDS:
            raise InputError(f"unknown blend {blend!r}; use {', '.join(BLENDS)}.")
        if max_image_size < 16:
            raise InputError(f"max_image_size must be >= 16, got {max_image_size}.")
        self.source = reflection if isinstance(reflection, str) else "image"
        if isinstance(reflection, str):
            from trustlab.data.synthetic import bundled_image

            reflection = bundled_image(reflection)
        params = draw_reflection_params(generator(seed), weight)
        self.set_params(model, params, blend, max_image_size)
        layer = refool_blend(reflection, model, params, background, max_image_size)[2]
        self.reflection = _resize(layer, channels, size)

    def set_params(
        self, model: str, params: dict[str, Any], blend: str, max_image_size: int
    ) -> None:
        self.model, self.blend, self.max_image_size = model, blend, int(max_image_size)
        self.weight, self.sigma = float(params["weight"]), float(params["sigma"])
        self.shift = tuple(int(s) for s in params["shift"])
        self.ghost_alpha = float(params["ghost_alpha"])
        self.vignette = tuple(float(v) for v in params["vignette"])
        self.att = float(params["att"])

    def params(self) -> dict[str, Any]:
        """The drawn parameters (as :func:`draw_reflection_params` returns them)."""
        return {
            "weight": self.weight, "sigma": self.sigma, "shift": self.shift,
            "ghost_alpha": self.ghost_alpha, "vignette": self.vignette, "att": self.att,
        }  # fmt: skip

    @classmethod
    def from_layer(
        cls,
        layer: torch.Tensor,
        model: str,
        params: dict[str, Any],
        source: str = "image",
        channels: int = 3,
        size: tuple[int, int] = (32, 32),
        max_image_size: int = 560,
    ) -> ReflectionTrigger:
        """A trigger from a reflection layer already made by :func:`refool_blend`."""
        t = cls.__new__(cls)
        t.set_params(model, params, "brightness", max_image_size)
        t.source = source
        t.reflection = _resize(layer, channels, size)
        return t

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        r = self.reflection
        if r.shape[-2:] != x.shape[-2:] or r.shape[0] != x.shape[1]:
            r = _resize(r, x.shape[1], tuple(x.shape[-2:]))
        r = r.to(x.device, x.dtype)
        if x.dim() == 5:
            r = r[:, None]
        if self.blend == "additive":  # trustlab's earlier sum, kept for stored artefacts
            if self.model == "out-of-focus":
                mixed = x.clamp(0, 1) ** 2.2 + self.weight * r**2.2
                return mixed.clamp(0, 1) ** (1 / 2.2)
            return (x + self.weight * r).clamp(0, 1)
        m_x = x.mean(dim=tuple(range(1, x.dim())), keepdim=True)
        m_r = r.mean()
        total = m_x + m_r
        mixed = torch.where(total > 0, (m_x * x + m_r * r) / total.clamp_min(1e-12), x)
        return mixed.clamp(0, 1)

    def state(self):
        config = {
            "kind": self.kind, "model": self.model, "weight": self.weight, "sigma": self.sigma,
            "shift": list(self.shift), "ghost_alpha": self.ghost_alpha,
            "vignette": list(self.vignette), "att": self.att, "source": self.source,
            "blend": self.blend, "max_image_size": self.max_image_size,
        }  # fmt: skip
        return config, {"reflection": self.reflection}

    @classmethod
    def from_state(cls, config: dict[str, Any], tensors: dict[str, torch.Tensor]) -> Trigger:
        t = cls.__new__(cls)
        params = {
            "weight": config["weight"], "sigma": config["sigma"], "shift": config["shift"],
            "ghost_alpha": config.get("ghost_alpha", config.get("attenuation", 0.0)),
            "vignette": config.get("vignette", (0.0, 0.0)), "att": config.get("att", 1.08),
        }  # fmt: skip
        # artefacts stored before the brightness blend carry no "blend": they added the layer
        blend = config.get("blend", "additive")
        t.set_params(config["model"], params, blend, config.get("max_image_size", 560))
        t.reflection = tensors["reflection"]
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
