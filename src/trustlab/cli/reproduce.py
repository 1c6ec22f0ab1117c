"""Reproductions and benchmarks: ``reproduce`` and the ``bench`` group."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from trustlab.cli.common import (
    DataRootOpt,
    DeviceOpt,
    ExecutorOpt,
    FirstSeedOpt,
    QuietOpt,
    RayAddressOpt,
    WorkersOpt,
    app,
    chosen_executor,
    command,
    print_reproduction,
    stdout,
)
from trustlab.utils.progress import show_progress

AREA = "Reproductions and benchmarks"


@command("reproduce", area=AREA)
def reproduce_cmd(
    name: Annotated[str, typer.Argument(help="an experiment: {experiments}.")],
    preset: Annotated[str, typer.Option(help="smoke, quick, real or full.")] = "quick",
    dataset: Annotated[str | None, typer.Option(help="override the preset's dataset.")] = None,
    data_root: DataRootOpt = None,
    seeds: Annotated[int | None, typer.Option(help="number of seeds (default: preset's).")] = None,
    workers: WorkersOpt = None,
    device: DeviceOpt = "auto",
    seed: FirstSeedOpt = 0,
    quiet: QuietOpt = False,
    executor: ExecutorOpt = "local",
    ray_address: RayAddressOpt = None,
) -> None:
    """Reproduce a paper's headline claim: table with 95% intervals over seeds, a verdict per
    claim (PASS, FAIL, INCONCLUSIVE), exit 1 unless every claim passes."""
    from trustlab.experiments.base import reproduce

    with chosen_executor(executor, ray_address) as ex:
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
            executor=ex,
        )
    print_reproduction(rep)
    if not rep.passed:
        raise typer.Exit(1)


@command("reproductions", area=AREA)
def reproductions_cmd(
    preset: Annotated[
        str | None, typer.Option(help="only these presets, comma-separated (e.g. quick,real).")
    ] = None,
    all_runs: Annotated[
        bool, typer.Option("--all", help="every finished run, not only the newest of each.")
    ] = False,
    markdown: Annotated[bool, typer.Option(help="print a markdown table (for docs).")] = False,
    rejudge: Annotated[
        bool,
        typer.Option(help="check the claims again with today's code on each run's stored table."),
    ] = False,
) -> None:
    """The stored reproductions' results: per experiment and preset, each claim's verdict with
    its measured numbers and interval, the seeds, the wall time, the run and its commit."""
    from trustlab.experiments.results import reproduction_results, results_markdown

    presets = [p.strip() for p in preset.split(",") if p.strip()] if preset else None
    results = reproduction_results(latest=not all_runs, presets=presets, rejudge=rejudge)
    out = stdout()
    if markdown:
        out.print(results_markdown(results), markup=False, highlight=False, soft_wrap=True, end="")
        return
    if not results:
        out.print("no finished reproductions in the store (run: trustlab reproduce NAME)")
        return
    for r in results:
        out.print(
            f"[bold]{r.experiment}[/] {r.preset} ({r.dataset}, {r.model}, {r.seeds} seed(s)): "
            f"{r.wall}, run {r.run_id} ({r.commit or '?'}, {r.ended[:10]})"
            + (" (claims re-judged on the stored table)" if r.rejudged else ""),
            highlight=False,
            soft_wrap=True,
        )
        for c in r.claims:
            colour = {"PASS": "green", "FAIL": "red"}.get(c.verdict, "yellow")
            out.print(
                f"  [bold {colour}]{c.verdict}[/] {c.claim}: {c.detail}",
                highlight=False,
                soft_wrap=True,
            )


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
    executor: ExecutorOpt = "local",
    ray_address: RayAddressOpt = None,
) -> None:
    """The backdoor attack x defense matrix, stored cell by cell (`trustlab resume ID`).

    Prints the table and writes matrix.html into the run folder.
    """
    from trustlab.experiments.base import reproduce
    from trustlab.experiments.bench_backdoor import bench_options, matrix

    with chosen_executor(executor, ray_address) as ex:
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
            executor=ex,
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
