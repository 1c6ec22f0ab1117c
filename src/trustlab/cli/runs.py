"""The results store: ``runs``, ``show`` and ``report``."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from trustlab.cli.common import command, fmt, stdout

AREA = "Results store"


@command("runs", area=AREA)
def runs_cmd(
    status: Annotated[
        str | None, typer.Option(help="running, finished, failed, interrupted.")
    ] = None,
    kind: Annotated[str | None, typer.Option(help="e.g. train, reproduce.")] = None,
    limit: Annotated[int, typer.Option(help="show at most this many (newest first).")] = 20,
) -> None:
    """List the runs in the results store ($TRUSTLAB_HOME, default ./runs)."""
    from trustlab.results import RunStore

    store = RunStore()
    runs = store.list(status=status, kind=kind, limit=limit)
    total = len(store.list(status=status, kind=kind))
    table = Table(title=f"runs ({len(runs)} of {total}, newest first)")
    for col in ("id", "kind", "name", "status", "created", "test acc"):
        table.add_column(col)
    for r in runs:
        acc = (r.summary or {}).get("test_accuracy")
        table.add_row(
            str(r.id),
            r.kind,
            r.name,
            r.status,
            r.created,
            f"{acc * 100:.2f}%" if isinstance(acc, float) else "",
        )
    stdout().print(table)


@command("show", area=AREA)
def show_cmd(
    run_id: Annotated[str, typer.Argument(help="the run's id.")],
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output.")] = False,
) -> None:
    """Show a run: status, config, summary and per-epoch metrics."""
    from trustlab.results import RunStore

    run = RunStore().get(run_id)
    metrics = run.metrics()
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "id": run.id,
                    "kind": run.kind,
                    "name": run.name,
                    "status": run.status,
                    "seed": run.seed,
                    "config": run.config,
                    "summary": run.summary,
                    "metrics": metrics,
                    "error": run.error,
                    "dir": str(run.dir),
                },
                default=str,
            )
        )
        return
    out = stdout()
    out.print(
        f"[bold]run {run.id}[/] {run.kind} {run.name!r}: {run.status} "
        f"(created {run.created}, seed {run.seed})\nfolder: {run.dir}"
    )
    if run.error:
        out.print(f"error: {run.error}")
    out.print("config: " + json.dumps(run.config, sort_keys=True, default=str), soft_wrap=True)
    if metrics:
        keys: list[str] = []
        for row in metrics:  # the union of keys, in first-seen order
            keys += [k for k in row if k != "phase" and k not in keys]
        table = Table(title="metrics")
        for k in keys:
            table.add_column(k, justify="right")
        for row in metrics:
            table.add_row(*(fmt(row.get(k, "")) for k in keys))
        out.print(table)
    if run.summary:
        out.print("summary: " + json.dumps(run.summary, sort_keys=True, default=str))


@command("report", area=AREA)
def report_cmd(
    run_id: Annotated[
        str,
        typer.Argument(
            help="the run's id (7, or run-000007), or 'latest' (the newest finished run)."
        ),
    ],
    out: Annotated[
        str | None,
        typer.Option(
            help="the HTML file to write, or a folder (existing, or ending in /) to get "
            "report.html inside it (default: report.html in the run's folder)."
        ),
    ] = None,
) -> None:
    """Write a run's report: one self-contained HTML page (curves, images, tables, claims)."""
    from trustlab.results import RunStore
    from trustlab.results.report import write_report

    store = RunStore()
    run = store.latest() if run_id == "latest" else store.get(run_id)
    path = write_report(run, out)
    typer.echo(str(path))
