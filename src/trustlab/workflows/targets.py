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
from trustlab.train.checkpoint import load_model
from trustlab.train.trainer import check_model_fits
from trustlab.utils.device import resolve_device

__all__ = ["is_run_ref", "load_target", "load_target_model"]


def is_run_ref(ref: str) -> bool:
    """True for a run id (``"3"``, ``"run-000003"``), False for a model file path."""
    return ref.isdigit() or ref.startswith("run-")


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
