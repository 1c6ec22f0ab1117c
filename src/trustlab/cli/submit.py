"""The ``submit``-related commands of the evaluation platform (thin over the library):
``submit`` (score a defense or a model on a benchmark, sandboxed and cached) and ``benchmarks``
(list them)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from trustlab.cli.common import (
    RayAddressOpt,
    chosen_executor,
    command,
    err_console,
    stdout,
)

AREA = "Evaluation platform"


@command("submit", area=AREA)
def submit_cmd(
    benchmark: Annotated[
        str, typer.Option(help="the benchmark (see `trustlab benchmarks`), e.g. backdoor-quick.")
    ],
    defense: Annotated[
        list[str] | None,
        typer.Option(
            help="a defense class: module:Name or path/to/file.py:Name (repeat it to score "
            "several at once)."
        ),
    ] = None,
    model: Annotated[
        list[str] | None,
        typer.Option(
            help="a model's weights (safetensors) for a model benchmark (repeat it to score "
            "several at once)."
        ),
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
    executor: Annotated[
        str,
        typer.Option(
            "--executor",
            help="where the evaluations run: local (this machine, one per core) or ray (a Ray "
            "cluster; every node must see the submissions' files at the same paths; pip "
            'install "trustlab\\[ray]").',
        ),
    ] = "local",
    ray_address: RayAddressOpt = None,
) -> None:
    """Score a defense or a model on a versioned benchmark, in a separate process with a time
    and memory limit; the result (or the failure and its reason) is recorded in the results
    store, and the same submission on the same benchmark version is evaluated only once."""
    from trustlab.errors import InputError
    from trustlab.platform.submissions import submit

    if defense and model:
        raise InputError("give --defense module:Name or --model FILE, not both.")
    if not defense and not model:
        raise InputError("give a submission: --defense module:Name or --model FILE.")
    kind, refs = ("defense", defense) if defense else ("model", model)
    assert refs
    if len(refs) > 1 and label is not None:
        raise InputError("--label names one submission; drop it to score several at once.")
    if len(refs) > 1 or executor != "local" or ray_address is not None:
        _submit_several(
            refs, benchmark, kind, arch, label, timeout, memory_mb, executor, ray_address
        )
        return
    ref = refs[0]
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


def _submit_several(
    refs: list[str],
    benchmark: str,
    kind: str,
    arch: str | None,
    label: str | None,
    timeout: float | None,
    memory_mb: int | None,
    executor: str,
    ray_address: str | None,
) -> None:
    """Submissions on one benchmark evaluated as jobs of the executor (several at once, or one
    on a Ray cluster): one line each."""
    from trustlab.platform.submissions import submit_many

    with chosen_executor(executor, ray_address) as ex:
        results = submit_many(
            refs, benchmark, kind=kind, arch=arch, timeout=timeout, memory_mb=memory_mb,
            executor=ex, labels=[label] if label is not None else None,
            notify=lambda line: err_console.print(
                escape(line) + " ...", highlight=False, soft_wrap=True),
        )  # fmt: skip
    bench = results[0].benchmark
    table = Table(title=f"{bench.name} v{bench.version} ({bench.short_hash})")
    for col in ("submission", "label", "run", "status", "primary metric (mean [95% interval])"):
        table.add_column(col, overflow="fold")
    for ref, res in zip(refs, results, strict=True):
        status = "cached" if res.cached else ("finished" if res.ok else f"failed ({res.failure})")
        if res.ok:
            s = res.scores[res.primary]
            lo_hi = "" if s["lo"] is None or s["hi"] is None else f" [{s['lo']:.4f}, {s['hi']:.4f}]"
            value = f"{res.primary} {s['mean']:.4f}{lo_hi}" if s["mean"] is not None else "—"
        else:
            value = res.reason
        table.add_row(ref, res.label, str(res.run.id), status, value)
    stdout().print(table)
    if not all(r.ok for r in results):
        raise typer.Exit(1)


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
