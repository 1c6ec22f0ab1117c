"""Backdoors: ``backdoor`` (train a backdoored model, store its artefact) and ``defend``."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from trustlab.cli.common import (
    DataRootOpt,
    DeviceOpt,
    OptionsOpt,
    QuietOpt,
    SeedOpt,
    command,
    json_object,
)
from trustlab.utils.progress import show_progress

AREA = "Backdoors"


@command("backdoor", area=AREA)
def backdoor_cmd(
    attack: Annotated[str, typer.Option(help="{backdoors}.")],
    dataset: Annotated[str, typer.Option(help="training data: {datasets}.")] = "shapes10",
    model: Annotated[str, typer.Option(help="architecture: {models}.")] = "resnet8",
    rate: Annotated[
        float,
        typer.Option(
            help="fraction of the training set poisoned (clean-label injectors: of the target "
            "class; loss injectors, e.g. blind: unused)."
        ),
    ] = 0.1,
    target: Annotated[int, typer.Option(help="the target class.")] = 0,
    epochs: Annotated[int, typer.Option(help="training epochs.")] = 5,
    lr: Annotated[float, typer.Option(help="peak learning rate.")] = 0.05,
    batch_size: Annotated[int, typer.Option(help="batch size.")] = 64,
    data_root: DataRootOpt = None,
    name: Annotated[str | None, typer.Option(help="a name for the stored run.")] = None,
    options: OptionsOpt = None,
    quiet: QuietOpt = False,
    device: DeviceOpt = "auto",
    seed: SeedOpt = 0,
) -> None:
    """Train a backdoored model and store its artefact as a run.

    The run holds the weights, trigger, poison indices, config, metrics and a PNG of clean vs
    triggered examples.
    """
    from trustlab.workflows.backdoor import run_backdoor

    run, art = run_backdoor(
        attack, dataset, model, rate, target, epochs, lr, batch_size, data_root, name, device,
        seed, progress=show_progress(not quiet), options=json_object("--options", options),
    )  # fmt: skip
    typer.echo(json.dumps({"run": run.id, "dir": str(run.dir), **art.metrics}))


@command("defend", area=AREA)
def defend_cmd(
    artefact: Annotated[str, typer.Argument(help="a backdoor run id or artefact folder.")],
    defense: Annotated[str, typer.Option(help="{defenses}.")] = "nc",
    epochs: Annotated[
        int | None,
        typer.Option(
            help="for {defenses:trains}: Neural Cleanse's optimisation epochs (default: the "
            "authors' schedule with early stop; a cap starts lambda at 1e-3), "
            "the others' training epochs (default 10, lr 0.05)."
        ),
    ] = None,
    data_root: DataRootOpt = None,
    options: OptionsOpt = None,
    quiet: QuietOpt = False,
    device: DeviceOpt = "auto",
    seed: SeedOpt = 0,
) -> None:
    """Run a backdoor defense against an attack artefact and store the result.

    Prints the defense's numbers as JSON; the run also holds defense.json (and, for Neural
    Cleanse, a PNG of the recovered triggers and masks).
    """
    from trustlab.workflows.defend import run_defend

    run, out = run_defend(
        artefact, defense, epochs, data_root, device, seed, progress=show_progress(not quiet),
        options=json_object("--options", options),
    )  # fmt: skip
    typer.echo(json.dumps({"run": run.id, "dir": str(run.dir), **out}))
