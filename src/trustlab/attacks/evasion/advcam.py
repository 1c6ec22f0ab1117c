"""AdvCam: Duan, Ma, Wang, Bailey, Qin & Yang, "Adversarial Camouflage: Hiding Physical-World
Attacks with Natural Styles", CVPR 2020.

Inside a region mask, find ``x'`` minimising

    w_s L_style + w_c L_content + w_tv L_tv + w_adv L_adv

- ``L_style``: squared distance between the Gram matrices of ``x'`` and of a style exemplar, summed
  over the style layers of a convolutional feature extractor (the region's features only: each
  feature map is weighted by the mask resized to it, and its Gram matrix divided by the masked
  area times the channels);
- ``L_content``: mean squared distance between ``x'`` and ``x`` at one deeper layer;
- ``L_tv``: total variation as the authors compute it (``total_variation_loss`` in their
  ``advcam_physical_attack.py``): half the sum, over pixels and channels, of the squared
  differences to the right and lower neighbours, in 0..255 pixel units, over the whole image
  (at the paper's weight 1e-3 it is of the style term's order: on shapes10 a clean 32x32 image
  has ``1e-3 L_tv`` about 1.5e3, the style term ``100 L_style`` 1.6e3 when AdvCam starts; the
  earlier mean squared difference in [0, 1] units gave ``1e-3 L_tv`` about 2e-5, no smoothing);
- ``L_adv``: ``-CE(f(x'), y)`` (untargeted) or ``CE(f(x'), t) - CE(f(x'), y)`` (targeted), capped
  at ``-adv_cap`` (default ``ln 100``): the push stops once the true class's probability is below
  1% (untargeted; for up to 100 classes that guarantees a misclassification), or once the target
  is ``e^cap`` times likelier than the true class (targeted). The paper's loss is uncapped; with
  features whose losses are far smaller than VGG-19's, an uncapped term at weight 5e3 grows
  without bound and overrides the style (measured: style loss 17x that of the clean image,
  10x that of PGD at 8/255).

Defaults are the paper's weights: style 100, content 5, TV 1e-3, adversarial 5e3, Adam with
learning rate 1.0 in 0..255 units (1/255 here, in [0, 1] units); pixels outside the mask never
change and every iterate is clamped to [0, 1]. The paper runs a few thousand iterations with VGG-19
features; no pretrained VGG is available offline, so the feature extractor is the victim's own
convolutional stages (default: the stages of trustlab's ResNets and VGGs; pass ``style_layers`` /
``content_layer`` for another network, or ``features=`` a separately trained CNN). Feature
magnitudes therefore differ from VGG-19's, and so does the balance the weights strike.

Physical adaptation (``eot=True``), as the authors' ``Physical_Adaptor.img_random_overlay``
(``physical_adaption_utils.py``): every step, the adversarial loss is taken on the image shrunk to
a random 0.4-0.6 of the side, rotated within +-25 degrees, placed anywhere the shrunk image stays
inside the frame, pasted on a random background photograph and brightened or darkened by a random
factor in [0.7, 1.3] (expectation over transformation, Athalye et al. 2018). The backgrounds
default to scikit-image's bundled photographs :data:`DEFAULT_BACKGROUNDS`, each resized to the
image (the authors resize a random background file to the content image's size).
:func:`random_transform` is the same family, used at test time. Two departures: the authors draw
the brightness factor once when they build their graph (a constant for the whole run, in their
code), trustlab draws it per step and per sample, as the transformation is meant to vary; and the
authors paste their region mask, which in their data is the object's silhouette (a stop sign),
while trustlab pastes the whole image (its region is a square on the object, not a silhouette;
pass ``paste=`` to :func:`random_transform` to paste a mask instead).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from trustlab.attacks.evasion.base import check_inputs
from trustlab.errors import InputError
from trustlab.models.wrappers import feature_taps, stage_layers, unwrap
from trustlab.registry import EVASION
from trustlab.utils.modules import frozen
from trustlab.utils.seed import generator


def style_image(name_or_path: str) -> torch.Tensor:
    """A style exemplar: one of scikit-image's bundled photographs by name (``"chelsea"``,
    ``"coffee"``, ...; :data:`trustlab.data.synthetic.BUNDLED_IMAGES`) or an image file."""
    from trustlab.data.files import read_image
    from trustlab.data.synthetic import BUNDLED_IMAGES, bundled_image

    if str(name_or_path).lower() in BUNDLED_IMAGES:
        return bundled_image(str(name_or_path))
    if not Path(name_or_path).is_file():
        raise InputError(
            f"style {name_or_path!r} is neither a bundled photograph ({', '.join(BUNDLED_IMAGES)}) "
            "nor an image file."
        )
    return read_image(name_or_path)


def default_layers(model: nn.Module) -> tuple[list[str], str]:
    """``(style layers, content layer)``: the stages of trustlab's ResNets (the last for content)
    and VGGs (the fourth stage's for content); :func:`trustlab.models.wrappers.stage_layers`."""
    try:
        stages = stage_layers(model)
    except InputError:
        raise InputError(
            f"no default AdvCam layers for {type(unwrap(model)).__name__}; pass "
            "style_layers=[...] and content_layer='...' (names from "
            "trustlab.models.layer_names(model))."
        ) from None
    content = stages[-1] if stages[0] == "stem" else stages[min(3, len(stages) - 1)]
    return stages, content


def gram(features: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """``(N, C, C)`` Gram matrices of ``(N, C, H, W)`` features, over the (masked) positions,
    normalised by ``C`` times the area."""
    n, c = features.shape[:2]
    if mask is not None:
        m = F.interpolate(mask, size=features.shape[-2:], mode="bilinear", align_corners=False)
        features = features * m
        area = m.flatten(1).sum(1).clamp_min(1e-6)
    else:
        area = torch.full((n,), float(features[0, 0].numel()), device=features.device)
    f = features.flatten(2)
    return (f @ f.transpose(1, 2)) / (c * area).view(n, 1, 1)


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """Per-sample total variation in the authors' form and units: for pixels ``i < H-1``,
    ``j < W-1`` and every channel, ``((x[i, j+1] - x[i, j])^2 + (x[i+1, j] - x[i, j])^2) / 2``
    summed, with ``x`` in 0..255 units (inputs in [0, 1] are scaled by 255)."""
    x = x * 255.0
    corner = x[..., :-1, :-1]
    dw = x[..., :-1, 1:] - corner
    dh = x[..., 1:, :-1] - corner
    return (dw.pow(2) + dh.pow(2)).flatten(1).sum(1) / 2


#: Bundled photographs AdvCam's EOT pastes its examples on by default (none is a style default).
DEFAULT_BACKGROUNDS = ("astronaut", "coffee", "rocket", "camera", "brick", "grass")


def photo_backgrounds(
    names: Sequence[str], size: tuple[int, int], channels: int = 3
) -> torch.Tensor:
    """``(len(names), channels, H, W)`` backgrounds: each bundled photograph (or image file, as
    :func:`style_image`) resized whole to ``size``, averaged to grey when ``channels`` is 1."""
    if channels not in (1, 3):
        raise InputError(f"backgrounds need 1 or 3 channels, got {channels}.")
    out = []
    for name in names:
        img = style_image(name)[None]
        img = F.interpolate(img, size=size, mode="bilinear", align_corners=False, antialias=True)
        out.append(img.mean(1, keepdim=True) if channels == 1 else img)
    if not out:
        raise InputError("give at least one background photograph.")
    return torch.cat(out).clamp(0, 1)


def random_transform(
    x: torch.Tensor,
    gen: torch.Generator | None,
    scale: tuple[float, float] = (0.4, 0.6),
    rotation: float = 25.0,
    translation: float = 1.0,
    brightness: float = 0.3,
    background: torch.Tensor | None = None,
    paste: torch.Tensor | None = None,
) -> torch.Tensor:
    """One random physical-world transformation per sample (the authors' family; see the
    module), differentiable in ``x``.

    Args:
        x: ``(N, C, H, W)`` images in [0, 1].
        gen: the random generator (``None``: torch's global one).
        scale: the range of the shrunk image's side, as a fraction of the frame (0.4-0.6).
        rotation: the largest rotation in degrees (25).
        translation: the largest shift of the centre as a fraction of the room the scaling
            leaves (1.0: anywhere the unrotated shrunk image stays inside the frame).
        brightness: the largest relative brightness change (0.3: a factor in [0.7, 1.3]).
        background: ``(B, C, H, W)`` scenes in [0, 1], one picked per sample (default: black,
            the fill of the authors' transform).
        paste: ``(H, W)``, ``(1, 1, H, W)`` or ``(N, 1, H, W)``: the pixels of ``x`` pasted on the
            background (default: the whole image).
    """
    n, _, h, w = x.shape

    def u(lo: float, hi: float) -> torch.Tensor:
        return (lo + (hi - lo) * torch.rand(n, generator=gen)).to(x.device, x.dtype)

    s, a = u(*scale), u(-rotation, rotation) * math.pi / 180
    # centre shift in grid_sample's [-1, 1] coordinates: the shrunk image keeps inside the frame
    cx, cy = u(-1, 1) * translation * (1 - s), u(-1, 1) * translation * (1 - s)
    cos, sin = torch.cos(a) / s, torch.sin(a) / s
    # output -> input: in = A (out - c), A = inverse rotation and scaling, in pixel-isotropic units
    a00, a01, a10, a11 = cos, sin * h / w, -sin * w / h, cos
    theta = torch.stack(
        [
            torch.stack([a00, a01, -(a00 * cx + a01 * cy)], 1),
            torch.stack([a10, a11, -(a10 * cx + a11 * cy)], 1),
        ],
        1,
    )  # (N, 2, 3)
    grid = F.affine_grid(theta, [n, 1, h, w], align_corners=False)
    if paste is None:
        m = torch.ones(n, 1, h, w, device=x.device, dtype=x.dtype)
    else:
        m = paste.to(x.device, x.dtype)
        m = m.view(1, 1, h, w) if m.dim() == 2 else m
        m = m.expand(n, 1, h, w)
    moved = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    m = F.grid_sample(m, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    out = m * moved
    if background is not None:
        if background.dim() != 4 or background.shape[1:] != x.shape[1:]:
            raise InputError(
                f"backgrounds {tuple(background.shape)} do not match images {tuple(x.shape)}: "
                "give (B, C, H, W) of the images' channels and size (photo_backgrounds)."
            )
        pick = torch.randint(0, background.shape[0], (n,), generator=gen).to(x.device)
        out = out + (1 - m) * background[pick].to(x.device, x.dtype)
    return (out * (1 + u(-brightness, brightness)).view(n, 1, 1, 1)).clamp(0, 1)


def central_mask(size: tuple[int, int], fraction: float) -> torch.Tensor:
    """``(H, W)`` mask of ones on the central square covering ``fraction`` of each side (the
    region AdvCam may change)."""
    if not 0 < fraction <= 1:
        raise InputError(f"--region must be in (0, 1] (a fraction of the side), got {fraction}.")
    h, w = size
    mh, mw = max(1, round(h * fraction)), max(1, round(w * fraction))
    m = torch.zeros(h, w)
    top, left = (h - mh) // 2, (w - mw) // 2
    m[top : top + mh, left : left + mw] = 1
    return m


@EVASION.register(
    "advcam",
    "AdvCam: adversarial examples camouflaged in a natural style inside a region",
    paper="Duan, Ma, Wang, Bailey, Qin, Yang. Adversarial Camouflage: Hiding Physical-World "
    "Attacks with Natural Styles. CVPR 2020.",
    threat="white-box, untargeted or targeted, unrestricted inside a region mask (no eps ball), "
    "optionally robust to physical transformations (EOT)",
    inputs=("model", "style"),
    eps_ball=False,
)
class AdvCam:
    """``AdvCam(model, style)(x, y)`` -> camouflaged examples; ``history_`` holds the losses.

    Duan, Ma, Wang, Bailey, Qin & Yang, "Adversarial Camouflage: Hiding Physical-World Attacks
    with Natural Styles", CVPR 2020. The loss weights and learning rate are the paper's; the
    feature extractor is the victim's own stages (no pretrained VGG-19 offline) and the
    adversarial term is capped (see the module). The TV term and the EOT transformations follow
    the authors' code (``advcam_physical_attack.py``, ``physical_adaption_utils.py``).

    Args:
        model: the victim (inputs in [0, 1]).
        style: the style exemplar ``(C, H, W)`` in [0, 1] (resized to the inputs), e.g.
            ``trustlab.data.synthetic.bundled_image("chelsea")``.
        mask: the region that may change: ``(H, W)``, ``(1, H, W)`` or ``(N, 1, H, W)`` in [0, 1]
            (default: the whole image).
        features: the feature extractor (default: the victim).
        style_layers, content_layer: layer names of ``features`` (default: :func:`default_layers`).
        steps, lr: Adam iterations and learning rate (1/255: the paper's 1.0 in 0..255 units).
        style_weight, content_weight, tv_weight, adv_weight: the paper's 100, 5, 1e-3, 5e3
            (the TV weight applies to the authors' TV in 0..255 units, :func:`total_variation`).
        adv_cap: where the adversarial term stops pushing (see the module).
        targeted: ``atk(x, y, target)`` pushes toward ``target``.
        eot: expectation over the authors' random physical transformations (see the module).
        backgrounds: ``(B, C, H, W)`` scenes the example is pasted on when ``eot`` (default:
            :data:`DEFAULT_BACKGROUNDS` via :func:`photo_backgrounds`).
        seed: seeds the transformations.

    Shape:
        ``x``: ``(N, C, H, W)`` in ``[0, 1]``; ``y``: ``(N,)`` int64; returns ``(N, C, H, W)`` in
        ``[0, 1]``, equal to ``x`` outside the mask. Not bounded by an ``eps`` ball.

    Example::

        atk = AdvCam(model, bundled_image("chelsea"), mask=central_mask((32, 32), 0.6))
        x_cam = atk(x, y)
    """

    def __init__(
        self,
        model: nn.Module,
        style: torch.Tensor,
        mask: torch.Tensor | None = None,
        features: nn.Module | None = None,
        style_layers: Sequence[str] | None = None,
        content_layer: str | None = None,
        steps: int = 300,
        lr: float = 1 / 255,
        style_weight: float = 100.0,
        content_weight: float = 5.0,
        tv_weight: float = 1e-3,
        adv_weight: float = 5e3,
        adv_cap: float = math.log(100),
        targeted: bool = False,
        eot: bool = False,
        backgrounds: torch.Tensor | None = None,
        seed: int = 0,
    ) -> None:
        if not isinstance(style, torch.Tensor) or style.dim() != 3:
            raise InputError("the style exemplar must be a (C, H, W) tensor in [0, 1].")
        if float(style.min()) < 0 or float(style.max()) > 1:
            raise InputError("the style exemplar must lie in [0, 1].")
        if steps < 1 or not lr > 0:
            raise InputError(f"steps must be >= 1 and lr > 0 (got {steps}, {lr}).")
        weights = (style_weight, content_weight, tv_weight, adv_weight)
        if min(weights) < 0:
            raise InputError(f"loss weights must be >= 0, got {weights}.")
        self.model = model
        self.features = features if features is not None else model
        if style_layers is None or content_layer is None:
            d_style, d_content = default_layers(self.features)
            style_layers = style_layers or d_style
            content_layer = content_layer or d_content
        self.style_layers = list(style_layers)
        self.content_layer = content_layer
        self.style = style
        self.mask = mask
        self.steps, self.lr = steps, lr
        self.weights = dict(zip(("style", "content", "tv", "adv"), weights, strict=True))
        if not adv_cap > 0:
            raise InputError(f"adv_cap must be > 0, got {adv_cap}.")
        self.adv_cap = adv_cap
        self.targeted, self.eot, self.backgrounds, self.seed = targeted, eot, backgrounds, seed
        self.history_: list[dict[str, float]] = []

    def _mask(self, x: torch.Tensor) -> torch.Tensor:
        if self.mask is None:
            return torch.ones_like(x[:, :1])
        m = self.mask.to(x.device, x.dtype)
        m = m.view(1, 1, *m.shape[-2:]) if m.dim() in (2, 3) else m
        if m.shape[-2:] != x.shape[-2:] or m.shape[0] not in (1, x.shape[0]):
            raise InputError(
                f"mask {tuple(self.mask.shape)} does not match inputs {tuple(x.shape)}: give "
                "(H, W), (1, H, W) or (N, 1, H, W)."
            )
        return m.expand(x.shape[0], 1, *x.shape[-2:])

    def _feats(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        names = [*self.style_layers, self.content_layer]
        with feature_taps(self.features, names) as out:
            self.features(x)
        return dict(out)

    def losses(
        self,
        adv: torch.Tensor,
        x: torch.Tensor,
        y: torch.Tensor,
        target: torch.Tensor | None,
        mask: torch.Tensor,
        style_grams: dict[str, torch.Tensor],
        content: torch.Tensor,
        logits_input: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Per-sample style, content, TV and adversarial losses of ``adv``."""
        feats = self._feats(adv)
        style = sum(
            (gram(feats[k], mask) - style_grams[k]).pow(2).flatten(1).sum(1)
            for k in self.style_layers
        )
        content_l = (feats[self.content_layer] - content).pow(2).flatten(1).mean(1)
        logits = self.model(adv if logits_input is None else logits_input)
        ce_y = F.cross_entropy(logits, y, reduction="none")
        if target is not None:
            adv_l = F.cross_entropy(logits, target, reduction="none") - ce_y
        else:
            adv_l = -ce_y
        adv_l = adv_l.clamp_min(-self.adv_cap)
        return {"style": style, "content": content_l, "tv": total_variation(adv), "adv": adv_l}

    def style_loss(self, adv: torch.Tensor) -> torch.Tensor:
        """Per-sample style loss of any images (e.g. PGD examples) to the exemplar, in the
        region, with the same layers."""
        with frozen(self.model), frozen(self.features), torch.no_grad():
            mask = self._mask(adv)
            grams = self._style_grams(adv)
            feats = self._feats(adv)
            return sum(
                (gram(feats[k], mask) - grams[k]).pow(2).flatten(1).sum(1)
                for k in self.style_layers
            )

    def _style_grams(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        s = F.interpolate(
            self.style[None].to(x.device, x.dtype), size=x.shape[-2:], mode="bilinear",
            align_corners=False,
        ).clamp(0, 1)  # fmt: skip
        if s.shape[1] != x.shape[1]:
            if s.shape[1] == 3 and x.shape[1] == 1:
                s = s.mean(1, keepdim=True)
            else:
                raise InputError(f"style has {s.shape[1]} channels, the inputs {x.shape[1]}.")
        feats = self._feats(s)
        return {k: gram(feats[k]).detach() for k in self.style_layers}

    def __call__(
        self, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None = None
    ) -> torch.Tensor:
        check_inputs(x, y)
        if x.dim() != 4:
            raise InputError("AdvCam works on image batches (N, C, H, W).")
        if self.targeted and target is None:
            raise InputError("a targeted AdvCam needs target classes: atk(x, y, target).")
        gen = generator(self.seed)
        x, y = x.detach(), y.to(x.device)
        target = None if target is None else target.to(x.device)
        self.history_ = []
        with frozen(self.model), frozen(self.features), torch.enable_grad():
            mask = self._mask(x)
            grams = self._style_grams(x)
            with torch.no_grad():
                content = self._feats(x)[self.content_layer].detach()
            scenes = None
            if self.eot:
                scenes = self.backgrounds
                if scenes is None:
                    scenes = photo_backgrounds(DEFAULT_BACKGROUNDS, x.shape[-2:], x.shape[1])
            adv = x.clone().requires_grad_(True)
            opt = torch.optim.Adam([adv], lr=self.lr)
            for _ in range(self.steps):
                seen = None
                if self.eot:
                    seen = random_transform(adv, gen, background=scenes)
                parts = self.losses(adv, x, y, target, mask, grams, content, seen)
                total = sum(self.weights[k] * v.sum() for k, v in parts.items())
                opt.zero_grad(set_to_none=True)
                total.backward()
                opt.step()
                with torch.no_grad():  # only the region changes; stay an image
                    adv.copy_((x + mask * (adv - x)).clamp(0, 1))
                self.history_.append(
                    {
                        "total": float(total.detach()),
                        **{k: float(v.detach().mean()) for k, v in parts.items()},
                    }
                )
        return adv.detach()
