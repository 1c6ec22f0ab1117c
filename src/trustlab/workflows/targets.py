"""The model a command attacks: a stored run (by id) or a model checkpoint file.

:func:`load_target_model` gives the model (and, for a run, the dataset it was trained on);
:func:`load_target` adds the first ``n`` test points of that dataset (or of ``dataset``), checked
to fit the model. The commands that attack a model (``attack``, ``evaluate``, ``advcam``,
``detect``, ``transfer``) and :func:`trustlab.workflows.transfer.run_transfer` call them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from trustlab.data import ArrayDataset, load_dataset
from trustlab.errors import InputError
from trustlab.results import RunStore
from trustlab.train.checkpoint import load_model, read_checkpoint_meta
from trustlab.train.trainer import check_model_fits
from trustlab.utils.device import resolve_device

__all__ = ["check_model_checkpoint", "is_run_ref", "load_target", "load_target_model"]


def is_run_ref(ref: str | int) -> bool:
    """True for a run id (``3``, ``"3"``, ``"run-000003"``), False for a model file path."""
    ref = str(ref)
    return ref.isdigit() or ref.startswith("run-")


def check_model_checkpoint(path: str | Path) -> None:
    """Refuse, from its header alone (nothing is unpickled or built), a model file a command
    would load without ``--arch``: not safetensors (a pickle, a ``torch.save`` file, damaged),
    or a plain ``state_dict`` that records no model spec (not a trustlab checkpoint), with the
    command-line fix.

    Args:
        path: the model file.

    Raises:
        InputError: the file cannot be loaded by itself; the message says what to add.

    Example::

        check_model_checkpoint("runs/run-000003/model.safetensors")  # fine
    """
    meta = read_checkpoint_meta(path)
    if not meta.get("model_spec"):
        raise InputError(
            f"{path} is not a trustlab checkpoint: it records no model spec, so trustlab "
            "cannot rebuild its network: add --arch file.py:Class (your model's class), "
            "which `trustlab audit` and `trustlab submit` take, or pass a model saved by "
            "`trustlab train`."
        )


def load_target_model(
    ref: str, device: Any, *, store: RunStore | None = None
) -> tuple[nn.Module, str | None, str | None]:
    """``(model, the run's dataset, its data root)`` from a run id or a model checkpoint
    (``.safetensors``); for a checkpoint the dataset and data root are ``None``.

    Args:
        ref: a run id of ``store`` or the path of a model file.
        device: where the model is loaded (``"cpu"``, ``torch.device("cuda")``, ...).
        store: the results store a run id refers to (default ``$TRUSTLAB_HOME``).
    """
    dataset = data_root = None
    if is_run_ref(ref):
        run = (store or RunStore()).get(ref)
        path = run.dir / "model.safetensors"
        if not path.exists():
            hint = {
                "inpaint": "; evaluate an inpainting run with `trustlab inpaint eval`",
                "dpgan": "; a DPGAN run holds dpgan.safetensors, not a classifier",
            }.get(run.kind, "")
            raise InputError(
                f"run {run.id} ({run.kind}) has no model.safetensors (status {run.status}){hint}."
            )
        dataset, data_root = run.config.get("dataset"), run.config.get("data_root")
    else:
        path = Path(ref)
        check_model_checkpoint(path)
    return load_model(path, device=device), dataset, data_root


def load_target(
    ref: str,
    dataset: str | None,
    data_root: str | None,
    n: int,
    device: str | torch.device,
    *,
    store: RunStore | None = None,
) -> tuple[nn.Module, ArrayDataset, torch.device]:
    """``(model, data, device)`` from a run id or a model checkpoint: ``data`` is the first
    ``n`` points of the test split of ``dataset`` (default: the run's dataset), checked to fit
    the model; ``device`` is resolved (``"auto"``: CUDA when available).

    Raises:
        InputError: ``n < 1``, no dataset known (a model file without ``dataset``), a run
            without a model, or data the model does not fit.
    """
    dev = resolve_device(device)
    if n < 1:
        raise InputError(f"--n must be >= 1, got {n}.")
    model, run_dataset, run_root = load_target_model(ref, dev, store=store)
    dataset, data_root = dataset or run_dataset, data_root or run_root
    if not dataset:
        raise InputError("which data? pass --dataset (a run id knows its dataset).")
    data = load_dataset(dataset, "test", root=data_root)
    data = data.subset(range(min(n, len(data))))
    check_model_fits(model, data, device=dev)
    return model, data, dev
