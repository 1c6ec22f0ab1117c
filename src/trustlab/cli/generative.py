"""Generative models: the ``dpgan`` group (``dpgan train``)."""

from __future__ import annotations

import json
import math
from typing import Annotated

import typer

from trustlab.cli.common import DataRootOpt, DeviceOpt, QuietOpt, SeedOpt, app, command
from trustlab.utils.progress import show_progress

AREA = "Privacy"  # next to mia and defend-privacy (a group-only panel would come last)

dpgan_app = typer.Typer(
    help="Differentially private GANs (Xie et al. 2018): a discriminator trained with DP-SGD, "
    "samples that can be shared.",
    no_args_is_help=True,
)
app.add_typer(dpgan_app, name="dpgan", rich_help_panel=AREA)


@command("train", parent=dpgan_app)
def dpgan_train_cmd(
    dataset: Annotated[
        str, typer.Option(help="an image dataset of 1x16x16, 1x28x28 or 3x32x32 images.")
    ] = "digits",
    data_root: DataRootOpt = None,
    epochs: Annotated[int, typer.Option(help="passes over the training images.")] = 20,
    batch_size: Annotated[
        int, typer.Option(help="expected real batch (Poisson sampling) and fakes per step.")
    ] = 64,
    epsilon: Annotated[
        float | None, typer.Option(help="target epsilon after the last epoch (sets the noise).")
    ] = None,
    noise_multiplier: Annotated[
        float | None,
        typer.Option(help="noise std / max-grad-norm, instead of --epsilon (neither: no DP)."),
    ] = None,
    delta: Annotated[float, typer.Option(help="the delta of (epsilon, delta)-DP.")] = 1e-5,
    max_grad_norm: Annotated[
        float, typer.Option(help="per-sample clipping norm of the real-data gradients.")
    ] = 1.0,
    latent_dim: Annotated[int, typer.Option(help="size of the generator's latent code.")] = 64,
    lr: Annotated[float, typer.Option(help="Adam learning rate of both networks.")] = 2e-4,
    samples: Annotated[int, typer.Option(help="images in the samples.png grid.")] = 64,
    device: DeviceOpt = "auto",
    seed: SeedOpt = 0,
    quiet: QuietOpt = False,
) -> None:
    """Train a DPGAN on a dataset's training images; stores a dpgan run and prints its numbers.

    Only the discriminator sees real images, through DP-SGD (Opacus: Poisson sampling,
    per-sample clipping, Gaussian noise); the generator is post-processing, so the epsilon
    printed covers every sample drawn from it. The run holds the weights (dpgan.safetensors),
    a grid of samples (samples.png) and the epsilon per epoch.
    """
    from trustlab.workflows.dpgan import run_dpgan

    settings = {
        "epochs": epochs, "batch_size": batch_size, "lr": lr, "latent_dim": latent_dim,
        "epsilon": epsilon, "noise_multiplier": noise_multiplier, "delta": delta,
        "max_grad_norm": max_grad_norm,
    }  # fmt: skip
    run, gan = run_dpgan(
        dataset, settings, data_root=data_root, samples=samples, device=device, seed=seed,
        progress=show_progress(not quiet),
    )  # fmt: skip
    eps = None if math.isinf(gan.epsilon) else gan.epsilon  # null: not private
    typer.echo(
        json.dumps({
            "run": run.id, "dir": str(run.dir), "epsilon": eps, "delta": gan.delta,
            "noise_multiplier": gan.noise_multiplier, "steps": gan.steps,
            "samples": str(run.dir / "samples.png"),
        })
    )  # fmt: skip
