"""GAN inpainting with submanifold alignment: the iLID and pLID regularisers.

Li, Qi, Zhang, Ma, Ramamohanarao, "Generative Image Inpainting with Submanifold Alignment",
IJCAI 2019 (arXiv:1908.00211). A GAN inpainting model (an encoder-decoder completion network and
global + local discriminators, :mod:`trustlab.models.inpainting`) is trained with

    L = L_rec + lambda_adv L_adv + lambda_i iLID + lambda_p pLID

- ``L_rec``: the mean absolute error between the generator's output and the original image over
  the whole image (Yu et al., CVPR 2018, use L1; Iizuka et al. 2017 a masked MSE).
- ``L_adv``: the non-saturating GAN loss of the discriminator's logit on the restored image
  (``-log D(x_hat)``); the discriminator is trained with binary cross-entropy on original
  (real) and restored (fake) images, one step per generator step (Iizuka et al. 2017).
- ``iLID`` (image level, structure): each restored image's deep feature vector is a query, and
  its LID is estimated against the feature vectors of the *original* images of the batch
  (its own original included); the mean over the batch is minimised. A restored image close to
  the originals' local submanifold has a small cross-LID.
- ``pLID`` (patch level, texture): every spatial feature vector of the restored image's
  feature map is a query, measured against all the spatial feature vectors of *its own* original
  image (:func:`~trustlab.metrics.lid.lid_per_set`); the mean over the positions covered by the
  hole (weighted by how much of each position's cell is hole) and then over the images.

Both use the differentiable method-of-moments estimate of :mod:`trustlab.metrics.lid` (the
project's only LID estimator) with ``k`` neighbours (at most the number of references), on a
**fixed feature extractor** (:class:`FeatureExtractor`: eval mode, no parameter gradients;
gradients flow through it to the generator only).

The paper's method section (its exact loss weights, feature layers, ``k`` and base network) was
not available offline and no public code by the authors exists; trustlab follows the design's
specification above and states every choice in ``docs/inpainting.md``. Which network the
paper's features come from could not be read either; trustlab has no downloaded weights, so the
extractor is a registered classifier with fixed random weights (``extractor_epochs=0``, the
default), one trained here on the inpainting data's own labels (``extractor_epochs``), or a
trustlab checkpoint (``extractor_checkpoint``).

Everything is seeded: batch order from ``(seed, "order", epoch)``, the training masks of step
``i`` from ``(seed, "mask", epoch, i)``, initial weights from ``(seed, "init")``. A checkpoint
written after every epoch holds both networks, both Adam states, the extractor and the history,
so a resumed run equals an uninterrupted one (tested).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from torch import nn

from trustlab.data.datasets import ArrayDataset
from trustlab.errors import InputError
from trustlab.generative.masks import KINDS as MASK_KINDS
from trustlab.generative.masks import make_masks
from trustlab.metrics.image import l1_in_hole, psnr, ssim
from trustlab.metrics.lid import lid, lid_in_batches, lid_per_set
from trustlab.models.inpainting import InpaintDiscriminator, InpaintGenerator, check_image_size
from trustlab.models.spec import ModelSpec
from trustlab.models.wrappers import feature_taps
from trustlab.train.checkpoint import load_checkpoint, load_state, save_checkpoint
from trustlab.train.trainer import optimizer_state, optimizer_tensors
from trustlab.utils.device import resolve_device
from trustlab.utils.modules import eval_mode
from trustlab.utils.progress import progress_bar
from trustlab.utils.seed import derive_seed, generator

__all__ = [
    "FILE",
    "MASK_KINDS",
    "FeatureExtractor",
    "InpaintSettings",
    "Inpainter",
    "composite",
    "corrupt",
    "check_batch",
    "check_setup",
    "ilid",
    "lid_gap",
    "parse_settings",
    "plid",
    "train_inpainter",
]

#: the file an :class:`Inpainter` is saved to (in a run's folder)
FILE = "inpainter.safetensors"


class InpaintSettings(BaseModel):
    """Settings of a LID-regularised GAN inpainting model (validated; unknown keys are errors).

    Li et al., IJCAI 2019 (arXiv:1908.00211); networks after Iizuka et al., SIGGRAPH 2017. The
    paper's own values for the weights, ``k`` and the feature layers could not be read offline;
    the defaults are trustlab's (``docs/inpainting.md`` says why each).

    Args:
        epochs: passes over the training images; default 20.
        batch_size: images per step (the iLID reference set); default 64.
        lr: Adam learning rate of both networks, betas (0.5, 0.999); default 2e-4.
        mask: the training holes, ``"rectangles"`` (default), ``"centre"`` or ``"free-form"``
            (:mod:`trustlab.generative.masks`).
        eval_mask: the holes of the evaluation; default ``"centre"`` (a centred square of a
            quarter of the image, as the papers of the time report).
        width: the networks' base width; default 32.
        dilations: the generator's dilated convolutions; default (2, 4).
        lambda_adv: weight of the adversarial loss; default 0.001.
        lambda_ilid: weight of iLID; default 0.001 (0 turns it off).
        lambda_plid: weight of pLID; default 0.001 (0 turns it off).
        k: LID neighbours (capped at the references available); default 20.
        estimator: ``"mom"`` (default, method of moments) or ``"mle"``.
        extractor: the registered classifier whose features the regularisers and the LID gap
            use; default ``"cnn-small"``.
        extractor_options: the extractor model's options (e.g. ``{"width": 0.25}`` for a VGG);
            default ``{}``.
        extractor_epochs: epochs of training the extractor on the data's labels before it is
            fixed; default 0: its seeded random weights (on ``photo-patches`` an extractor
            trained to tell the photographs apart made both regularisers cost 4.4 dB of PSNR,
            random features did not; ``docs/inpainting.md``).
        extractor_checkpoint: a trustlab model file to use as the extractor instead; default
            None.

    Example:
        >>> s = InpaintSettings(epochs=2, lambda_ilid=0.0, lambda_plid=0.0)
        >>> s.regularised
        False
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    epochs: int = Field(20, ge=1, le=100_000, description="passes over the training images")
    batch_size: int = Field(64, ge=4, le=100_000, description="images per step")
    lr: float = Field(2e-4, gt=0, le=1, description="Adam learning rate of both networks")
    mask: Literal["centre", "rectangles", "free-form"] = Field(
        "rectangles", description="the training holes"
    )
    eval_mask: Literal["centre", "rectangles", "free-form"] = Field(
        "centre", description="the holes of the evaluation"
    )
    width: int = Field(32, ge=2, le=1024, description="the networks' base width")
    dilations: tuple[int, ...] = Field((2, 4), description="the generator's dilations")
    lambda_adv: float = Field(1e-3, ge=0, description="weight of the adversarial loss")
    lambda_ilid: float = Field(0.001, ge=0, description="weight of iLID")
    lambda_plid: float = Field(0.001, ge=0, description="weight of pLID")
    k: int = Field(20, ge=2, le=10_000, description="LID neighbours")
    estimator: Literal["mom", "mle"] = Field("mom", description="LID estimator")
    extractor: str = Field("cnn-small", description="registered classifier for the features")
    extractor_options: dict[str, Any] = Field(
        default_factory=dict, description="the extractor model's options (e.g. width)"
    )
    extractor_epochs: int = Field(0, ge=0, le=10_000, description="extractor training epochs")
    extractor_checkpoint: str | None = Field(None, description="a trustlab model file instead")

    @property
    def regularised(self) -> bool:
        """Whether iLID or pLID is on."""
        return self.lambda_ilid > 0 or self.lambda_plid > 0


