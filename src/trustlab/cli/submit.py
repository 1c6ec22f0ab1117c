"""The ``submit``-related commands of the evaluation platform (thin over the library):
``submit`` (score a defense or a model on a benchmark, sandboxed and cached) and ``benchmarks``
(list them)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from trustlab.cli.common import command, err_console, stdout

AREA = "Evaluation platform"


@command("submit", area=AREA)
def submit_cmd(
    benchmark: Annotated[
        str, typer.Option(help="the benchmark (see `trustlab benchmarks`), e.g. backdoor-quick.")
    ],
    defense: Annotated[
        str | None,
        typer.Option(help="a defense class: module:Name or path/to/file.py:Name."),
    ] = None,
    model: Annotated[
        str | None, typer.Option(help="a model's weights (safetensors) for a model benchmark.")
    ] = None,
    arch: Annotated[
        str | None,
        typer.Option(
            help="the model's class, file.py:Class or module:Class (with --model; "
            "omit it for a trustlab checkpoint)."
        ),  # fmt: skip
    ] = None,
    label: Annotated[
        str | None,
        typer.Option(
            help="its name on the leaderboard (default: the class name; for a model, the run "
            "id of a trustlab checkpoint or the file's stem). Not changed by a cache hit."
        ),
    ] = None,
    timeout: Annotated[
        float | None,
        typer.Option(help="wall-time limit in seconds (default: the benchmark's budget)."),
    ] = None,
    memory_mb: Annotated[
        int | None,
        typer.Option("--memory-mb", help="memory limit in MiB (default: the benchmark's)."),
    ] = None,
) -> None:
    """Score a defense or a model on a versioned benchmark, in a separate process with a time
    and memory limit; the result (or the failure and its reason) is recorded in the results
    store, and the same submission on the same benchmark version is evaluated only once."""
    from trustlab.errors import InputError
    from trustlab.platform.submissions import submit

    if (defense is None) == (model is None):
        raise InputError("give exactly one of --defense module:Name and --model FILE.")
    kind, ref = ("defense", defense) if defense is not None else ("model", model)
    assert ref is not None
    res = submit(ref, benchmark, kind=kind, arch=arch, label=label, timeout=timeout,
                 memory_mb=memory_mb, notify=lambda line: err_console.print(
                     escape(line) + " ...", highlight=False, soft_wrap=True))  # fmt: skip
    bench = res.benchmark
    out = stdout()
    where = f"run {res.run.id}"
    out.print(escape(f"{bench.name} v{bench.version} ({bench.short_hash}): {res.label}, {where}"))
    if res.cached:
        line = (f"cached: evaluated before as {res.label}, {where} (the same code on this "
                "benchmark version); nothing was run.")  # fmt: skip
        if label is not None and " ".join(label.split()) != res.label:
            line += (f" The label is not changed: --label {label} names a new evaluation only "
                     "(change the code to evaluate it again).")  # fmt: skip
        out.print(escape(line), highlight=False, soft_wrap=True)
    if not res.ok:
        why = escape(res.reason)
        err_console.print(
            f"[bold red]failed ({res.failure}):[/] {why}", highlight=False, soft_wrap=True
        )
        if res.traceback:
            err_console.print(res.traceback, highlight=False, soft_wrap=True, markup=False)
        err_console.print(f"recorded as {where} ({res.run.dir})", highlight=False)
        raise typer.Exit(1)
    table = Table()
    for col in ("metric", "mean", "95% interval", "better", "per seed"):
        table.add_column(col)
    for m in bench.metrics:
        if m.name not in res.scores:
            continue
        name, s = m.name, res.scores[m.name]
        star = " *" if name == res.primary else ""
        interval = "—" if s["lo"] is None or s["hi"] is None else f"[{s['lo']:.4f}, {s['hi']:.4f}]"
        mean = "—" if s["mean"] is None else f"{s['mean']:.4f}"
        values = ", ".join("—" if v is None else f"{v:.4f}" for v in s["values"])
        table.add_row(m.label + star, mean, interval, "higher" if m.higher_is_better else
                      "lower", values)  # fmt: skip
    out.print(table)
    out.print(escape(f"* primary metric. {res.wall_s:.1f} s of evaluation; {res.run.dir}"))


@command("benchmarks", area=AREA)
def benchmarks_cmd() -> None:
    """List the benchmarks: version, hash, what a submission is, budget."""
    from trustlab.platform.benchmarks import BENCHMARKS

    table = Table(title="benchmarks (trustlab submit --benchmark NAME)")
    for col in ("name", "version", "hash", "takes", "seeds", "budget", "description"):
        table.add_column(col)
    for card in BENCHMARKS:
        b = card.build()
        takes = "--defense module:Name" if b.takes == "defense" else "--model FILE --arch f.py:C"
        budget = ", ".join(f"{k}={v}" for k, v in b.budget.items())
        table.add_row(b.name, b.version, b.short_hash, takes, str(len(b.seeds)), budget,
                      b.description)  # fmt: skip
    stdout().print(table)
