"""What every command module of the CLI shares: the Typer app, the common options, the error
wrapper, help texts filled from the catalogue, and output that reads well anywhere.

Command modules import from here (never from the package ``__init__``), so the package imports
its command modules without an import cycle.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import re
import sys
import warnings
from collections.abc import Callable, Iterator
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from typer.core import TyperCommand, TyperGroup

from trustlab.errors import InputError
from trustlab.utils.format import NOT_APPLICABLE, format_value

__all__ = [
    "NOT_APPLICABLE",
    "DataRootOpt",
    "DeviceOpt",
    "ExecutorOpt",
    "FirstSeedOpt",
    "QuietOpt",
    "RayAddressOpt",
    "SeedOpt",
    "WorkersOpt",
    "app",
    "chosen_executor",
    "command",
    "err_console",
    "fill_names",
    "fmt",
    "handled",
    "warnings_shown",
    "print_metrics",
    "print_reproduction",
    "print_summary",
    "stdout",
]


@contextlib.contextmanager
def _flags_without_metavar(params: list[Any]) -> Iterator[None]:
    """Inside, flags (which take no value) show no ``<bool>`` placeholder in the help."""
    flags = [(p, p.metavar) for p in params if getattr(p, "is_flag", False)]
    for p, _ in flags:
        p.metavar = ""
    try:
        yield
    finally:
        for p, metavar in flags:
            p.metavar = metavar


class _FlagHelp:
    """Mixin of trustlab's command classes: ``--help`` and the other flags show no value
    placeholder."""

    def get_help_option(self, ctx: Any) -> Any:
        option = super().get_help_option(ctx)  # type: ignore[misc]
        if option is not None:
            option.metavar = ""
        return option


class _RootGroup(_FlagHelp, TyperGroup):
    """The root command group (``--version``, ``--help``)."""

    def format_help(self, ctx: Any, formatter: Any) -> None:
        with _flags_without_metavar(self.params):
            super().format_help(ctx, formatter)


app = typer.Typer(
    name="trustlab",
    cls=_RootGroup,
    help="Attack, defend and measure deep-learning models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
err_console = Console(stderr=True)

F = TypeVar("F", bound=Callable[..., Any])

DeviceOpt = Annotated[
    str, typer.Option("--device", help="auto (CUDA when available), cpu, cuda or cuda:N.")
]
SeedOpt = Annotated[int, typer.Option("--seed", help="random seed.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="no progress bars.")]
DataRootOpt = Annotated[str | None, typer.Option(help="folder holding the data files.")]
WorkersOpt = Annotated[
    int | None, typer.Option(help="parallel worker processes (default: CPU cores).")
]
FirstSeedOpt = Annotated[int, typer.Option("--seed", help="first seed.")]
ExecutorOpt = Annotated[
    str,
    typer.Option(
        "--executor",
        help="where the jobs run: local (this machine's worker processes, --workers of them) "
        "or ray (a Ray cluster, whose free CPUs and GPUs decide; pip install "
        '"trustlab\\[ray]").',
    ),
]
RayAddressOpt = Annotated[
    str | None,
    typer.Option(
        "--ray-address",
        help="the Ray cluster to join with --executor ray, e.g. HEAD:6379 (default: "
        "$TRUSTLAB_RAY_ADDRESS, else a local Ray started for the run).",
    ),
]

OptionsOpt = Annotated[
    str | None,
    typer.Option(
        "--options",
        help="the method's parameters as a JSON object, e.g. '{\"k\": 4}' (`trustlab list` "
        "shows each method's parameters and defaults).",
    ),
]


@contextlib.contextmanager
def chosen_executor(name: str, ray_address: str | None) -> Iterator[Any]:
    """``--executor`` and ``--ray-address`` as what ``reproduce(executor=...)`` takes: the name,
    or, with an address, the connected executor (closed on exit)."""
    from trustlab.utils.executor import make_executor

    if ray_address is None:
        make_executor(name).close()  # an unknown name or a missing Ray fails here, clearly
        yield name
        return
    with make_executor(name, address=ray_address) as ex:
        yield ex


def json_object(flag: str, text: str | None, example: str = '{"k": 4}') -> dict[str, Any]:
    """The JSON object a flag's ``text`` holds (``{}`` when empty); one clear error otherwise."""
    import json

    from trustlab.errors import InputError

    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(
            f"{flag} is not JSON ({exc.msg}); pass an object, e.g. '{example}'."
        ) from None
    if not isinstance(value, dict):
        raise InputError(f"{flag} must be a JSON object, got {type(value).__name__}.")
    return value


#: the width of output that is not a terminal (a file, a pipe, CI): wide enough for any table
PIPE_WIDTH = 10_000


# -- output --------------------------------------------------------------------------------------
def stdout() -> Console:
    """A console on the current standard output: the terminal's width on a terminal, else so wide
    that no table is cut (``trustlab reproduce X > log`` keeps every header and cell whole)."""
    tty = sys.stdout.isatty()
    return Console(width=None if tty else PIPE_WIDTH)


def fmt(v: Any) -> str:
    """One value of a table (:func:`trustlab.utils.format.format_value`)."""
    return format_value(v)


def print_metrics(title: str, metrics: dict[str, Any]) -> None:
    """A two-column table (metric, value) titled ``title``."""
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for k, v in metrics.items():
        table.add_row(k, fmt(v))
    stdout().print(table)


def print_summary(run: Any, summary: dict[str, Any]) -> None:
    """The metrics table of a finished training run, and its test accuracy."""
    print_metrics(f"run {run.id}: {run.status}", summary)
    out = stdout()
    acc = summary.get("test_accuracy")
    if acc is not None:
        out.print(f"test accuracy: {acc * 100:.2f}%  (run {run.id}, {run.dir})")