def parse_settings(data: InpaintSettings | dict[str, Any]) -> InpaintSettings:
    """:class:`InpaintSettings` from a dict (or itself); bad values are one
    :class:`~trustlab.errors.InputError` naming the field."""
    if isinstance(data, InpaintSettings):
        return data
    try:
        return InpaintSettings(**data)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "settings"
        raise InputError(f"inpainting setting {where}: {err['msg']}.") from None
    except TypeError as exc:
        raise InputError(f"inpainting settings: {exc}.") from None


def corrupt(images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """The generator's input: the image with its hole zeroed, and the mask as a last channel."""
    return torch.cat([images * (1 - masks), masks], 1)


def composite(images: torch.Tensor, output: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """The restored image: the generator's ``output`` in the hole, the known pixels elsewhere."""
    return masks * output + (1 - masks) * images


# -- the fixed feature extractor -------------------------------------------------------------
class FeatureExtractor(nn.Module):
    """A classifier used as a fixed feature map: ``x -> (image features (N, D), patch features
    (N, C, h, w))``.

    The image-level features are the classifier's ``features(x)`` (its penultimate layer); the
    patch-level ones are the output of ``patch_layer``, by default the deepest layer whose
    feature map is still at least a quarter of the image's side (for a 32x32 image and
    ``cnn-small``, the 64 channels after its max-pool: 14x14; for ``vgg19``, the fourth
    convolution of the third stage: 8x8). Its parameters never
    receive gradients (``requires_grad`` False, eval mode, also while the inpainter trains);
    inputs do.

    Args:
        model: a trustlab classifier (``features`` method) taking the inpainting images.
        image_shape: ``(C, H, W)`` of the images.
        patch_layer: a layer name (:func:`~trustlab.models.layer_names`); default None (the rule
            above).

    Example:
        >>> from trustlab.models import create_model
        >>> fe = FeatureExtractor(create_model("cnn-small", 6, 3, 32), (3, 32, 32))
        >>> img, patches = fe(torch.rand(2, 3, 32, 32))
        >>> tuple(img.shape), tuple(patches.shape)
        ((2, 128), (2, 64, 14, 14))
    """

    def __init__(
        self, model: nn.Module, image_shape: Sequence[int], patch_layer: str | None = None
    ) -> None:
        super().__init__()
        if not callable(getattr(model, "features", None)):
            raise InputError(
                "the feature extractor must be a trustlab classifier (a `features` method)."
            )
        self.model = model
        self.image_shape = tuple(int(s) for s in image_shape)
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.model.eval()
        self.patch_layer = patch_layer or self._pick_layer()

    def _pick_layer(self) -> str:
        c, h, w = self.image_shape
        leaves = [n for n, m in self.model.named_modules() if n and not list(m.children())]
        probe = torch.zeros(1, c, h, w, device=next(self.model.parameters()).device)
        try:
            with torch.no_grad(), feature_taps(self.model, leaves, detach=True) as taps:
                self.model.features(probe)
        except RuntimeError as exc:
            raise InputError(
                f"the feature extractor cannot take {c}x{h}x{w} images ({exc}); pick an "
                "extractor built for them (e.g. cnn-small works from 6x6, VGGs need 32x32)."
            ) from None
        side = max(4, min(h, w) // 4)
        maps = [n for n, t in taps.items() if t.dim() == 4 and min(t.shape[2:]) >= side]
        if not maps:
            raise InputError(
                "the feature extractor has no convolutional feature map of at least "
                f"{side}x{side} for the patch-level LID; pick a convolutional network."
            )
        return maps[-1]  # insertion order of the taps is execution order

    def train(self, mode: bool = True) -> FeatureExtractor:
        super().train(mode)
        self.model.eval()  # always fixed: BatchNorm keeps its running statistics
        return self

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with feature_taps(self.model, self.patch_layer) as taps:
            img = self.model.features(x)
        return img.flatten(1), taps[self.patch_layer]


# -- the regularisers ------------------------------------------------------------------------
def ilid(
    restored: torch.Tensor, original: torch.Tensor, k: int = 20, estimator: str = "mom"
) -> torch.Tensor:
    """iLID: the mean LID of each restored image's features ``(N, D)`` against the original
    images' features ``(N, D)`` of the batch (all of them, its own original included; ``k``
    capped at ``N``; each estimate capped at ``D``, see :func:`_capped`). Differentiable in
    both."""
    values = lid(restored, original, min(k, original.shape[0]), estimator, exclude_self=False)
    return _capped(values, restored[0].numel()).mean()


def _capped(values: torch.Tensor, dim: int) -> torch.Tensor:
    """LID estimates capped at the features' dimension ``dim``: points in ``R^dim`` have an LID
    of at most ``dim``; larger estimates come from ties among the neighbour distances (equal
    feature vectors, e.g. of flat image regions after a ReLU, where the estimators divide by
    zero) and would otherwise swamp the loss. A capped estimate passes no gradient."""
    return values.clamp_max(float(dim))


def plid(
    restored: torch.Tensor,
    original: torch.Tensor,
    masks: torch.Tensor,
    k: int = 20,
    estimator: str = "mom",
) -> torch.Tensor:
    """pLID: restored feature maps ``(N, C, h, w)``; each spatial vector's LID against all the
    spatial vectors of its own original's map; averaged over the hole (masks ``(N, 1, H, W)``
    pooled to ``h x w`` weight each position by its share of hole) and then over the images
    that have a hole. ``k`` capped at ``h * w``."""
    n, c, h, w = restored.shape
    q = restored.flatten(2).transpose(1, 2)  # (N, hw, C)
    r = original.flatten(2).transpose(1, 2)
    values = _capped(lid_per_set(q, r, min(k, h * w), estimator), c)  # (N, hw)
    weight = F.adaptive_avg_pool2d(masks, (h, w)).flatten(1)
    total = weight.sum(1)
    has_hole = total > 0
    if not bool(has_hole.any()):
        return values.sum() * 0.0
    per_image = (values * weight).sum(1)[has_hole] / total[has_hole]
    return per_image.mean()


def lid_gap(
    restored: torch.Tensor, original: torch.Tensor, k: int = 20, estimator: str = "mom"
) -> dict[str, float]:
    """The LID gap between restored and original feature vectors ``(N, D)`` (aligned):
    ``|mean LID(restored vs originals) - mean LID(originals vs originals)|`` in minibatches of
    64 (:func:`~trustlab.metrics.lid.lid_in_batches`: each point's own original is left out of
    its neighbours, so a perfect restoration has a gap of 0); estimates capped at the features'
    dimension as in :func:`ilid`."""
    b = min(64, restored.shape[0])
    dim = restored[0].numel()
    lr = _capped(lid_in_batches(restored, original, b, k, estimator), dim)
    lo = _capped(lid_in_batches(original, original, b, k, estimator), dim)
    mr, mo = float(lr.mean()), float(lo.mean())
    return {"lid_restored": mr, "lid_original": mo, "lid_gap": abs(mr - mo)}


# -- the model -------------------------------------------------------------------------------
class Inpainter:
    """A trained inpainting model: generator, discriminator, fixed feature extractor.

    Made by :func:`train_inpainter` or :meth:`load`. :meth:`restore` fills holes,
    :meth:`evaluate` measures PSNR, SSIM (scikit-image's definitions), L1 in the hole and the
    LID gap; :meth:`save_grid` draws masked / restored / original rows.

    Example:
        >>> inp = train_inpainter(images, InpaintSettings(epochs=1))  # doctest: +SKIP
        >>> inp.evaluate(test_images)["psnr"]  # doctest: +SKIP
        21.3
    """

    def __init__(
        self,
        generator: InpaintGenerator,
        discriminator: InpaintDiscriminator,
        extractor: FeatureExtractor,
        settings: InpaintSettings,
        extractor_spec: dict[str, Any],
        history: list[dict[str, float]] | None = None,
    ) -> None:
        self.generator = generator
        self.discriminator = discriminator
        self.extractor = extractor
        self.settings = settings
        self.extractor_spec = extractor_spec
        self.history = list(history or [])

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.extractor.image_shape  # type: ignore[return-value]

    @property
    def device(self) -> torch.device:
        return next(self.generator.parameters()).device

    def masks(self, n: int, seed: int = 0, kind: str | None = None) -> torch.Tensor:
        """``n`` evaluation masks (``kind`` default: the settings' ``eval_mask``), seeded."""
        return make_masks(kind or self.settings.eval_mask, n, self.shape[1:], seed)

    @torch.no_grad()
    def restore(
        self, images: torch.Tensor, masks: torch.Tensor, batch_size: int = 256
    ) -> torch.Tensor:
        """Restored images ``(N, C, H, W)`` (on the CPU) for ``images`` with holes ``masks``."""
        check_batch(images, self.shape)
        out = []
        dev = self.device
        with eval_mode(self.generator):
            for i in range(0, len(images), batch_size):
                x = images[i : i + batch_size].to(dev)
                m = masks[i : i + batch_size].to(dev)
                out.append(composite(x, self.generator(corrupt(x, m)), m).cpu())
        return torch.cat(out)

    @torch.no_grad()
    def features(self, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """The extractor's image-level features ``(N, D)`` (on the CPU)."""
        dev = self.device
        return torch.cat(
            [
                self.extractor(images[i : i + batch_size].to(dev))[0].cpu()
                for i in range(0, len(images), batch_size)
            ]
        )

    def evaluate(
        self, images: torch.Tensor, masks: torch.Tensor | None = None, seed: int = 0
    ) -> dict[str, float]:
        """Mean PSNR (dB), SSIM and L1 in the hole of the restored ``images`` (composites) and
        the LID gap of their features; ``masks`` default: :meth:`masks` with ``seed``."""
        images = images.cpu()
        masks = self.masks(len(images), seed) if masks is None else masks.cpu()
        restored = self.restore(images, masks)
        out = {
            "psnr": float(psnr(restored, images).mean()),
            "ssim": float(ssim(restored, images).mean()),
            "l1_hole": float(l1_in_hole(restored, images, masks).mean()),
            "hole_fraction": float(masks.mean()),
        }
        if len(images) >= 3:
            s = self.settings
            k = min(s.k, min(64, len(images)) - 1)
            out |= lid_gap(self.features(restored), self.features(images), k, s.estimator)
        return out

    def save_grid(
        self,
        path: str | Path,
        images: torch.Tensor,
        masks: torch.Tensor | None = None,
        seed: int = 0,
        title: str | None = None,
    ) -> Path:
        """A PNG of three rows (masked, restored, original) for ``images`` (up to 12 columns
        read well); the hole is drawn white in the masked row."""
        from trustlab.results.plots import image_rows_figure, save_figure

        images = images.cpu()
        masks = self.masks(len(images), seed) if masks is None else masks.cpu()
        restored = self.restore(images, masks)
        masked = images * (1 - masks) + masks
        p = psnr(restored, images)
        fig = image_rows_figure(
            [masked, restored, images],
            row_labels=["masked", "restored", "original"],
            captions=[None, [f"{v:.1f} dB" for v in p.tolist()], None],
            title=title,
        )
        return save_figure(fig, path)

    def state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """Tensors and metadata of the model (what :meth:`save` writes)."""
        tensors = {f"generator.{k}": v for k, v in self.generator.state_dict().items()}
        tensors |= {f"discriminator.{k}": v for k, v in self.discriminator.state_dict().items()}
        tensors |= {f"extractor.{k}": v for k, v in self.extractor.model.state_dict().items()}
        meta = {
            "kind": "inpainter",
            "shape": list(self.shape),
            "settings": self.settings.model_dump(mode="json"),
            "extractor_spec": self.extractor_spec,
            "patch_layer": self.extractor.patch_layer,
            "history": self.history,
        }
        return tensors, meta

    def save(self, folder: str | Path) -> Path:
        """Write the three networks, the settings and the history to ``folder/inpainter
        .safetensors`` (and its JSON sidecar), atomically; never a pickle."""
        tensors, meta = self.state()
        return save_checkpoint(Path(folder) / FILE, tensors, meta)

    @classmethod
    def load(cls, path: str | Path, device: str = "cpu") -> Inpainter:
        """An inpainter written by :meth:`save` (its folder or file) or a training checkpoint."""
        path = Path(path)
        if path.is_dir():
            path = path / FILE
        dev = resolve_device(device)
        tensors, meta = load_checkpoint(path, device=dev)
        if meta.get("kind") not in ("inpainter", "inpainter-state"):
            raise InputError(
                f"{path} is not an inpainting checkpoint (kind {meta.get('kind')!r}); give the "
                "inpainter.safetensors of an inpaint run (or its folder)."
            )
        return _from_state(tensors, meta, dev, path)


def check_batch(images: torch.Tensor, shape: Sequence[int] | None = None) -> torch.Tensor:
    """``images`` as float ``(N, C, H, W)`` in ``[0, 1]`` with sides the networks take (and of
    ``shape`` when given), else one :class:`InputError`."""
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or len(images) == 0:
        got = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise InputError(f"inpainting takes a batch of images (N, C, H, W); got {got}.")
    if not images.is_floating_point():
        raise InputError(
            "inpainting takes float images in [0, 1]; convert integer pixels with x.float() / 255."
        )
    check_image_size(images.shape[2:])
    if shape is not None and tuple(images.shape[1:]) != tuple(shape):
        raise InputError(
            f"this inpainter was trained on {tuple(shape)} images; got {tuple(images.shape[1:])}."
        )
    lo, hi = float(images.min()), float(images.max())
    if lo < -1e-6 or hi > 1 + 1e-6 or math.isnan(lo + hi):
        raise InputError(f"inpainting takes images in [0, 1]; got values in [{lo}, {hi}].")
    return images


def _networks(
    s: InpaintSettings, shape: Sequence[int]
) -> tuple[InpaintGenerator, InpaintDiscriminator]:
    c, h, w = shape
    return (
        InpaintGenerator(c, s.width, s.dilations),
        InpaintDiscriminator(c, (h, w), s.width),
    )


def _from_state(
    tensors: dict[str, torch.Tensor], meta: dict[str, Any], dev: torch.device, path: Any
) -> Inpainter:
    s = parse_settings(meta["settings"])
    shape = tuple(int(v) for v in meta["shape"])
    gen, disc = _networks(s, shape)
    ext_model = ModelSpec(**meta["extractor_spec"]).build()
    for prefix, net in (("generator.", gen), ("discriminator.", disc), ("extractor.", ext_model)):
        part = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
        load_state(net, part, path)
        net.to(dev)
    extractor = FeatureExtractor(ext_model, shape, meta.get("patch_layer"))
    inp = Inpainter(gen, disc, extractor, s, meta["extractor_spec"], meta.get("history", []))
    gen.eval()
    disc.eval()
    return inp


# -- training --------------------------------------------------------------------------------
def check_setup(settings: InpaintSettings | dict[str, Any], train: ArrayDataset) -> None:
    """Everything :func:`train_inpainter` would refuse about ``settings`` and ``train``, checked
    without training (workflows call it before they create a run)."""
    s = parse_settings(settings)
    images = check_batch(train.x)
    if len(images) < 3:
        raise InputError(f"inpainting needs at least 3 training images; got {len(images)}.")
    present = int(train.y.unique().numel()) if train.y.numel() else 0
    if s.extractor_checkpoint is None and s.extractor_epochs > 0 and present < 2:
        raise InputError(
            f"training the feature extractor needs labels of at least 2 classes; the images of "
            f"{train.name or 'this dataset'} have {present}. Set extractor_epochs to 0 (fixed "
            "random features) or give extractor_checkpoint (a trained model)."
        )
    with torch.random.fork_rng(devices=[]):  # building a model draws from the global RNG
        model = _spec(s, train).build() if s.extractor_checkpoint is None else _load_extractor(s)
        FeatureExtractor(model, images.shape[1:])


def _load_extractor(s: InpaintSettings, dev: torch.device | str = "cpu") -> nn.Module:
    from trustlab.train.checkpoint import load_model

    path = Path(str(s.extractor_checkpoint)).expanduser()
    if not path.is_file():
        raise InputError(
            f"extractor checkpoint {path} does not exist; give a trustlab model .safetensors "
            "(e.g. a training run's model.safetensors)."
        )
    return load_model(path, device=dev)


def _spec(s: InpaintSettings, train: ArrayDataset) -> ModelSpec:
    """The extractor's spec sized for ``train`` (two outputs at least: a one-class dataset gets
    an untrained extractor, whose classifier head is never used)."""
    spec = ModelSpec.for_data(s.extractor, train, **s.extractor_options)
    return replace(spec, num_classes=max(2, spec.num_classes))


def _extractor(
    s: InpaintSettings, train: ArrayDataset, seed: int, dev: torch.device
) -> tuple[nn.Module, dict[str, Any]]:
    """The extractor's model (trained or seeded random) and its spec."""
    if s.extractor_checkpoint is not None:
        model = _load_extractor(s, dev)
        spec = ModelSpec.from_model(model)
        if spec is None:
            raise InputError(
                f"{s.extractor_checkpoint} records no trustlab model spec to rebuild the "
                "extractor from; save it with trustlab.train.checkpoint.save_model."
            )
        return model, spec.to_dict()
    spec = _spec(s, train)
    torch.manual_seed(derive_seed(seed, "extractor", "init"))
    model = spec.build().to(dev)
    if s.extractor_epochs > 0:
        from trustlab.train import Trainer, TrainSettings

        ts = TrainSettings(
            epochs=s.extractor_epochs, lr=0.05, seed=derive_seed(seed, "extractor", "train")
        )
        Trainer(model, ts, device=dev, progress=False).fit(train)
    return model, spec.to_dict()


def _fingerprint(images: torch.Tensor) -> str:
    """A cheap digest of the training images: their shape and a few of them."""
    import hashlib

    picks = images[:: max(1, len(images) // 16)][:16].detach().cpu().contiguous()
    head = f"{tuple(images.shape)}".encode()
    return hashlib.sha256(head + picks.numpy().tobytes()).hexdigest()[:16]


def _check_resumable(
    path: Path, meta: dict[str, Any], s: InpaintSettings, seed: int, images: torch.Tensor
) -> None:
    """Refuse to continue a checkpoint written by another training (a resumed run must end
    where an uninterrupted one would)."""
    if meta.get("kind") != "inpainter-state":
        raise InputError(
            f"{path} is not an inpainting training checkpoint (kind {meta.get('kind')!r}); "
            "give a new checkpoint path to start afresh."
        )
    old = parse_settings(meta["settings"])
    changed = [k for k in InpaintSettings.model_fields if getattr(old, k) != getattr(s, k)]
    if meta.get("seed") != seed:
        changed.append(f"seed ({meta.get('seed')} there, {seed} here)")
    if meta.get("data") != _fingerprint(images):
        changed.append("training images")
    if changed:
        raise InputError(
            f"{path} was written by another training (different {', '.join(changed)}); "
            "resume with the same settings, seed and data, or give a new checkpoint path."
        )


def _state_meta(
    inp: Inpainter,
    opt_g: torch.optim.Optimizer,
    opt_d: torch.optim.Optimizer,
    epoch: int,
    seed: int,
    data: str,
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors, meta = inp.state()
    tg, mg = optimizer_tensors(opt_g, "optim_g")
    td, md = optimizer_tensors(opt_d, "optim_d")
    meta = {**meta, "kind": "inpainter-state", "epoch": epoch, "optim_g": mg, "optim_d": md,
            "seed": seed, "data": data}  # fmt: skip
    return {**tensors, **tg, **td}, meta


def _adam(params: Any, lr: float) -> torch.optim.Adam:
    return torch.optim.Adam(params, lr=lr, betas=(0.5, 0.999))


def train_inpainter(
    train: ArrayDataset,
    settings: InpaintSettings | dict[str, Any] | None = None,
    *,
    seed: int = 0,
    device: str | torch.device = "cpu",
    test: torch.Tensor | None = None,
    checkpoint: str | Path | None = None,
    progress: bool = True,
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
) -> Inpainter:
    """Train a LID-regularised GAN inpainting model on ``train``'s images (module docstring).

    Args:
        train: the training images (an :class:`~trustlab.data.datasets.ArrayDataset`; its labels
            only train the feature extractor).
        settings: :class:`InpaintSettings` or a dict of its fields (default: its defaults).
        seed: seeds everything; default 0.
        device: ``"cpu"``, ``"cuda"``, ...
        test: images ``(N, C, H, W)`` evaluated after every epoch (``test_psnr``,
            ``test_ssim`` in the history; the settings' ``eval_mask``, seed 0); default None.
        checkpoint: a ``.safetensors`` path written after every epoch; when it exists at the
            start, training continues from it (its settings must match).
        progress: a progress bar (on a terminal only).
        on_epoch: called with ``(epoch, metrics)`` after every epoch.

    The global torch RNG is left as it was (everything inside is seeded from ``seed``).

    Returns:
        The trained :class:`Inpainter`; its ``history`` has one row per epoch: ``rec``,
        ``adv``, ``d_loss``, ``ilid``, ``plid``, ``seconds`` (and the test metrics).
    """
    dev = resolve_device(device)
    with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
        return _train_inpainter(train, settings, seed, dev, test, checkpoint, progress, on_epoch)


def _train_inpainter(
    train: ArrayDataset,
    settings: InpaintSettings | dict[str, Any] | None,
    seed: int,
    dev: torch.device,
    test: torch.Tensor | None,
    checkpoint: str | Path | None,
    progress: bool,
    on_epoch: Callable[[int, dict[str, float]], None] | None,
) -> Inpainter:
    s = parse_settings({} if settings is None else settings)
    images = check_batch(train.x)
    shape = tuple(images.shape[1:])
    if test is not None:
        check_batch(test, shape)
    check_setup(s, train)
    n = len(images)
    bs = min(s.batch_size, n)
    ckpt = None if checkpoint is None else Path(checkpoint)
    fingerprint = _fingerprint(images)
    start = 0
    if ckpt is not None and ckpt.exists():
        tensors, meta = load_checkpoint(ckpt, device=dev)
        _check_resumable(ckpt, meta, s, seed, images)
        inp = _from_state(tensors, meta, dev, ckpt)
        start = int(meta["epoch"])
    else:
        ext_model, spec = _extractor(s, train, seed, dev)
        torch.manual_seed(derive_seed(seed, "init"))
        gen, disc = _networks(s, shape)
        extractor = FeatureExtractor(ext_model.to(dev), shape)
        inp = Inpainter(gen.to(dev), disc.to(dev), extractor, s, spec)
    gen, disc, ext = inp.generator, inp.discriminator, inp.extractor
    opt_g, opt_d = _adam(gen.parameters(), s.lr), _adam(disc.parameters(), s.lr)
    if start:
        opt_g.load_state_dict(optimizer_state(tensors, meta["optim_g"], "optim_g"))
        opt_d.load_state_dict(optimizer_state(tensors, meta["optim_d"], "optim_d"))
    steps = max(1, n // bs)
    bce = F.binary_cross_entropy_with_logits
    gen.train()
    disc.train()
    with progress_bar("inpainting", (s.epochs - start) * steps, progress, eta=True) as bar:
        for epoch in range(start + 1, s.epochs + 1):
            t0 = time.perf_counter()
            order = torch.randperm(n, generator=generator(derive_seed(seed, "order", epoch)))
            sums = torch.zeros(5, device=dev)  # rec, adv, d_loss, ilid, plid: one sync an epoch
            for i in range(steps):
                idx = order[i * bs : (i + 1) * bs]
                x = images[idx].to(dev)
                m = make_masks(s.mask, len(x), shape[1:], derive_seed(seed, "mask", epoch, i))
                m = m.to(dev)
                out = gen(corrupt(x, m))
                fake = composite(x, out, m)
                # discriminator: originals are real, restored images fake
                ones, zeros = torch.ones(len(x), device=dev), torch.zeros(len(x), device=dev)
                d_loss = bce(disc(x, m), ones) + bce(disc(fake.detach(), m), zeros)
                opt_d.zero_grad(set_to_none=True)
                d_loss.backward()
                opt_d.step()
                # generator: reconstruction + adversarial + the LID regularisers
                rec = (out - x).abs().mean()
                disc.requires_grad_(False)  # the generator's step writes no discriminator grads
                adv = bce(disc(fake, m), ones)
                disc.requires_grad_(True)
                loss = rec + s.lambda_adv * adv
                li = lp = torch.zeros((), device=dev)
                if s.regularised:
                    f_img, f_map = ext(fake)
                    with torch.no_grad():
                        o_img, o_map = ext(x)
                    if s.lambda_ilid > 0:
                        li = ilid(f_img, o_img, s.k, s.estimator)
                        loss = loss + s.lambda_ilid * li
                    if s.lambda_plid > 0:
                        lp = plid(f_map, o_map, m, s.k, s.estimator)
                        loss = loss + s.lambda_plid * lp
                opt_g.zero_grad(set_to_none=True)
                loss.backward()
                opt_g.step()
                sums += torch.stack([rec, adv, d_loss, li, lp]).detach()
                bar()
            row: dict[str, float] = {"epoch": float(epoch)}
            means = (sums / steps).tolist()
            row |= dict(zip(("rec", "adv", "d_loss", "ilid", "plid"), means, strict=True))
            row["seconds"] = time.perf_counter() - t0
            if test is not None:
                ev = inp.evaluate(test)
                row |= {"test_psnr": ev["psnr"], "test_ssim": ev["ssim"]}
                gen.train()
            inp.history.append(row)
            bar.info(f"epoch {epoch}: rec {row['rec']:.4f}")
            if ckpt is not None:
                tensors_, meta_ = _state_meta(inp, opt_g, opt_d, epoch, seed, fingerprint)
                save_checkpoint(ckpt, tensors_, meta_)
            if on_epoch is not None:
                on_epoch(epoch, row)
    gen.eval()
    disc.eval()
    return inp
