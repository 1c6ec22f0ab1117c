"""Wrappers and introspection: normalisation inside the model, feature taps, residual branches.

Architecture section 3: inputs stay in ``[0, 1]`` outside the model; mean/std normalisation is the
model's first operation (:class:`Normalized`), so attacks, triggers and detectors never see or
repeat it. Intermediate activations are read with forward hooks in a scoped context manager
(:func:`feature_taps`) that always removes its handles.
"""

from __future__ import annotations

import contextlib
import difflib
from collections.abc import Callable, Iterator, Sequence

import torch
from torch import nn

from trustlab.errors import InputError

__all__ = [
    "Normalized",
    "feature_taps",
    "group_norm",
    "layer_names",
    "residual_branches",
    "resolve_layer",
    "stage_layers",
    "unwrap",
]


def _stats(name: str, values: Sequence[float] | torch.Tensor | float) -> torch.Tensor:
    try:
        t = torch.as_tensor(values, dtype=torch.float32).detach().cpu().reshape(-1).clone()
    except (TypeError, ValueError, RuntimeError) as exc:
        raise InputError(
            f"Normalized: {name}={values!r} is not a list of numbers; pass one value per channel, "
            "e.g. (0.4914, 0.4822, 0.4465)."
        ) from exc
    if t.numel() == 0 or not bool(torch.isfinite(t).all()):
        raise InputError(
            f"Normalized: {name}={values!r} must be one finite number per channel (or a single "
            "number for all channels)."
        )
    return t


class Normalized(nn.Module):
    """``model((x - mean) / std)`` with per-channel ``mean`` and ``std`` held as buffers.

    The statistics broadcast over channel dimension 1 of any input of rank >= 2: images
    ``(N, C, H, W)``, video ``(N, C, T, H, W)``, or flat ``(N, C)``. A single value applies to all
    channels. The buffers are saved in the state dict (``mean``, ``std``) and follow
    ``.to(device)``; the computation runs in the input's dtype.

    Exposes the wrapped model as ``.inner``, ``features(x)`` (normalising first) and the inner
    model's ``.classifier``.

    Args:
        model: the classifier that expects normalised inputs.
        mean: per-channel means (e.g. ``ArrayDataset.mean``), or one value for all channels.
        std: per-channel standard deviations (e.g. ``ArrayDataset.std``); ``std > 0``.

    Shapes: input ``(N, C, ...)`` in ``[0, 1]``; output whatever ``model`` returns (``(N, K)``
    logits for a classifier).

    Example:
        >>> model = Normalized(nn.Linear(3, 2), mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
        >>> model(torch.rand(4, 3)).shape
        torch.Size([4, 2])
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(
        self,
        model: nn.Module,
        mean: Sequence[float] | torch.Tensor | float,
        std: Sequence[float] | torch.Tensor | float,
    ) -> None:
        super().__init__()
        if not isinstance(model, nn.Module):
            raise InputError(
                f"Normalized wraps a torch.nn.Module, got {type(model).__name__}. "
                "Build the model first (trustlab.models.create_model)."
            )
        m, s = _stats("mean", mean), _stats("std", std)
        if m.numel() != s.numel() and 1 not in (m.numel(), s.numel()):
            raise InputError(
                f"Normalized: mean has {m.numel()} values and std {s.numel()}; give one value per "
                "channel for both."
            )
        if bool((s <= 0).any()):
            raise InputError(f"Normalized: std={s.tolist()} must be positive in every channel.")
        n = max(m.numel(), s.numel())
        self.inner = model
        self.register_buffer("mean", m.expand(n).clone())
        self.register_buffer("std", s.expand(n).clone())

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """``(x - mean) / std`` per channel (dimension 1), in ``x``'s dtype and on its device."""
        c = self.mean.numel()
        if x.dim() < 2 or (c != 1 and x.shape[1] != c):
            raise InputError(
                f"Normalized: input of shape {tuple(x.shape)} does not have {c} channels in "
                f"dimension 1, the number of mean/std values. Pass (N, {c}, ...) inputs or "
                "statistics for each channel of your data."
            )
        shape = (1, c) + (1,) * (x.dim() - 2)
        mean = self.mean.to(device=x.device, dtype=x.dtype).view(shape)
        std = self.std.to(device=x.device, dtype=x.dtype).view(shape)
        return (x - mean) / std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(self.normalize(x))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The inner model's penultimate representation of the normalised input."""
        feats = getattr(self.inner, "features", None)
        if not callable(feats):
            raise InputError(
                f"the wrapped {type(self.inner).__name__} has no features(x) method; trustlab "
                "models (create_model) have one, or tap a layer with feature_taps()."
            )
        return feats(self.normalize(x))

    @property
    def classifier(self) -> nn.Module:
        """The inner model's final layer."""
        head = getattr(self.inner, "classifier", None)
        if not isinstance(head, nn.Module):
            raise InputError(
                f"the wrapped {type(self.inner).__name__} has no .classifier layer; trustlab "
                "models (create_model) have one."
            )
        return head

    def extra_repr(self) -> str:
        fmt = ", ".join
        return (
            f"mean=({fmt(f'{v:.4g}' for v in self.mean.tolist())}), "
            f"std=({fmt(f'{v:.4g}' for v in self.std.tolist())})"
        )


def unwrap(model: nn.Module) -> nn.Module:
    """The innermost model under :class:`Normalized`, ``DataParallel`` /
    ``DistributedDataParallel`` (``.module``) and ``torch.compile`` (``._orig_mod``) wrappers."""
    seen: set[int] = set()
    while id(model) not in seen:
        seen.add(id(model))
        if isinstance(model, Normalized):
            model = model.inner
        elif isinstance(model, nn.DataParallel | nn.parallel.DistributedDataParallel):
            model = model.module
        elif isinstance(getattr(model, "_orig_mod", None), nn.Module):
            model = model._orig_mod
    return model


