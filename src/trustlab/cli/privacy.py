"""Privacy: ``mia`` (membership inference) and ``defend-privacy``."""

from __future__ import annotations

import contextlib
import json
from typing import Annotated

import typer

from trustlab.cli.common import (
    DeviceOpt,
    OptionsOpt,
    QuietOpt,
    RayAddressOpt,
    SeedOpt,
    chosen_executor,
    command,
    json_object,
)
from trustlab.errors import InputError
from trustlab.utils.progress import show_progress

AREA = "Privacy"


@command("mia", area=AREA)
def mia_cmd(
    run_ref: Annotated[
        str, typer.Argument(help="a finished `trustlab train` or `defend-privacy` run (its id).")
    ],
    attack: Annotated[str, typer.Option(help="{privacy-attacks}.")] = "lira",
    shadows: Annotated[int, typer.Option(help="shadow models (LiRA, RMIA, Shokri).")] = 16,
    offline: Annotated[
        bool,
        typer.Option(
            "--offline",
            help="the offline test: LiRA's one-sided test, RMIA's Pr(x) from OUT models.",
        ),
    ] = False,
    n: Annotated[
        int | None, typer.Option(help="members audited (and as many non-members).")
    ] = None,
    options: OptionsOpt = None,
    executor: Annotated[
        str | None,
        typer.Option(
            "--executor",
            help="where shadow models train: this process (default), local (one per core in "
            'worker processes) or ray (a Ray cluster; pip install "trustlab\\[ray]").',
        ),
    ] = None,
    ray_address: RayAddressOpt = None,
    device: DeviceOpt = "auto",
    seed: SeedOpt = 0,
    quiet: QuietOpt = False,
) -> None:
    """Membership inference against a training run; stores a mia run and prints its numbers.

    Members come from the run's training split, non-members from its test split; shadows are
    trained with the run's recipe and cached. A defend-privacy run is audited by threshold
    attacks only.
    """
    from trustlab.workflows.mia import run_mia

    if executor is None and ray_address is not None:
        raise InputError("--ray-address goes with --executor ray.")
    opts = json_object("--options", options, '{"gamma": 1}')
    with contextlib.ExitStack() as stack:
        ex = stack.enter_context(chosen_executor(executor, ray_address)) if executor else None
        run, result = run_mia(
            run_ref, attack, shadows, offline, n, device=device, seed=seed,
            progress=show_progress(not quiet), options=opts, executor=ex,
        )  # fmt: skip
    typer.echo(json.dumps({"run": run.id, "dir": str(run.dir), "attack": attack, **result.metrics}))


@command("defend-privacy", area=AREA)
def defend_privacy_cmd(
    run_ref: Annotated[str, typer.Argument(help="a finished `trustlab train` run (its id).")],
    defense: Annotated[str, typer.Option(help="{privacy-defenses}.")] = "jem",
    device: DeviceOpt = "auto",
    seed: SeedOpt = 0,
    quiet: QuietOpt = False,
) -> None:
    """Defend a training run against membership inference; stores the defended model as a run.

    The new run is laid out like a training run, so `trustlab mia NEW` audits it.
    """
    from trustlab.workflows.privacy_defense import run_privacy_defense

    run, result = run_privacy_defense(
        run_ref, defense, device=device, seed=seed, progress=show_progress(not quiet)
    )
    typer.echo(
        json.dumps({"run": run.id, "dir": str(run.dir), "defense": defense,
                    **result.report.accuracy})
    )  # fmt: skip
