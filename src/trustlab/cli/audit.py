"""`trustlab audit`: thin over :func:`~trustlab.workflows.audit.run_audit`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from trustlab.cli.common import (
    DataRootOpt,
    DeviceOpt,
    QuietOpt,
    SeedOpt,
    command,
    json_object,
    stdout,
    warnings_shown,
)
from trustlab.errors import InputError
from trustlab.utils.progress import show_progress

AREA = "Evaluation platform"
CHECK_NAMES = "clean, robustness, backdoor, privacy, detection"


@command("audit", area=AREA)
def audit_cmd(
    model: Annotated[
        str,
        typer.Argument(
            help="a run id, 'latest' (the newest finished training run), a trustlab checkpoint "
            "(.safetensors), or with --arch your own weights (.safetensors).",
            show_default=False,
        ),
    ],
    dataset: Annotated[
        str | None, typer.Option(help="{datasets} (default: the run's dataset).")
    ] = None,
    checks: Annotated[
        str | None, typer.Option(help=f"comma-separated checks (default all): {CHECK_NAMES}.")
    ] = None,
    arch: Annotated[
        str | None,
        typer.Option(help="your model's class, 'file.py:Class' or 'module:Class'."),
    ] = None,
    arch_kwargs: Annotated[
        str | None, typer.Option(help="JSON object of the class's arguments.")
    ] = None,
    eps: Annotated[
        str | None,
        typer.Option(help="L-inf radius of the attacks, e.g. 8/255 (default: the dataset's)."),
    ] = None,
    n: Annotated[
        int | None, typer.Option(help="at most this many examples per check (default: budgets).")
    ] = None,
    shadows: Annotated[
        int,
        typer.Option(help="LiRA shadow models (each a training run of the run's recipe; 0: off)."),
    ] = 0,
    out: Annotated[
        str | None,
        typer.Option(
            help="also write the HTML scorecard here: a file, or a folder (existing, or ending "
            "in /) that gets scorecard.html inside it."
        ),
    ] = None,
    data_root: DataRootOpt = None,
    name: Annotated[str | None, typer.Option(help="a label for the run.")] = None,
    device: DeviceOpt = "auto",
    seed: SeedOpt = 0,
    quiet: QuietOpt = False,
) -> None:
    """Audit a model: clean accuracy, worst-case robustness, a backdoor scan, membership
    inference and adversarial-input detection, each within a stated budget; stores the run with
    scorecard.json and scorecard.html and prints the summary and the page's path.

    Your own architecture: --arch my_net.py:MyNet --arch-kwargs '{"width": 16}' with its
    weights saved by safetensors.torch.save_file(model.state_dict(), "weights.safetensors").
    Pickle files (torch.save) are refused.
    """
    from trustlab.results.report import output_path
    from trustlab.workflows.audit import run_audit

    kw = json_object("--arch-kwargs", arch_kwargs, '{"width": 16}')
    if kw and arch is None:
        raise InputError("--arch-kwargs needs --arch (the class they are given to).")
    copy = None if out is None else output_path(out, "scorecard.html")
    with warnings_shown():
        run, card = run_audit(
            model,
            dataset,
            arch=arch,
            arch_kwargs=kw,
            checks=checks,
            eps=eps,
            n=n,
            shadows=shadows,
            data_root=data_root,
            out=out,
            device=device,
            seed=seed,
            progress=show_progress(not quiet),
            name=name,
        )
    if copy is not None and not _same_file_content(copy, run.dir / "scorecard.html"):
        copy = None  # the copy could not be written (run_audit warned; the audit is stored)
    print_scorecard(run, card, copy)


def _same_file_content(a: Path, b: Path) -> bool:
    try:
        return a.is_file() and a.read_bytes() == b.read_bytes()
    except OSError:
        return False


def print_scorecard(run: Any, card: Any, out: Path | None = None) -> None:
    """The summary table of a scorecard, its warnings and where the page is."""
    from trustlab.workflows.audit import HEADLINES

    table = Table(title=f"audit of {card.model} on {card.dataset} (run {run.id})")
    for col in ("check", "measure", "value", "status", "budget (or why not run)", "time"):
        table.add_column(col, justify="right" if col in ("value", "time") else "left")
    for s in card.sections.values():
        heads = HEADLINES.get(s.name, []) if s.status == "ok" else []
        if not heads:
            table.add_row(s.name, "—", "—", s.status, s.reason, f"{s.wall_s:.0f}s")
        for i, (label, key) in enumerate(heads):
            v = s.metrics.get(key)
            shown = f"{v:.4g}" if isinstance(v, float) else str(v)
            first = i == 0
            table.add_row(
                s.name if first else "",
                label,
                shown,
                s.status if first else "",
                s.budget_text if first else "",
                f"{s.wall_s:.0f}s" if first else "",
            )
    con = stdout()
    con.print(table)
    for w in card.warnings:
        con.print(f"[yellow]warning:[/yellow] {w}", highlight=False, soft_wrap=True)
    con.print(
        f"audit took {card.wall_s:.0f}s ({card.cpu_s:.0f}s CPU); run {run.id}: {run.dir}",
        highlight=False,
        soft_wrap=True,
    )
    con.print(f"scorecard: {run.dir / 'scorecard.html'}", highlight=False, soft_wrap=True)
    if out is not None:
        con.print(f"also written to: {out}", highlight=False, soft_wrap=True)
