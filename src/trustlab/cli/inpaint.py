"""Inpainting: the ``inpaint`` group (``inpaint train``, ``inpaint eval``)."""

from __future__ import annotations

from typing import Annotated

import typer

from trustlab.cli.common import (
    DataRootOpt,
    DeviceOpt,
    QuietOpt,
    SeedOpt,
    app,
    command,
    print_metrics,
    print_summary,
    stdout,
    warnings_shown,
)
from trustlab.utils.progress import show_progress

AREA = "Training"

inpaint_app = typer.Typer(
    help="GAN image inpainting with LID submanifold alignment (Li et al. IJCAI 2019): "
    "iLID and pLID regularisers, PSNR/SSIM/LID-gap evaluation.",
    no_args_is_help=True,
)
app.add_typer(inpaint_app, name="inpaint", rich_help_panel=AREA)


@command("train", parent=inpaint_app)
def inpaint_train_cmd(
    dataset: Annotated[
        str, typer.Option(help="an image dataset whose sides are multiples of 4.")
    ] = "photo-patches",
    data_root: DataRootOpt = None,
    epochs: Annotated[int, typer.Option(help="passes over the training images.")] = 20,
    batch_size: Annotated[int, typer.Option(help="images per step (the iLID reference set).")] = 64,
    lr: Annotated[float, typer.Option(help="Adam learning rate of both networks.")] = 2e-4,
    mask: Annotated[
        str, typer.Option(help="training holes: centre, rectangles or free-form.")
    ] = "rectangles",
    eval_mask: Annotated[
        str, typer.Option(help="test holes (metrics, grid.png): centre, rectangles or free-form.")
    ] = "centre",
    lambda_adv: Annotated[float, typer.Option(help="weight of the adversarial loss.")] = 1e-3,
    lambda_ilid: Annotated[
        float, typer.Option(help="weight of iLID (image-level LID); 0 turns it off.")
    ] = 0.001,
    lambda_plid: Annotated[
        float, typer.Option(help="weight of pLID (patch-level LID); 0 turns it off.")
    ] = 0.001,
    k: Annotated[int, typer.Option(help="LID neighbours.")] = 20,
    estimator: Annotated[
        str, typer.Option(help="LID estimator: mom (method of moments) or mle.")
    ] = "mom",
    width: Annotated[int, typer.Option(help="the networks' base width.")] = 32,
    extractor: Annotated[
        str, typer.Option(help="registered classifier whose features the LIDs use.")
    ] = "cnn-small",
    extractor_epochs: Annotated[
        int, typer.Option(help="epochs training the extractor on the labels (0: random, fixed).")
    ] = 0,
    extractor_checkpoint: Annotated[
        str | None, typer.Option(help="a trustlab model .safetensors to use as the extractor.")
    ] = None,
    samples: Annotated[int, typer.Option(help="test images in grid.png.")] = 8,
    download: Annotated[
        bool, typer.Option(help="fetch a missing file-based dataset (e.g. mnist).")
    ] = False,
    name: Annotated[
        str | None, typer.Option(help="the run's name (default inpaint-DATASET).")
    ] = None,
    device: DeviceOpt = "auto",
    seed: SeedOpt = 0,
    quiet: QuietOpt = False,
) -> None:
    """Train a GAN inpainting model with the iLID and pLID regularisers; stores an inpaint run.

    The run holds a checkpoint per epoch (`trustlab resume RUN` continues an interrupted one),
    the model (inpainter.safetensors), grid.png (masked / restored / original test images) and
    the test split's PSNR, SSIM, L1 in the hole and LID gap.
    """
    from trustlab.workflows.inpaint import run_inpaint

    settings = {
        "epochs": epochs, "batch_size": batch_size, "lr": lr, "mask": mask,
        "eval_mask": eval_mask, "lambda_adv": lambda_adv, "lambda_ilid": lambda_ilid,
        "lambda_plid": lambda_plid, "k": k, "estimator": estimator, "width": width,
        "extractor": extractor, "extractor_epochs": extractor_epochs,
        "extractor_checkpoint": extractor_checkpoint,
    }  # fmt: skip
    with warnings_shown():
        run, _ = run_inpaint(
            dataset, settings, data_root=data_root, samples=samples, device=device, seed=seed,
            progress=show_progress(not quiet), name=name, download=download,
        )  # fmt: skip
    run = run.refresh()
    print_summary(run, run.summary)
    stdout().print(f"grid: {run.dir / 'grid.png'}", highlight=False, soft_wrap=True)


@command("eval", parent=inpaint_app)
def inpaint_eval_cmd(
    target: Annotated[
        str, typer.Argument(help="an inpaint run's id or an inpainter.safetensors file.")
    ],
    dataset: Annotated[
        str | None, typer.Option(help="the images (default: the run's dataset).")
    ] = None,
    data_root: DataRootOpt = None,
    mask: Annotated[
        str | None,
        typer.Option(
            help="holes: centre, rectangles or free-form (default: the model's test holes)."
        ),
    ] = None,
    seed: Annotated[int, typer.Option(help="the masks' seed.")] = 0,
    samples: Annotated[int, typer.Option(help="test images in the grid.")] = 8,
    out: Annotated[
        str | None, typer.Option(help="the grid's PNG path (default: in the run's folder).")
    ] = None,
    device: DeviceOpt = "auto",
) -> None:
    """Restore a dataset's test images with an inpainting model: PSNR, SSIM, L1 in the hole,
    the LID gap, and a PNG grid of masked / restored / original images (its metrics are saved
    next to it as .json)."""
    from trustlab.workflows.inpaint import evaluate_inpaint

    metrics, grid = evaluate_inpaint(
        target, dataset=dataset, data_root=data_root, mask=mask, seed=seed, samples=samples,
        out=out, device=device,
    )  # fmt: skip
    print_metrics(f"inpainting {target}", metrics)
    stdout().print(f"grid: {grid}", highlight=False, soft_wrap=True)
