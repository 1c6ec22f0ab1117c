"""Validated experiment configuration (YAML files and CLI flags share these models).

Unknown keys and bad values are errors that name the key and the allowed values, e.g.::

    config key 'epoch': unknown key (did you mean 'epochs'?)
    config key 'optimizer': Input should be 'sgd', 'adam' or 'adamw' (got 'rmsprop')
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import ConfigDict, Field, field_validator

from trustlab.errors import InputError
from trustlab.registry import DATASETS, MODELS
from trustlab.train.trainer import TrainSettings
from trustlab.utils.validate import parse_config


class TrainConfig(TrainSettings):
    """One ``trustlab train`` run: what to train on what, and how (see :class:`TrainSettings`).

    Validated like :class:`TrainSettings` (unknown keys and bad values are errors naming the key);
    names are checked against the registries (``DATASETS``, ``MODELS``, the losses). Every
    :class:`TrainSettings` field (``epochs``, ``lr``, ``dp``, ...) is accepted with its default.

    Args:
        dataset: a name from ``trustlab datasets``; default ``"digits"``.
        model: a name from ``trustlab models``; default ``"cnn-small"``.
        model_kwargs: model-specific options; default ``{}``.
        data_root: folder (or file) holding the dataset; default None.
        download: download a missing dataset; default False.
        device: ``"auto"`` (default), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        loss: a loss name, e.g. ``ce`` (default), ``sce``, ``gce``, ``nce+rce``, ``nfl+mae``.
        alpha: SCE/APL weight; default None (the paper's).
        beta: SCE/APL weight; default None (the paper's).
        loss_kwargs: ``q``, ``gamma``, ``A``; default ``{}``.
        noise: label noise on the training split, e.g. ``"sym:0.4"``; default ``"none"``.
        adv: adversarial training, ``"none"`` (default) or a name registered in
            :data:`~trustlab.registry.ROBUST` (``"pgd"``, ``"trades"``).
        eps: adversarial radius, e.g. ``8/255``; default None (8/255 PGD, 0.031 TRADES).
        adv_alpha: inner step size; default None.
        adv_steps: inner PGD steps; default 10.
        name: a label for the run; default None.

    Example:
        >>> config = TrainConfig(dataset="digits", model="cnn-small", epochs=2)
        >>> config.epochs, config.lr
        (2, 0.1)
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    dataset: str = Field("digits", description="a name from `trustlab datasets`")
    model: str = Field("cnn-small", description="a name from `trustlab models`")
    model_kwargs: dict[str, Any] = Field(default_factory=dict)
    data_root: str | None = Field(None, description="folder (or file) holding the dataset")
    download: bool = False
    device: str = Field("auto", description="auto, cpu, cuda or cuda:N")
    loss: str = Field("ce", description="a loss name, e.g. ce, sce, gce, nce+rce, nfl+mae")
    alpha: float | None = Field(None, description="SCE/APL weight (default: the paper's)")
    beta: float | None = Field(None, description="SCE/APL weight (default: the paper's)")
    loss_kwargs: dict[str, Any] = Field(default_factory=dict, description="q, gamma, A")
    noise: str = Field("none", description="label noise on the training split: sym:0.4, ...")
    adv: str = Field(
        "none", description="adversarial training: none or a registered name (pgd, trades)"
    )
    eps: float | str | None = Field(
        None, description="adversarial radius, e.g. 8/255 (default: 8/255 PGD, 0.031 TRADES)"
    )
    adv_alpha: float | str | None = Field(None, description="inner step size")
    adv_steps: int = Field(10, ge=1, description="inner PGD steps")
    name: str | None = Field(None, description="a label for the run")

    @field_validator("dataset")
    @classmethod
    def _known_dataset(cls, v: str) -> str:
        _ensure_registered()
        DATASETS.get(v)  # raises with the list of names
        return v.lower()

    @field_validator("device")
    @classmethod
    def _known_device(cls, v: str) -> str:
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", v.lower()):
            raise InputError(f"unknown device {v!r}. Use one of: auto, cpu, cuda, cuda:N.")
        return v.lower()

    @field_validator("loss")
    @classmethod
    def _known_loss(cls, v: str) -> str:
        from trustlab.train.losses import make_loss

        make_loss(v)  # raises with the list of names
        return v.lower().replace(" ", "")

    @field_validator("noise")
    @classmethod
    def _known_noise(cls, v: str) -> str:
        from trustlab.data.noise import parse_noise

        parse_noise(v)
        return v.lower()

    @field_validator("model")
    @classmethod
    def _known_model(cls, v: str) -> str:
        _ensure_registered()
        MODELS.get(v)
        return v.lower()


def _ensure_registered() -> None:
    import trustlab.data  # noqa: F401  (registers datasets)
    import trustlab.models  # noqa: F401  (registers models)


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping (``yaml.safe_load``: no arbitrary objects)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"config file {path} does not exist.")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise InputError(f"config file {path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise InputError(f"config file {path} must hold a mapping of keys to values.")
    return data


def load_train_config(path: str | Path | None = None, **overrides: Any) -> TrainConfig:
    """A :class:`TrainConfig` from a YAML file, with ``overrides`` (not None) on top."""
    data = load_yaml(path) if path is not None else {}
    dp = overrides.pop("dp", None)
    data.update({k: v for k, v in overrides.items() if v is not None})
    if dp is not None:  # DP flags refine the file's dp block; one budget flag replaces the other
        base = dict(data.get("dp") or {})
        if "epsilon" in dp:
            base.pop("noise_multiplier", None)
        if "noise_multiplier" in dp:
            base.pop("epsilon", None)
        data["dp"] = {**base, **dp}
    return parse_config(TrainConfig, data)
