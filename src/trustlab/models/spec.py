"""A model's recipe: what :func:`create_model` needs plus the normalisation statistics.

Checkpoints store the spec so that a model can be rebuilt from the file alone
(:func:`trustlab.train.checkpoint.load_model`), with no path to the code or data that made it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from torch import nn

from trustlab.errors import InputError


@dataclass(frozen=True)
class ModelSpec:
    """A model's recipe: the arguments of :func:`~trustlab.models.create_model` plus its statistics.

    Checkpoints store it so that :meth:`build` rebuilds the model from the file alone.

    Attributes:
        name: registered model name, e.g. ``"resnet20"``.
        num_classes: output classes.
        in_channels: input channels.
        image_size: side of square images or ``(H, W)`` (a list is turned into a tuple).
        kwargs: model-specific options (e.g. ``{"frames": 8}``); default ``{}``.
        mean: per-channel means for :class:`~trustlab.models.wrappers.Normalized`; default None
            (no wrapper).
        std: per-channel standard deviations; default None.
        group_norm: BatchNorm replaced by GroupNorm (DP-SGD); default False.

    Example:
        >>> spec = ModelSpec("resnet20", num_classes=10, in_channels=3, image_size=32)
        >>> type(spec.build()).__name__
        'ResNet'
    """

    name: str
    num_classes: int
    in_channels: int
    image_size: int | tuple[int, int]
    kwargs: dict[str, Any] = field(default_factory=dict)
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    #: BatchNorm replaced by GroupNorm (:func:`trustlab.models.wrappers.group_norm`; DP-SGD)
    group_norm: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.image_size, list):
            object.__setattr__(self, "image_size", tuple(self.image_size))
        for key in ("mean", "std"):
            value = getattr(self, key)
            if value is not None:
                object.__setattr__(self, key, tuple(float(v) for v in value))

    def build(self) -> nn.Module:
        """``create_model(...)``, wrapped in ``Normalized(mean, std)`` when statistics are set."""
        from trustlab.models import Normalized, create_model

        model = create_model(
            self.name, self.num_classes, self.in_channels, self.image_size, **self.kwargs
        )
        if self.mean is not None and self.std is not None:
            model = Normalized(model, self.mean, self.std)
        if self.group_norm:
            from trustlab.models.wrappers import group_norm

            model, _ = group_norm(model)
        return model

    @classmethod
    def for_data(cls, name: str, data: Any, **kwargs: Any) -> ModelSpec:
        """The spec of model ``name`` sized for a dataset (``.input_shape``, ``.num_classes``,
        ``.mean``, ``.std``): channels, image size (and ``frames`` for video) follow the data."""
        from trustlab.models import MODELS  # imported here: trustlab.models registers them

        shape = tuple(data.input_shape)
        video = len(shape) == 4  # (C, T, H, W)
        kind = MODELS.get(name).meta.get("kind", "image")
        if video != (kind == "video"):
            what = "video clips" if video else "images"
            wanted = "a video model (e.g. c3d-small)" if video else "an image model"
            is_a = "a video" if kind == "video" else "an image"
            raise InputError(
                f"the data holds {what} of shape {shape} but {name!r} is {is_a} model; "
                f"choose {wanted}."
            )
        size: Any = shape[-1] if shape[-2] == shape[-1] else (shape[-2], shape[-1])
        if video:
            kwargs.setdefault("frames", shape[1])
        return cls(name, data.num_classes, shape[0], size, kwargs, data.mean, data.std)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_model(cls, model: nn.Module) -> ModelSpec | None:
        """The spec of a model made by ``create_model`` (optionally inside ``Normalized``), or
        ``None`` for a model trustlab did not create."""
        from trustlab.models import Normalized

        mean = std = None
        if isinstance(model, Normalized):
            mean = tuple(model.mean.flatten().tolist())
            std = tuple(model.std.flatten().tolist())
            model = model.inner
        config = getattr(model, "config", None)
        if not isinstance(config, dict) or "name" not in config:
            return None
        c = dict(config)
        known = ("name", "num_classes", "in_channels", "image_size", "group_norm")
        kwargs = {k: v for k, v in c.items() if k not in known}
        return cls(
            c["name"], c["num_classes"], c["in_channels"], c["image_size"], kwargs, mean, std,
            bool(c.get("group_norm", False)),
        )  # fmt: skip
