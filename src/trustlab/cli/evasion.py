"""Evasion: ``attack``, ``evaluate``, ``advcam``, ``detect`` and ``transfer``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from trustlab.cli.common import (
    DataRootOpt,
    DeviceOpt,
    OptionsOpt,
    QuietOpt,
    SeedOpt,
    command,
    err_console,
    json_object,
)
from trustlab.errors import InputError

TargetArg = Annotated[str, typer.Argument(help="a run id or a model .safetensors file.")]
EpsOpt = Annotated[str, typer.Option(help="L-inf radius, e.g. 8/255.")]
DatasetOpt = Annotated[str | None, typer.Option(help="default: the run's dataset.")]
NOpt = Annotated[int, typer.Option(help="number of test points.")]


AREA = "Evasion and detection"


@command("attack", area=AREA)
def attack_cmd(
    target: TargetArg,
    attack: Annotated[str, typer.Option(help="{evasion}.")] = "pgd",
    eps: EpsOpt = "8/255",
    dataset: DatasetOpt = None,
    data_root: DataRootOpt = None,
    n: NOpt = 1000,
    png: Annotated[Path | None, typer.Option(help="also write the grid of examples here.")] = None,
    device: DeviceOpt = "auto",
    seed: SeedOpt = 0,
    options: OptionsOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Robust accuracy of a model under one attack; stored as a run with a PNG of examples.
    --options sets the attack's parameters, e.g. '{"norm": "l2"}' (Square, FAB-T, APGD) or
    '{"steps": 50}'."""
    from trustlab.utils.progress import show_progress
    from trustlab.workflows.evasion import run_attack

    run, out = run_attack(
        target, attack, eps, dataset, data_root, n, png, device, seed,
        progress=show_progress(not quiet),
        options=json_object("--options", options, '{"norm": "l2"}'),
    )  # fmt: skip
    typer.echo(json.dumps({"run": run.id, "dir": str(run.dir), **out}))


@command("evaluate", area=AREA)
def evaluate_cmd(
    target: TargetArg,
    suite: Annotated[str, typer.Option(help="{suites}.")] = "quick",
    eps: EpsOpt = "8/255",
    dataset: DatasetOpt = None,
    data_root: DataRootOpt = None,
    n: NOpt = 1000,
    device: DeviceOpt = "auto",
    seed: SeedOpt = 0,
    quiet: QuietOpt = False,
) -> None:
    """Worst-case robust accuracy over a suite of attacks (a cascade, as AutoAttack reports),
    after AutoAttack-style sanity checks of the model (a warning on stderr for each problem).
    The standard suite (AutoAttack) takes minutes per 1,000 points on a CPU; a bar shows each
    attack's time left."""
    from trustlab.utils.progress import show_progress
    from trustlab.workflows.evasion import run_evaluate

    run, out = run_evaluate(
        target, suite, eps, dataset, data_root, n, device, seed, progress=show_progress(not quiet)
    )
    for f in out["sanity"]:
        if not f["ok"]:
            err_console.print(
                f"[yellow]warning: sanity check {f['check']}:[/yellow] {f['message']}",
                highlight=False,
                soft_wrap=True,
            )
    typer.echo(json.dumps({"run": run.id, "dir": str(run.dir), **out}))


