"""A DPGAN trained on a dataset's training images and stored as a run: what ``trustlab dpgan
train`` calls.

:func:`run_dpgan` loads the training split of a registered dataset (its labels are not used),
trains a :class:`~trustlab.generative.DPGAN` (:func:`~trustlab.generative.train_dpgan`) and
records a run of kind ``"dpgan"``:

- ``config.json``: ``dataset``, ``data_root``, ``device``, ``samples`` and every
  :class:`~trustlab.generative.DPGANSettings` field;
- ``dpgan.safetensors`` (and its sidecar ``dpgan.json``): both networks, the settings and the
  privacy spent (:meth:`~trustlab.generative.DPGAN.load` reads it back);
- ``samples.png``: a grid of ``samples`` generated images, titled with the epsilon;
- metrics per epoch: ``d_loss``, ``g_loss``, ``epsilon``, ``seconds``; summary: ``epsilon``,
  ``delta``, ``noise_multiplier``, ``max_grad_norm``, ``sample_rate``, ``steps`` (the
  discriminator's DP steps), ``target_epsilon`` when one was set, the last losses,
  ``train_images`` and ``seconds``.

Bad input raises :class:`~trustlab.errors.InputError` before the run is created. Not resumable:
an interrupted run is marked ``interrupted`` and is run again from the start.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from trustlab.data.datasets import load_dataset
from trustlab.errors import InputError
from trustlab.generative.dpgan import (
    DPGAN,
    DPGANSettings,
    check_images,
    parse_settings,
    train_dpgan,
)
from trustlab.results import Run, RunStore, recording_outcome
from trustlab.utils.device import resolve_device
from trustlab.utils.validate import check_int

__all__ = ["KIND", "run_dpgan"]

#: the kind of the runs it records
KIND = "dpgan"


def run_dpgan(
    dataset: str = "digits",
    settings: DPGANSettings | dict[str, Any] | None = None,
    *,
    data_root: str | Path | None = None,
    samples: int = 64,
    store: RunStore | None = None,
    device: str = "auto",
    seed: int = 0,
    progress: bool = True,
    name: str | None = None,
) -> tuple[Run, DPGAN]:
    """Train a DPGAN on ``dataset``'s training images and store it as a run of kind ``dpgan``.

    Args:
        dataset: a registered image dataset whose images are 1x16x16, 1x28x28 or 3x32x32
            (``digits``, ``mnist``, ``fashion-mnist``, ``cifar10``, ``svhn``, ...).
        settings: :class:`~trustlab.generative.DPGANSettings` or a dict of its fields (default:
            its defaults, a non-private GAN; give ``epsilon`` or ``noise_multiplier``).
        data_root: the folder holding the dataset's files (file-based datasets).
        samples: images in ``samples.png``; default 64.
        store: the results store (default ``$TRUSTLAB_HOME``).
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        seed: seeds everything (:func:`~trustlab.generative.train_dpgan`); default 0.
        progress: a progress bar (on a terminal only).
        name: the run's name (default ``dpgan-<dataset>``).

    Returns:
        ``(run, gan)``: the finished run and the trained :class:`~trustlab.generative.DPGAN`.

    Example:
        >>> run, gan = run_dpgan("digits", {"epochs": 5, "epsilon": 4.0})  # doctest: +SKIP
        >>> run.summary["epsilon"] <= 4.0  # doctest: +SKIP
        True
    """
    s = parse_settings({} if settings is None else settings)
    samples = check_int("samples", samples, 1, 1024, "(the grid's images)")
    seed = check_int("seed", seed, 0, 2**63 - 1)
    resolve_device(device)  # a bad device is refused before the run exists
    train = load_dataset(dataset, "train", root=data_root)
    if train.x.dim() != 4:
        raise InputError(
            f"dataset {dataset!r} holds {tuple(train.x.shape[1:])} inputs; a DPGAN takes images "
            "(C, H, W). Pick an image dataset (`trustlab datasets`)."
        )
    images = check_images(train.x)
    config = {
        "dataset": dataset,
        "data_root": None if data_root is None else str(data_root),
        "device": device,
        "samples": samples,
        **s.model_dump(),
    }
    store = store or RunStore()
    run = store.create_run(KIND, name or f"dpgan-{dataset}", config, seed=seed)
    with recording_outcome(run):
        start = time.perf_counter()
        gan = train_dpgan(images, s, seed=seed, device=device, progress=progress)
        for h in gan.history:
            run.log_metrics(int(h["epoch"]), {k: v for k, v in h.items() if k != "epoch"})
        gan.save(run.dir)
        run.add_artifact("dpgan.safetensors", kind="model")
        run.add_artifact("dpgan.json")
        gan.save_grid(run.artifact_path("samples.png"), n=samples, seed=seed)
        run.add_artifact("samples.png", kind="image")
        last = gan.history[-1]
        run.finish(
            {
                **gan.report(),
                "d_loss": last["d_loss"],
                "g_loss": last["g_loss"],
                "train_images": len(images),
                "seconds": time.perf_counter() - start,
            }
        )
    return run, gan
