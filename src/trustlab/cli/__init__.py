"""The ``trustlab`` command line: a thin layer over the library, one module per area.

- :mod:`~trustlab.cli.catalogue`: ``list``, ``datasets``, ``models``, ``experiments``;
- :mod:`~trustlab.cli.train`: ``train``, ``resume``, ``eval``;
- :mod:`~trustlab.cli.evasion`: ``attack``, ``evaluate``, ``advcam``, ``detect``, ``transfer``;
- :mod:`~trustlab.cli.backdoor`: ``backdoor``, ``defend``;
- :mod:`~trustlab.cli.privacy`: ``mia``, ``defend-privacy``;
- :mod:`~trustlab.cli.generative`: ``dpgan train``;
- :mod:`~trustlab.cli.inpaint`: ``inpaint train``, ``inpaint eval``;
- :mod:`~trustlab.cli.collab`: ``collab run``;
- :mod:`~trustlab.cli.reproduce`: ``reproduce``, ``bench backdoor``;
- :mod:`~trustlab.cli.runs`: ``runs``, ``show``, ``report``;
- :mod:`~trustlab.cli.audit`: ``audit``;
- :mod:`~trustlab.cli.dp_audit`: ``audit-dp``;
- :mod:`~trustlab.cli.submit`: ``submit``, ``benchmarks``;
- :mod:`~trustlab.cli.leaderboard`: ``leaderboard``.

Every command that computes takes ``--device auto|cpu|cuda`` and ``--seed`` (default 0). Bad
input prints one ``error:`` line naming the problem and the fix and exits with code 2; nothing is
written to the results store. The shared pieces (the app, options, error wrapper, printing) live
in :mod:`trustlab.cli.common`. Importing this package imports no torch: the commands import the
library when they run, and the help texts list the catalogue's names only when help is shown.
"""

from __future__ import annotations

from typing import Annotated

import typer

from trustlab.cli.common import app

# the command modules register their commands on the app, in this order in `trustlab --help`
# isort: off
from trustlab.cli import catalogue, train, evasion, backdoor, privacy  # noqa: F401
from trustlab.cli import generative, inpaint, collab, reproduce, runs  # noqa: F401
from trustlab.cli import audit, dp_audit, submit, leaderboard  # noqa: F401
# isort: on

__all__ = ["app", "main"]


def _version(value: bool) -> None:
    if value:
        from trustlab import __version__

        typer.echo(f"trustlab {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="show the version")
    ] = False,
) -> None:
    """Attack, defend and measure deep-learning models."""


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
