"""The ``leaderboard``-related commands of the evaluation platform (thin over the library)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from trustlab.cli.common import command, stdout

AREA = "Evaluation platform"


@command("leaderboard", area=AREA)
def leaderboard_cmd(
    out: Annotated[
        Path, typer.Option("--out", help="the site's folder (replaced by each build).")
    ] = Path("site"),
    serve: Annotated[
        bool, typer.Option("--serve", help="serve it locally and rebuild it when results land.")
    ] = False,
    host: Annotated[str, typer.Option(help="address to serve on (with --serve).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to serve on (0: any free one).")] = 8000,
    poll: Annotated[
        float, typer.Option(help="seconds between checks for new results (with --serve).")
    ] = 2.0,
) -> None:
    """Build the leaderboard site from the results store ($TRUSTLAB_HOME): reproductions, the
    backdoor matrix, the robustness and privacy leaderboards (self-contained HTML, no external
    assets). With --serve, serve it at http://HOST:PORT/ and rebuild it when new results land;
    Ctrl-C stops."""
    from trustlab.platform.leaderboard import build_site
    from trustlab.platform.leaderboard import serve as serve_site
    from trustlab.results import RunStore

    console = stdout()
    if not serve:
        index = build_site(RunStore(), out)
        console.print(f"leaderboard: {index}", highlight=False, soft_wrap=True)
        return

    def ready(url: str) -> None:
        console.print(
            f"leaderboard: {out.absolute() / 'index.html'}\nserving {url} (rebuilt when new "
            "results land; Ctrl-C stops)",
            highlight=False,
            soft_wrap=True,
        )

    def event(line: str) -> None:
        console.print(line, highlight=False, soft_wrap=True)

    serve_site(RunStore(), out, host, port, poll, on_ready=ready, on_event=event)
    console.print("stopped", highlight=False)
