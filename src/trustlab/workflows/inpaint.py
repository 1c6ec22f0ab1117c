"""LID-regularised GAN inpainting trained and evaluated as stored runs: what ``trustlab inpaint
train``, ``trustlab inpaint eval`` and ``trustlab resume`` call.

:func:`run_inpaint` trains an :class:`~trustlab.generative.inpainting.Inpainter` on a registered
image dataset's training split and records a run of kind ``"inpaint"``:

- ``config.json``: ``dataset``, ``data_root``, ``device``, ``samples`` and every
  :class:`~trustlab.generative.inpainting.InpaintSettings` field;
- ``checkpoints/last.safetensors``: written after every epoch (both networks, both Adam states,
  the extractor, the history): :func:`resume_inpaint` continues an interrupted run from it and
  ends with the same numbers as an uninterrupted run;
- ``inpainter.safetensors`` (+ ``.json``): the trained model
  (:meth:`~trustlab.generative.inpainting.Inpainter.load`);
- ``grid.png``: masked / restored / original rows for ``samples`` test images;
- metrics per epoch: ``rec``, ``adv``, ``d_loss``, ``ilid``, ``plid``, ``test_psnr``,
  ``test_ssim``, ``seconds``; summary: the test split's ``psnr``, ``ssim``, ``l1_hole``,
  ``lid_gap`` (with ``lid_restored``, ``lid_original``), ``hole_fraction``, ``train_images``,
  ``test_images`` and ``seconds``.

:func:`evaluate_inpaint` evaluates a finished run (or a saved model) on a dataset's test split
with any mask kind and seed, and writes the grid. Bad input raises
:class:`~trustlab.errors.InputError` before a run is created.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from trustlab.data.datasets import ArrayDataset, load_dataset
from trustlab.errors import InputError
from trustlab.generative.inpainting import (
    FILE,
    MASK_KINDS,
    Inpainter,
    InpaintSettings,
    check_batch,
    check_setup,
    parse_settings,
    train_inpainter,
)
from trustlab.results import Run, RunStore, recording_outcome
from trustlab.utils.device import resolve_device
from trustlab.utils.io import write_json_atomic
from trustlab.utils.validate import check_int

__all__ = ["KIND", "evaluate_inpaint", "resume_inpaint", "run_inpaint"]

#: the kind of the runs it records
KIND = "inpaint"
CHECKPOINT = Path("checkpoints") / "last.safetensors"
GRID = "grid.png"


def _data(
    dataset: str, data_root: str | Path | None, download: bool = False
) -> tuple[ArrayDataset, ArrayDataset]:
    train = load_dataset(dataset, "train", root=data_root, download=download)
    test = load_dataset(dataset, "test", root=data_root, download=download)
    for part in (train, test):
        if part.x.dim() != 4:
            raise InputError(
                f"dataset {dataset!r} holds {tuple(part.x.shape[1:])} inputs; inpainting takes "
                "images (C, H, W). Pick an image dataset (`trustlab datasets`), e.g. "
                "photo-patches."
            )
        check_batch(part.x)
    return train, test


def run_inpaint(
    dataset: str = "photo-patches",
    settings: InpaintSettings | dict[str, Any] | None = None,
    *,
    data_root: str | Path | None = None,
    samples: int = 8,
    store: RunStore | None = None,
    device: str = "auto",
    seed: int = 0,
    progress: bool = True,
    name: str | None = None,
    download: bool = False,
) -> tuple[Run, Inpainter]:
    """Train an inpainting model on ``dataset``'s training images; store it as a run.

    Args:
        dataset: a registered image dataset whose sides are multiples of 4 (``photo-patches``,
            ``lfw-faces``, ``shapes10``, ``cifar10``, ``image-folder``, ...).
        settings: :class:`~trustlab.generative.inpainting.InpaintSettings` or a dict of its
            fields (default: its defaults: both regularisers on).
        data_root: the folder holding the dataset's files (file-based datasets).
        samples: test images in ``grid.png``; default 8.
        store: the results store (default ``$TRUSTLAB_HOME``).
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        seed: seeds everything; default 0.
        progress: a progress bar (on a terminal only).
        name: the run's name (default ``inpaint-<dataset>``).
        download: fetch a file-based dataset that is missing (e.g. ``mnist``).

    Returns:
        ``(run, inpainter)``: the finished run and the trained model.

    Example:
        >>> run, inp = run_inpaint("photo-patches", {"epochs": 2})  # doctest: +SKIP
        >>> run.summary["psnr"] > 15  # doctest: +SKIP
        True
    """
    s = parse_settings({} if settings is None else settings)
    if s.extractor_checkpoint is not None:  # absolute, so that resume works from anywhere
        ext = str(Path(s.extractor_checkpoint).expanduser().resolve())
        s = s.model_copy(update={"extractor_checkpoint": ext})
    samples = check_int("samples", samples, 1, 64, "(the grid's columns)")
    seed = check_int("seed", seed, 0, 2**63 - 1)
    resolve_device(device)  # a bad device is refused before the run exists
    check_setup(s, _data(dataset, data_root, download)[0])
    config = {
        "dataset": dataset,
        "data_root": None if data_root is None else str(Path(data_root).resolve()),
        "device": device,
        "samples": samples,
        **s.model_dump(mode="json"),
    }
    store = store or RunStore()
    run = store.create_run(KIND, name or f"inpaint-{dataset}", config, seed=seed)
    return run, _train(run, progress)


def resume_inpaint(
    run_id: int | str,
    store: RunStore | None = None,
    progress: bool = True,
    device: str | None = None,
) -> tuple[Run, Inpainter]:
    """Continue an interrupted or failed ``inpaint`` run from its last epoch checkpoint."""
    store = store or RunStore()
    run = store.get(run_id)
    if run.kind != KIND:
        raise InputError(f"run {run.id} is a {run.kind!r} run, not an inpainting run.")
    if run.status == "finished":
        raise InputError(f"run {run.id} is finished; there is nothing to resume.")
    run.reopen()
    return run, _train(run, progress, device)


def _train(run: Run, progress: bool, device: str | None = None) -> Inpainter:
    cfg = dict(run.config)
    dataset, data_root = cfg.pop("dataset"), cfg.pop("data_root")
    stored_device = cfg.pop("device")
    dev = device or stored_device
    samples = int(cfg.pop("samples"))
    s = parse_settings(cfg)
    with recording_outcome(run):
        start = time.perf_counter()
        train, test = _data(dataset, data_root)
        ckpt = run.dir / CHECKPOINT
        ckpt.parent.mkdir(parents=True, exist_ok=True)

        def log(epoch: int, row: dict[str, float]) -> None:
            run.log_metrics(epoch, {k: v for k, v in row.items() if k != "epoch"})

        inp = train_inpainter(
            train, s, seed=run.seed, device=dev, test=test.x, checkpoint=ckpt, progress=progress,
            on_epoch=log,
        )  # fmt: skip
        for row in inp.history:  # epochs checkpointed by an attempt that died before logging
            log(int(row["epoch"]), row)
        inp.save(run.dir)
        run.add_artifact(FILE, kind="model")
        run.add_artifact(Path(FILE).with_suffix(".json").name)
        title = f"{dataset}: {s.eval_mask} holes"
        inp.save_grid(run.artifact_path(GRID), spread(test.x, samples), title=title)
        run.add_artifact(GRID, kind="image")
        summary = inp.evaluate(test.x)
        run.finish(
            {
                **summary,
                "train_images": len(train),
                "test_images": len(test),
                "seconds": time.perf_counter() - start,
            }
        )
    return inp


def evaluate_inpaint(
    target: int | str | Path,
    *,
    dataset: str | None = None,
    data_root: str | Path | None = None,
    mask: str | None = None,
    seed: int = 0,
    samples: int = 8,
    out: str | Path | None = None,
    store: RunStore | None = None,
    device: str = "auto",
) -> tuple[dict[str, float], Path]:
    """Evaluate an inpainting model on a dataset's test split and write its grid.

    Args:
        target: a finished ``inpaint`` run's id, or an ``inpainter.safetensors`` file (or its
            folder).
        dataset: the images (default: the run's dataset; required for a file).
        data_root: the dataset's folder (default: the run's).
        mask: ``centre``, ``rectangles`` or ``free-form`` (default: the model's ``eval_mask``).
        seed: the masks' seed; default 0.
        samples: test images in the grid; default 8.
        out: the grid's path (default: ``eval-<mask>-seed<seed>.png`` in the run's folder, or
            next to the file); the metrics are written next to it as ``.json``.
        store: the results store (default ``$TRUSTLAB_HOME``).
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.

    Returns:
        ``(metrics, grid_path)``: ``psnr``, ``ssim``, ``l1_hole``, ``lid_gap``, ... and the PNG.
    """
    samples = check_int("samples", samples, 1, 64, "(the grid's columns)")
    seed = check_int("seed", seed, 0, 2**63 - 1)
    if mask is not None and mask not in MASK_KINDS:
        raise InputError(f"unknown mask kind {mask!r}; use one of {', '.join(MASK_KINDS)}.")
    dev = resolve_device(device)
    path = Path(str(target))
    if path.suffix == ".safetensors" or path.is_dir():
        if dataset is None:
            raise InputError("evaluating a model file needs --dataset (the images to restore).")
        model_path, folder = path, (path if path.is_dir() else path.parent)
    else:
        run = (store or RunStore()).get(target)
        if run.kind != KIND:
            raise InputError(f"run {run.id} is a {run.kind!r} run, not an inpainting run.")
        if run.status != "finished":
            raise InputError(
                f"run {run.id} is {run.status}; finish it first (`trustlab resume {run.id}`)."
            )
        dataset = dataset or run.config["dataset"]
        data_root = data_root if data_root is not None else run.config.get("data_root")
        model_path, folder = run.dir / FILE, run.dir
    if not Path(model_path).exists():
        raise InputError(f"{model_path} does not exist.")
    inp = Inpainter.load(model_path, device=str(dev))
    test = load_dataset(dataset, "test", root=data_root)
    check_batch(test.x, inp.shape)
    kind = mask or inp.settings.eval_mask
    masks = inp.masks(len(test), seed, kind)
    metrics = inp.evaluate(test.x, masks)
    grid = Path(out) if out is not None else folder / f"eval-{kind}-seed{seed}.png"
    idx = spread_index(len(test), samples)
    inp.save_grid(grid, test.x[idx], masks[idx], title=f"{dataset}: {kind} holes")
    record = {"target": str(target), "dataset": dataset, "mask": kind, "seed": seed, **metrics}
    write_json_atomic(grid.with_suffix(".json"), record)
    return metrics, grid


def spread_index(n: int, k: int) -> torch.Tensor:
    """``min(n, k)`` indices spread evenly over ``0..n-1`` (a grid shows the whole test split,
    not its first, often overlapping, images)."""
    k = min(n, k)
    return torch.linspace(0, n - 1, k).round().long()


def spread(images: torch.Tensor, k: int) -> torch.Tensor:
    """``k`` images spread evenly over ``images`` (:func:`spread_index`)."""
    return images[spread_index(len(images), k)]