@command("advcam", area=AREA)
def advcam_cmd(
    target: TargetArg,
    png: Annotated[
        Path | None,
        typer.Option(help="also write the grid here (original, camouflaged, difference)."),
    ] = None,
    style: Annotated[
        str, typer.Option(help="a bundled photograph (chelsea, coffee, ...) or an image file.")
    ] = "chelsea",
    region: Annotated[
        float, typer.Option(help="side of the central region that may change.")
    ] = 0.6,
    steps: Annotated[int, typer.Option(help="Adam iterations.")] = 300,
    target_class: Annotated[
        int | None, typer.Option(help="targeted: the class to reach (default: untargeted).")
    ] = None,
    eot: Annotated[bool, typer.Option(help="expectation over physical transformations.")] = False,
    style_layers: Annotated[
        str | None, typer.Option(help="comma-separated layer names (default: the conv stages).")
    ] = None,
    content_layer: Annotated[str | None, typer.Option(help="default: the last stage.")] = None,
    dataset: DatasetOpt = None,
    data_root: DataRootOpt = None,
    n: Annotated[int, typer.Option(help="number of test images.")] = 8,
    device: DeviceOpt = "auto",
    seed: SeedOpt = 0,
) -> None:
    """Camouflage adversarial examples in a natural style (AdvCam); stored with a PNG grid."""
    from trustlab.workflows.evasion import run_advcam

    run, out = run_advcam(
        target, png, style, region, steps, target_class, eot, style_layers, content_layer,
        dataset, data_root, n, device, seed,
    )  # fmt: skip
    typer.echo(json.dumps({"run": run.id, "dir": str(run.dir), **out}))


@command("detect", area=AREA)
def detect_cmd(
    target: TargetArg,
    detector: Annotated[str, typer.Option(help="{detectors}.")] = "lid",
    attack: Annotated[str, typer.Option(help="the attack whose examples are detected.")] = "pgd",
    eps: EpsOpt = "8/255",
    transfer_attack: Annotated[
        str | None, typer.Option(help="test on this attack's examples (cross-attack transfer).")
    ] = None,
    classifier: Annotated[str, typer.Option(help="lr (logistic regression) or rf.")] = "lr",
    splits: Annotated[int, typer.Option(help="random 80/20 splits.")] = 3,
    dataset: DatasetOpt = None,
    data_root: DataRootOpt = None,
    n: Annotated[int, typer.Option(help="number of test points attacked.")] = 1000,
    device: DeviceOpt = "auto",
    seed: SeedOpt = 0,
) -> None:
    """Detection ROC-AUC of adversarial examples, per split and the mean.

    As the medical-imaging study measures it: successful attacks vs clean and noise-matched
    inputs. Attacks: {evasion}.
    """
    from trustlab.workflows.evasion import run_detect

    run, out = run_detect(
        target, detector, attack, eps, transfer_attack, classifier, splits, dataset, data_root,
        n, device, seed,
    )  # fmt: skip
    typer.echo(json.dumps({"run": run.id, "dir": str(run.dir), **out}))


@command(
    "transfer",
    area=AREA,
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
)
def transfer_cmd(
    ctx: typer.Context,
    source: Annotated[str, typer.Option(help="run id or model file the attack is crafted on.")],
    targets: Annotated[
        list[str],
        typer.Option(help="run ids or model files to test on: --targets 4 5 6 (or 4,5,6)."),
    ],
    attack: Annotated[str, typer.Option(help="{evasion:transfer}.")] = "sgm",
    eps: EpsOpt = "8/255",
    steps: Annotated[int, typer.Option(help="attack iterations.")] = 10,
    gamma: Annotated[float, typer.Option(help="SGM's residual-gradient decay.")] = 0.2,
    dataset: Annotated[str | None, typer.Option(help="default: the source run's dataset.")] = None,
    data_root: DataRootOpt = None,
    n: NOpt = 1000,
    name: Annotated[str | None, typer.Option(help="a name for the stored run.")] = None,
    device: DeviceOpt = "auto",
    seed: SeedOpt = 0,
) -> None:
    """Craft adversarial examples on SOURCE and report their success rate on each target.

    A target's rate counts the points that the source and that target both classify correctly;
    the result is stored as a run (kind transfer).
    """
    from trustlab.workflows.transfer import run_transfer, transfer_output

    extra = [a for a in ctx.args if a.startswith("-")]
    if extra:
        raise InputError(f"unknown option {extra[0]!r}; see trustlab transfer --help.")
    refs = [r for t in [*targets, *ctx.args] for r in t.split(",") if r]
    run, report = run_transfer(
        source, refs, attack, eps, steps, gamma, dataset, data_root, n, name, device, seed
    )
    typer.echo(json.dumps(transfer_output(run, report)))