def print_reproduction(rep: Any) -> None:
    """A reproduction's table (``mean [lo, hi]``: the mean over seeds and its 95% bootstrap
    interval, ``—`` where a value does not apply), its claims with their verdicts (PASS, FAIL,
    INCONCLUSIVE) and its run folder."""
    from trustlab.experiments.base import get_experiment

    exp = get_experiment(rep.experiment)
    title = (
        f"{exp.title}: {rep.experiment} ({rep.preset.name}, {rep.preset.dataset}, "
        f"{rep.preset.model}, {rep.preset.seeds} seed(s))"
    )
    table = Table()
    cols, rows = rep.table.formatted(2, exp.percent)
    for c in cols:
        table.add_column(c, justify="left" if c in rep.table.keys else "right")
    for cells in rows:
        table.add_row(*cells)
    out = stdout()
    out.print(f"[bold]{title}[/]", highlight=False, soft_wrap=True)  # one line, never cut
    out.print(table)
    for c in rep.claims:
        colour = {"PASS": "green", "FAIL": "red"}.get(c.verdict, "yellow")
        mark = f"[bold {colour}]{c.verdict}[/]"
        out.print(f"{mark} {c.text}\n     {c.detail}", highlight=False, soft_wrap=True)
    if rep.run is not None:
        out.print(f"run {rep.run.id}: {rep.run.dir}")


# -- errors --------------------------------------------------------------------------------------
#: what an interrupted command says: only training runs and reproductions resume
INTERRUPTED = (
    "interrupted: the run is marked 'interrupted' (`trustlab runs` lists it). "
    "`trustlab resume <id>` continues a training run or a reproduction from where it stopped; "
    "run any other command again."
)


@contextlib.contextmanager
def warnings_shown() -> Iterator[None]:
    """Inside, a ``UserWarning`` (e.g. the trainer's collapse warning) is printed at once as one
    yellow line on stderr, not as Python's file:line report."""

    def show(message: Any, category: Any, *args: Any, **kwargs: Any) -> None:
        err_console.print(f"[yellow]warning: {message}[/yellow]", highlight=False, soft_wrap=True)

    with warnings.catch_warnings():
        warnings.simplefilter("always", UserWarning)
        warnings.showwarning = show
        yield


def handled(fn: F) -> F:
    """Turn trustlab's input errors into one ``error:`` line and exit code 2 (a diverged training
    run: exit 1; Ctrl-C: exit 130)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except InputError as exc:  # escaped: a message may hold brackets ("trustlab[ray]")
            err_console.print(
                f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True
            )
            raise typer.Exit(2) from None
        except FloatingPointError as exc:  # training diverged: a failed run, not bad input
            err_console.print(
                f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True
            )
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            err_console.print(INTERRUPTED, highlight=False, soft_wrap=True)
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


# -- help texts from the catalogue ---------------------------------------------------------------
# "{evasion}": every registered evasion attack; "{evasion:transfer}": those whose card has
# meta transfer=True; "{defenses:protocol=inspector}": meta protocol == "inspector".
_NAMES = re.compile(r"\{([a-z-]+)(?::([a-z_]+)(?:=([^{}]+))?)?\}")


def fill_names(text: str) -> str:
    """``text`` with each ``{kind}`` placeholder (a key of :data:`trustlab.registry.REGISTRIES`,
    optionally ``{kind:meta}`` or ``{kind:meta=value}``) replaced by the registered names,
    comma-separated. Loads those registries (imports their packages): call it only to show help.
    """
    from trustlab.registry import REGISTRIES

    def names(m: re.Match[str]) -> str:
        kind, key, value = m.groups()
        if kind not in REGISTRIES:
            return m.group(0)
        where: dict[str, Any] = {} if key is None else {key: True if value is None else value}
        return ", ".join(REGISTRIES[kind].names(**where))

    return _NAMES.sub(names, text)


def _reflow(text: str) -> str:
    """A docstring's paragraphs each on one line (the help formatter wraps them to the
    terminal; it would keep the docstring's own line breaks)."""
    paragraphs = inspect.cleandoc(text).split("\n\n")
    return "\n\n".join(" ".join(p.split()) for p in paragraphs)


class CatalogueCommand(_FlagHelp, TyperCommand):
    """A command whose help texts may name the catalogue's entries with ``{kind}`` placeholders,
    filled from the registries only when the help is shown (so running a command, ``trustlab
    runs`` or the root's ``--help`` never imports the method packages for it).

    Example::

        @app.command("attack", cls=CatalogueCommand)  # as :func:`command` registers them
        def attack(name: Annotated[str, typer.Option(help="{evasion}.")] = "pgd") -> None: ...
    """

    def format_help(self, ctx: Any, formatter: Any) -> None:
        saved = [(p, p.help) for p in self.params if getattr(p, "help", None)]
        own = self.help
        try:
            for p, text in saved:
                p.help = fill_names(text)
            if own:
                self.help = _reflow(fill_names(own))
            with _flags_without_metavar(self.params):
                super().format_help(ctx, formatter)
        finally:
            for p, text in saved:
                p.help = text
            self.help = own


def command(
    name: str, parent: typer.Typer | None = None, *, area: str | None = None, **kw: Any
) -> Callable[[F], F]:
    """Register ``fn`` as command ``name`` of ``parent`` (default: the root app), with catalogue
    placeholders in its help and trustlab's errors :func:`handled`; ``area`` is the panel that
    lists it in ``trustlab --help`` (the commands stay one verb each, as scripts call them)."""

    def deco(fn: F) -> F:
        if area is not None:
            kw["rich_help_panel"] = area
        (parent or app).command(name, cls=CatalogueCommand, **kw)(handled(fn))
        return fn

    return deco
