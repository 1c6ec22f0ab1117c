"""A rich progress bar for long library loops, shown only when asked for and on a terminal."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator


@contextlib.contextmanager
def progress_bar(
    description: str, total: int, enabled: bool = True
) -> Iterator[Callable[[], None]]:
    """``with progress_bar("NC", 15, show) as advance: ... advance()``; a no-op unless
    ``enabled`` and stderr is a terminal (so ``--quiet``, pipes and CI stay silent)."""
    if not (enabled and sys.stderr.isatty()):
        yield lambda: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(),
    ) as bar:  # fmt: skip
        task = bar.add_task(description, total=total)
        yield lambda: bar.advance(task)
