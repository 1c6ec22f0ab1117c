"""Reproductions and benchmarks: ``reproduce`` and the ``bench`` group."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from trustlab.cli.common import (
    DataRootOpt,
    DeviceOpt,
    FirstSeedOpt,
    QuietOpt,
    WorkersOpt,
    app,
    command,
    print_reproduction,
    stdout,
)
from trustlab.utils.progress import show_progress

AREA = "Reproductions and benchmarks"


@command("reproduce", area=AREA)
def reproduce_cmd(
    name: Annotated[str, typer.Argument(help="an experiment: {experiments}.")],
    preset: Annotated[str, typer.Option(help="smoke, quick or full.")] = "quick",
    dataset: Annotated[str | None, typer.Option(help="override the preset's dataset.")] = None,
    data_root: DataRootOpt = None,
    seeds: Annotated[int | None, typer.Option(help="number of seeds (default: preset's).")] = None,
    workers: WorkersOpt = None,
    device: DeviceOpt = "auto",
    seed: FirstSeedOpt = 0,
    quiet: QuietOpt = False,
) -> None:
    """Reproduce a paper's headline claim: table with 95% intervals over seeds, a verdict per
    claim (PASS, FAIL, INCONCLUSIVE), exit 1 unless every claim passes."""
    from trustlab.experiments.base import reproduce

    rep = reproduce(
        name,
        preset,
        dataset=dataset,
        seeds=seeds,
        device=device,
        workers=workers,
        progress=show_progress(not quiet),
        seed=seed,
        data_root=data_root,
    )
    print_reproduction(rep)
    if not rep.passed:
        raise typer.Exit(1)


bench_app = typer.Typer(help="Benchmark matrices (stored, resumable runs).", no_args_is_help=True)
app.add_typer(bench_app, name="bench", rich_help_panel=AREA)


@command("backdoor", parent=bench_app)
def bench_backdoor_cmd(
    attacks: Annotated[
        str | None, typer.Option(help="comma-separated, of: {backdoors} (default: the preset's).")
    ] = None,
    defenses: Annotated[
        str | None, typer.Option(help="comma-separated, of: {defenses} (default: the preset's).")
    ] = None,
    dataset: Annotated[str | None, typer.Option(help="override the preset's dataset.")] = None,
    preset: Annotated[str, typer.Option(help="smoke or quick.")] = "quick",
    data_root: DataRootOpt = None,
    workers: WorkersOpt = None,
    device: DeviceOpt = "auto",
    seed: FirstSeedOpt = 0,
    quiet: QuietOpt = False,
) -> None:
    """The backdoor attack x defense matrix, stored cell by cell (`trustlab resume ID`).

    Prints the table and writes matrix.html into the run folder.
    """
    from trustlab.experiments.base import reproduce
    from trustlab.experiments.bench_backdoor import bench_options, matrix

    rep = reproduce(
        "bench-backdoor",
        preset,
        dataset=dataset,
        device=device,
        workers=workers,
        progress=show_progress(not quiet),
        seed=seed,
        data_root=data_root,
        options=bench_options(attacks, defenses),
    )
    header, lines = matrix(rep.table.rows)
    table = Table(title=f"bench backdoor ({rep.preset.name}, {rep.preset.dataset})")
    for h in header:
        table.add_column(h, overflow="fold")
    for line in lines:
        table.add_row(*line)
    out = stdout()
    out.print(table)
    if rep.run is not None:
        out.print(f"run {rep.run.id}: {rep.run.dir} (matrix.html, report.md, table.json)")
