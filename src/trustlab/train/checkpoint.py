"""Checkpoints: safetensors plus a JSON sidecar, written atomically; never a pickle.

A checkpoint ``name.safetensors`` holds tensors only; its metadata (a JSON object: what the file
is, the model spec, the epoch, the optimizer's non-tensor state, ...) is stored twice: inside the
safetensors header (the source of truth, so the two can never disagree) and as a readable sidecar
``name.json``. Both are written to temporary files and renamed into place, so an interrupted
write leaves the previous checkpoint intact.

This is a security toolkit: loading a file a user hands in must not execute code, so only the
safetensors format is accepted (no ``torch.load``, no pickle).
"""

from __future__ import annotations

import json
import struct
import zipfile
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from trustlab.errors import CheckpointError, InputError
from trustlab.models.spec import ModelSpec
from trustlab.utils.io import atomic_path, remove_stale_temps, write_json_atomic

FORMAT = "trustlab-checkpoint/1"
_META_KEY = "trustlab"


def sidecar_path(path: str | Path) -> Path:
    return Path(path).with_suffix(".json")


def save_checkpoint(
    path: str | Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any]
) -> Path:
    """Write ``tensors`` and ``meta`` to ``path`` (``.safetensors``) and its JSON sidecar."""
    path = Path(path)
    if path.suffix != ".safetensors":
        path = path.with_suffix(".safetensors")
    meta = {"format": FORMAT, **meta}
    text = json.dumps(meta, sort_keys=True, default=str)
    # safetensors refuses shared or non-contiguous storage: give it private contiguous copies.
    flat = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    remove_stale_temps(path)  # left by a writer killed mid-write; a checkpoint has one writer
    remove_stale_temps(sidecar_path(path))
    with atomic_path(path) as tmp:
        save_file(flat, str(tmp), metadata={_META_KEY: text})
    write_json_atomic(sidecar_path(path), meta)
    return path


_CONVERT = (
    "Convert it where you trust it: "
    "safetensors.torch.save_file(torch.load(f, weights_only=True), 'model.safetensors'), or, "
    "where you have the model, safetensors.torch.save_file(model.state_dict(), "
    "'model.safetensors')."
)


def _zip_kind(path: Path) -> str:
    """What a zip archive handed in as a checkpoint holds (the names only; nothing is read)."""
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
    except (zipfile.BadZipFile, OSError, ValueError):
        return "a damaged zip archive (perhaps a torch.save file)"
    if any(n.rsplit("/", 1)[-1] == "data.pkl" for n in names):
        return "a torch.save file (a pickle inside a zip archive)"
    if names and all(n.endswith(".npy") for n in names):
        return "a NumPy .npz archive"
    return "a zip archive"


def _explain_not_safetensors(path: Path, why: str = "") -> str:
    """Why ``path`` cannot be read as a safetensors file, and the fix that fits what it is:
    a pickle or torch.save file is converted where it is trusted; a damaged or truncated
    safetensors file is re-created or copied again (converting it would not help)."""
    head, size = b"", 0
    if path.is_file():
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(9)
    refusal = (
        "trustlab only loads safetensors checkpoints, because unpickling a file can execute "
        "arbitrary code."
    )
    if size == 0:
        return (
            f"{path} is empty (0 bytes), not a safetensors checkpoint. Write it again (e.g. "
            "trustlab.train.save_model) or copy it again from where it was made."
        )
    if head[:2] == b"PK":
        kind = _zip_kind(path)
        fix = (
            "Save the model's weights with safetensors.torch.save_file or trustlab's save_model."
            if kind == "a NumPy .npz archive"
            else _CONVERT
        )
        return f"{path} is {kind}, not a safetensors checkpoint. {refusal} {fix}"
    if head[:1] == b"\x80":
        return f"{path} is a pickle file, not a safetensors checkpoint. {refusal} {_CONVERT}"
    if len(head) == 9 and head[8:9] == b"{":  # an 8-byte header length, then the JSON header
        (n,) = struct.unpack("<Q", head[:8])
        detail = f" ({why})" if why else ""
        if n > size - 8:
            detail = f" (its header announces {n} bytes but the file holds only {size - 8})"
        return (
            f"{path} is a damaged or truncated safetensors file{detail}. Re-create it (e.g. "
            "re-run the training that wrote it) or copy it again from where it was made; a "
            "partial download or copy looks like this."
        )
    return (
        f"{path} is not a safetensors file (nor a pickle or torch.save file). trustlab loads "
        "model checkpoints written as safetensors (trustlab train, trustlab.train.save_model or "
        "safetensors.torch.save_file); check the path."
    )


