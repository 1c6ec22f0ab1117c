"""The model zoo: hand-written CIFAR-style classifiers, one entry point :func:`create_model`.

Every model is registered in :data:`trustlab.registry.MODELS` with a one-line description and
``kind`` (``"image"`` or ``"video"``). All follow the conventions of :mod:`trustlab.models.cnn`:
``features(x) -> (N, D)``, ``classifier`` (the final Linear), ``forward == classifier(features)``;
residual networks expose ``residual`` / ``shortcut`` sub-modules (:func:`residual_branches`).
Normalisation lives in :class:`Normalized`; intermediate activations come from
:func:`feature_taps`.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from trustlab.errors import InputError
from trustlab.models import cnn, densenet, resnet, vgg, video  # noqa: F401  (registers models)
from trustlab.models.wrappers import (
    Normalized,
    feature_taps,
    layer_names,
    residual_branches,
    unwrap,
)
from trustlab.registry import MODELS
from trustlab.utils.validate import check_int

__all__ = [
    "Normalized",
    "create_model",
    "feature_taps",
    "layer_names",
    "list_models",
    "num_parameters",
    "residual_branches",
    "unwrap",
]

_COMMON = ("num_classes", "in_channels", "image_size")

#: sanity limits of :func:`create_model` (a model spec read from a file is checked against
#: them before anything is allocated): image side, channels, classes and parameters
MAX_IMAGE_SIDE = 8192
MAX_CHANNELS = 1024
MAX_CLASSES = 100_000
MAX_PARAMETERS = 1_000_000_000


def _at_most(key: str, value: int, maximum: int, what: str) -> None:
    """A sanity limit: refuse ``value > maximum`` naming ``key`` (read from a file, a damaged
    or hostile model spec would otherwise allocate without bound)."""
    if value > maximum:
        raise InputError(
            f"{key}={value} is more than trustlab's models take ({what} up to {maximum}); "
            "check the value (a model spec read from a file may be damaged)."
        )


def _image_size(value: int | Sequence[int]) -> tuple[int, int]:
    fix = "Pass an int for square images or (H, W), e.g. image_size=32 or (28, 28)."
    if isinstance(value, Sequence) and not isinstance(value, str):
        if len(value) != 2:
            raise InputError(f"image_size={value!r} has {len(value)} entries. {fix}")
        h, w = (check_int(f"image_size={value!r}: each entry", v, 1, fix=fix) for v in value)
    else:
        h = w = check_int("image_size", value, 1, fix=fix)
    _at_most("image_size", max(h, w), MAX_IMAGE_SIDE, "image sides")
    return h, w


def _check_parameter_count(name: str, build: Any, sizes: dict[str, Any]) -> None:
    """Refuse a model with more than :data:`MAX_PARAMETERS` parameters before it allocates
    anything: ``build()`` runs on the meta device (shapes only, no memory, no draw from the
    user's RNG), so an absurd spec (e.g. an MLP on 8192x8192 inputs) fails in milliseconds."""
    try:
        with torch.random.fork_rng(devices=[]), torch.device("meta"):
            count = num_parameters(build())
    except (RuntimeError, OverflowError) as exc:
        shown = ", ".join(f"{k}={v!r}" for k, v in sizes.items())
        raise InputError(
            f"model {name!r} cannot be built with {shown} ({str(exc).splitlines()[0]}); "
            "use smaller sizes."
        ) from None
    if count > MAX_PARAMETERS:
        shown = ", ".join(f"{k}={v!r}" for k, v in sizes.items())
        gib = count * 4 / 2**30
        raise InputError(
            f"model {name!r} with {shown} would have {count:.3g} parameters ({gib:.3g} GiB of "
            f"float32), over trustlab's limit of {MAX_PARAMETERS:.0e}; check these "
            "sizes (a model spec read from a file may be damaged) or choose a smaller model."
        )


def create_model(
    name: str,
    num_classes: int = 10,
    in_channels: int = 3,
    image_size: int | Sequence[int] = 32,
    **kwargs: Any,
) -> nn.Module:
    """Build a registered model (``trustlab models`` lists them).

    Args:
        name: registered name, e.g. ``"resnet20"``, ``"wrn-16-4"``, ``"c3d-small"``.
        num_classes: output classes (>= 2, default 10).
        in_channels: input channels (>= 1, default 3).
        image_size: side of square images or ``(H, W)`` (default 32). For video models, frame size.
        **kwargs: model-specific options, e.g. ``preact=True`` (resnet18), ``dropout`` (wrn-16-4,
            cnn-small, c3d-small), ``hidden`` (mlp), ``frames=8`` (video models; input
            ``(N, C, T, H, W)``).

    Returns:
        The model, freshly initialised from torch's global RNG, with ``model.config`` recording the
        arguments (a JSON-serialisable dict that rebuilds it: ``create_model(**model.config)``).

    Raises:
        InputError: unknown name, bad ``num_classes`` / ``in_channels`` / ``image_size``, an image
            too small for the architecture, an option the model does not take, or sizes beyond
            the sanity limits (:data:`MAX_CLASSES`, :data:`MAX_CHANNELS`, :data:`MAX_IMAGE_SIDE`
            and :data:`MAX_PARAMETERS`, the parameter count taken on the meta device before
            anything is allocated).
    """
    entry = MODELS.get(name)
    num_classes = check_int(
        "num_classes", num_classes, 2, fix="A classifier needs at least two classes."
    )
    _at_most("num_classes", num_classes, MAX_CLASSES, "classes")
    in_channels = check_int(
        "in_channels", in_channels, 1, fix="Use 1 for grey-scale and 3 for colour inputs."
    )
    _at_most("in_channels", in_channels, MAX_CHANNELS, "input channels")
    size = _image_size(image_size)
    allowed = [
        p.name
        for p in inspect.signature(entry.factory).parameters.values()
        if p.name not in _COMMON and p.kind is inspect.Parameter.KEYWORD_ONLY
    ]
    unknown = sorted(set(kwargs) - set(allowed))
    if unknown:
        options = ", ".join(allowed) if allowed else "none"
        raise InputError(
            f"model {entry.name!r} does not take {', '.join(map(repr, unknown))}; its extra "
            f"options are: {options}."
        )
    sizes = {"num_classes": num_classes, "in_channels": in_channels, "image_size": size, **kwargs}
    _check_parameter_count(entry.name, lambda: entry.factory(**sizes), sizes)
    model = entry.factory(**sizes)
    model.config = {
        "name": entry.name,
        "num_classes": num_classes,
        "in_channels": in_channels,
        "image_size": list(size),
        **{k: list(v) if isinstance(v, tuple) else v for k, v in kwargs.items()},
    }
    return model


def num_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (shared tensors counted once)."""
    params = {id(p): p for p in model.parameters() if p.requires_grad or not trainable_only}
    return sum(p.numel() for p in params.values())


@functools.cache
def _default_param_count(name: str) -> int:
    # Built on the meta device: no memory, no initialisation cost, no draw from the user's RNG.
    with torch.random.fork_rng(devices=[]), torch.device("meta"):
        model = create_model(name)
    return num_parameters(model)


def list_models() -> list[dict[str, Any]]:
    """One dict per registered model: ``name``, ``description``, ``kind`` and ``params`` (the
    parameter count at the default configuration: 10 classes, 3 channels, 32x32; video models
    3x8x32x32), sorted by name."""
    return [
        {
            "name": entry.name,
            "description": entry.description,
            "kind": entry.meta.get("kind", "image"),
            "params": _default_param_count(entry.name),
        }
        for entry in MODELS
    ]