def layer_names(model: nn.Module) -> list[str]:
    """Names of every sub-module a forward hook can tap (``model.named_modules()`` minus the
    root), in registration order, e.g. ``["stem", "stem.conv", ..., "classifier"]``."""
    return [name for name, _ in model.named_modules() if name]


def stage_layers(model: nn.Module) -> list[str]:
    """The stage outputs of trustlab's networks, for feature-based methods (AdvCam's style
    layers, LID's layers): ``stem`` and ``layer1..K`` of the ResNets, the last ReLU of each stage
    of the VGGs (``body.reluS_I``). Names are valid for :func:`feature_taps` on ``model``."""
    names = set(layer_names(unwrap(model)))
    stages = sorted(n for n in names if n.startswith("layer") and n[5:].isdigit())
    if stages and "stem" in names:
        return ["stem", *stages]
    relus = [n for n in names if n.startswith("body.relu")]
    if relus:
        last: dict[str, str] = {}
        for n in sorted(relus, key=lambda s: tuple(int(p) for p in s[9:].split("_"))):
            last[n[9:].split("_")[0]] = n
        return list(last.values())
    raise InputError(
        f"no stage layers known for {type(unwrap(model)).__name__}; pass the layer names "
        "yourself (trustlab.models.layer_names(model) lists them)."
    )


def residual_branches(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(name, module)`` of every residual branch: sub-modules named ``residual`` (ResNet and WRN
    blocks, DenseNet layers). Empty for networks without skip connections. The Skip Gradient
    Method (Wu et al., ICLR 2020) registers full backward hooks on these to scale the gradient
    through the branches only."""
    return [
        (name, module)
        for name, module in model.named_modules()
        if name.rsplit(".", 1)[-1] == "residual"
    ]


def resolve_layer(model: nn.Module, name: str) -> nn.Module:
    """The sub-module called ``name`` (through wrappers too); a clear error with close matches."""
    modules = dict(model.named_modules())
    if name in modules and name:
        return modules[name]
    inner = unwrap(model)
    if inner is not model:
        inner_modules = dict(inner.named_modules())
        if name in inner_modules and name:
            return inner_modules[name]
    candidates = layer_names(model) + (layer_names(inner) if inner is not model else [])
    close = difflib.get_close_matches(name, candidates, n=5, cutoff=0.5)
    hint = f" Close matches: {', '.join(close)}." if close else ""
    raise InputError(
        f"{type(model).__name__} has no layer {name!r}.{hint} "
        "trustlab.models.layer_names(model) lists every tappable layer."
    )


@contextlib.contextmanager
def feature_taps(
    model: nn.Module, layers: Sequence[str] | str, *, detach: bool = False
) -> Iterator[dict[str, torch.Tensor]]:
    """Record the outputs of named layers during forward passes.

    ``with feature_taps(model, ["layer3", "pool"]) as feats: model(x)`` fills
    ``feats["layer3"]`` and ``feats["pool"]`` on every forward pass (the latest pass wins; a
    module called several times in one pass keeps its last output). The handles are removed on
    exit, also when the block raises; the dict keeps the last values. Names are
    ``model.named_modules()`` names; through a wrapper (:class:`Normalized`, DDP) the inner
    model's names work too (``"layer3"`` as well as ``"inner.layer3"``).

    Args:
        model: any ``nn.Module``.
        layers: layer names (one string is one name).
        detach: store detached outputs (default False: gradients can flow through the taps).

    Raises:
        InputError: an unknown layer name (the message lists close matches) or no names.
    """
    names = [layers] if isinstance(layers, str) else list(layers)
    if not names:
        raise InputError(
            "feature_taps needs at least one layer name; see trustlab.models.layer_names(model)."
        )
    names = list(dict.fromkeys(names))
    targets = [(name, resolve_layer(model, name)) for name in names]
    outputs: dict[str, torch.Tensor] = {}

    def make_hook(name: str) -> Callable[[nn.Module, object, torch.Tensor], None]:
        def hook(module: nn.Module, args: object, output: torch.Tensor) -> None:
            if detach and isinstance(output, torch.Tensor):
                output = output.detach()
            outputs[name] = output

        return hook

    handles = []
    try:
        for name, module in targets:
            handles.append(module.register_forward_hook(make_hook(name)))
        yield outputs
    finally:
        for handle in handles:
            handle.remove()


def group_norm(model: nn.Module) -> tuple[nn.Module, int]:
    """A copy of ``model`` with every BatchNorm layer replaced by GroupNorm, and how many were
    replaced (``model`` itself, unchanged, when it has none).

    DP-SGD needs per-sample gradients, which batch statistics do not have (each sample's output
    depends on the whole batch). The replacement is Opacus' own fixer
    (``opacus.validators.ModuleValidator.fix``: ``GroupNorm(gcd(32, C), C)``, affine as the
    BatchNorm), so that a model rebuilt from its :class:`~trustlab.models.spec.ModelSpec`
    (``group_norm=True``) has exactly the layers it was trained with. The copy's config records
    the change (``ModelSpec.from_model`` reads it back).
    """
    batchnorms = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)
    count = sum(isinstance(m, batchnorms) for m in model.modules())
    if count == 0:
        return model, 0
    from opacus.validators import ModuleValidator

    fixed = ModuleValidator.fix(model)
    inner = unwrap(fixed)
    config = getattr(inner, "config", None)
    if isinstance(config, dict):
        inner.config = {**config, "group_norm": True}
    return fixed, count