def _check_header(path: Path) -> None:
    if path.is_dir():
        raise CheckpointError(
            f"{path} is a folder; pass the checkpoint file inside it (e.g. model.safetensors)."
        )
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist. Check the path.")
    with open(path, "rb") as fh:
        raw = fh.read(8)
        if len(raw) < 8:
            raise CheckpointError(_explain_not_safetensors(path))
        (n,) = struct.unpack("<Q", raw)
        size = path.stat().st_size
        first = fh.read(1)
    if n == 0 or n > size - 8 or first != b"{":
        raise CheckpointError(_explain_not_safetensors(path))


def read_checkpoint_meta(path: str | Path) -> dict[str, Any]:
    """The metadata of a checkpoint, read from its safetensors header."""
    path = Path(path)
    _check_header(path)
    try:
        with safe_open(str(path), framework="pt") as fh:
            raw = (fh.metadata() or {}).get(_META_KEY)
    except Exception as exc:  # safetensors raises its own error type for a corrupt header
        raise CheckpointError(_explain_not_safetensors(path, str(exc))) from exc
    if raw is None:
        return {}
    try:
        meta = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path} has unreadable trustlab metadata ({exc}).") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path} has malformed trustlab metadata (not a JSON object).")
    return meta


def load_checkpoint(
    path: str | Path, device: str | torch.device = "cpu"
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a checkpoint's tensors (on ``device``) and metadata; refuse anything but safetensors."""
    path = Path(path)
    meta = read_checkpoint_meta(path)
    try:
        with safe_open(str(path), framework="pt", device=str(device)) as fh:
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118 (not a dict)
    except Exception as exc:
        raise CheckpointError(f"{path} is damaged: {exc}. Re-create the checkpoint.") from exc
    return tensors, meta


def save_model(
    model: nn.Module, path: str | Path, spec: dict[str, Any] | None = None, **meta: Any
) -> Path:
    """Save a model's ``state_dict`` with the spec that rebuilds it (given, or derived from a
    model made by ``create_model``, see :class:`trustlab.models.spec.ModelSpec`), so that
    :func:`load_model` needs nothing but the file."""
    if spec is None:
        derived = ModelSpec.from_model(model)
        spec = derived.to_dict() if derived is not None else None
    return save_checkpoint(
        path, dict(model.state_dict()), {"kind": "model", "model_spec": spec, **meta}
    )


def _state_mismatch(model: nn.Module, tensors: dict[str, torch.Tensor]) -> str:
    """The differences between ``model``'s state and ``tensors``: keys with different shapes
    (both shapes), keys the file lacks, keys the model does not have (a few of each)."""
    own = model.state_dict()
    shapes = [
        f"{k}: the file holds {tuple(v.shape)}, the model {tuple(own[k].shape)}"
        for k, v in tensors.items()
        if k in own and tuple(v.shape) != tuple(own[k].shape)
    ]
    missing = [k for k in own if k not in tensors]
    extra = [k for k in tensors if k not in own]

    def some(keys: list[str]) -> str:
        more = f" and {len(keys) - 4} more" if len(keys) > 4 else ""
        return ", ".join(keys[:4]) + more

    parts = []
    if shapes:
        parts.append("shapes differ for " + "; ".join(shapes[:4]) + ("; ..." * (len(shapes) > 4)))
    if missing:
        parts.append(f"the file lacks {some(missing)}")
    if extra:
        parts.append(f"the model has no {some(extra)}")
    return "; ".join(parts)


def load_state(
    model: nn.Module,
    tensors: dict[str, torch.Tensor],
    path: str | Path,
    fix: str = "Create the model with the same name and arguments as when it was saved (e.g. "
    "the same number of classes).",
) -> None:
    """``model.load_state_dict`` (strict) with an error that names the mismatching keys and
    shapes, followed by ``fix``."""
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:
        why = _state_mismatch(model, tensors) or str(exc).splitlines()[0]
        raise CheckpointError(f"{path} does not fit this model: {why}. {fix}") from exc


def _model_tensors(
    path: str | Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any]
) -> dict[str, torch.Tensor]:
    """The model's weights in a checkpoint (a trainer checkpoint keeps them under ``model/``),
    refused when any is NaN or infinite."""
    if meta.get("kind") == "trainer-state":
        tensors = {k[len("model/") :]: v for k, v in tensors.items() if k.startswith("model/")}
    bad = [k for k, t in tensors.items() if t.is_floating_point() and not torch.isfinite(t).all()]
    if bad:
        shown = ", ".join(bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
        raise CheckpointError(
            f"{path} holds weights that are NaN or infinite ({shown}): the model that wrote it "
            "had diverged, and every prediction it makes would be meaningless. Retrain it (a "
            "lower learning rate or clip_grad_norm), or load an earlier checkpoint."
        )
    return tensors


def load_model(
    path: str | Path, model: nn.Module | None = None, device: str | torch.device = "cpu"
) -> nn.Module:
    """Load weights into ``model``, or rebuild the model from the spec stored in the file.

    Accepts model checkpoints and trainer checkpoints (whose weights live under ``model/``).
    """
    tensors, meta = load_checkpoint(path, device="cpu")
    tensors = _model_tensors(path, tensors, meta)
    if model is None:
        spec = meta.get("model_spec")
        if not spec:
            raise CheckpointError(
                f"{path} records no model spec; pass the model to load into: "
                "load_model(path, model=create_model(...))."
            )
        if not isinstance(spec, dict):
            raise CheckpointError(f"{path} has a malformed model spec: {spec!r}.")
        try:
            model = ModelSpec(**spec).build()
        except (TypeError, ValueError) as exc:  # InputError is a ValueError too
            why = str(exc).rstrip(".")
            raise CheckpointError(
                f"{path} has a model spec trustlab cannot build ({why}). Load it into a model "
                "you create: load_model(path, model=create_model(...))."
            ) from None
    load_state(model, tensors, path)
    return model.to(device)


def load_user_model(weights: str | Path, arch: str, **kwargs: Any) -> nn.Module:
    """A model of the user's own class with weights from a safetensors file, in eval mode.

    ``arch`` names an ``nn.Module`` subclass (see :func:`trustlab.utils.imports.load_object`):
    ``"path/to/nets.py:MyNet"`` (the file is loaded by its path as a module of a private package
    whose folder is the file's, so its siblings import relatively; ``sys.path`` is never
    changed) or ``"package.module:MyNet"``. The class is built with ``kwargs`` and the
    weights are loaded strictly (every key of the model's ``state_dict``, no other). Only
    safetensors files are read: a pickle or ``torch.save`` file is refused without being opened
    as a pickle, since unpickling can run arbitrary code. Convert one where you trust it with
    ``safetensors.torch.save_file(model.state_dict(), "model.safetensors")``. Loading the class
    runs its module's code: only name code you trust.

    Args:
        weights: the ``.safetensors`` file (a plain ``state_dict`` saved with
            ``safetensors.torch.save_file``, or a trustlab checkpoint).
        arch: ``"file.py:Class"`` or ``"module:Class"``.
        **kwargs: passed to the class (e.g. ``num_classes=10``).

    Returns:
        The model on the CPU, in eval mode.

    Raises:
        InputError: the class cannot be loaded or is not an ``nn.Module`` subclass, building it
            fails, the file is not safetensors (a pickle, a ``torch.save`` file, damaged), or
            its keys or shapes do not fit the model (a few of each are named).

    Example:
        >>> # nets.py defines class MyNet(nn.Module); weights saved with
        >>> # safetensors.torch.save_file(net.state_dict(), "mynet.safetensors")
        >>> net = load_user_model("mynet.safetensors", "nets.py:MyNet",
        ...                       num_classes=10)  # doctest: +SKIP
    """
    from trustlab.utils.imports import load_object

    cls = load_object(arch, what="model class")
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        kind = f"the class {cls.__name__}" if isinstance(cls, type) else type(cls).__name__
        raise InputError(
            f"model class {arch!r} is {kind}, not a torch.nn.Module subclass; name the class "
            "of your network (e.g. 'nets.py:MyNet')."
        )
    tensors, meta = load_checkpoint(weights, device="cpu")  # refuses anything but safetensors
    tensors = _model_tensors(weights, tensors, meta)
    try:
        model = cls(**kwargs)
    except Exception as exc:
        given = ", ".join(f"{k}={v!r}" for k, v in kwargs.items()) or "no arguments"
        why = " ".join(str(exc).split()) or type(exc).__name__
        raise InputError(
            f"building model class {arch!r} with {given} failed: {type(exc).__name__}: {why}. "
            "Pass the arguments its __init__ takes."
        ) from exc
    if not isinstance(model, nn.Module):  # a __new__ that returns something else
        raise InputError(f"model class {arch!r} built a {type(model).__name__}, not a Module.")
    load_state(
        model,
        tensors,
        weights,
        fix=f"Build {cls.__name__} with the arguments the weights were saved with, and save "
        "them with safetensors.torch.save_file(model.state_dict(), path).",
    )
    return model.eval()
