"""The one progress bar of trustlab: rich, shown only when asked for and on a terminal.

``with progress_bar("NC", 15, show) as bar: ... bar()`` (or ``bar.advance()``); ``bar.info(text)``
sets a text shown after the counter (e.g. the training loss). Disabled (a no-op that costs
nothing) unless ``enabled`` and stderr is a terminal, so ``--quiet``, pipes, log files and CI stay
silent.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import Any

__all__ = ["Bar", "progress_bar", "show_progress"]


def show_progress(enabled: bool = True) -> bool:
    """True when a bar asked for (``enabled``) would be shown: stderr is a terminal."""
    return bool(enabled) and sys.stderr.isatty()


class Bar:
    """A handle on one task of a progress bar; calling it advances the task by one.

    Made by :func:`progress_bar`; with no ``progress`` it is the no-op bar (``enabled`` False:
    nothing is shown and every method returns at once). ``advance(n)`` advances by ``n``,
    ``info(text)`` sets the text shown after the counter, ``reset(total, description)`` starts
    again.

    Args:
        progress: a ``rich.progress.Progress``; default None (the no-op bar).
        task: the task id in ``progress``; default None.

    Example:
        >>> with progress_bar("epochs", 3, enabled=False) as bar:
        ...     bar()
    """

    def __init__(self, progress: Any = None, task: Any = None) -> None:
        self._progress, self._task = progress, task

    @property
    def enabled(self) -> bool:
        """False for the no-op bar (nothing is shown)."""
        return self._progress is not None

    def advance(self, n: float = 1) -> None:
        if self._progress is not None:
            self._progress.advance(self._task, n)

    def __call__(self) -> None:
        self.advance(1)

    def info(self, text: str) -> None:
        if self._progress is not None:
            self._progress.update(self._task, info=text)

    def reset(self, total: int | None = None, description: str | None = None) -> None:
        """Start the task again (at 0), optionally with a new total and description."""
        if self._progress is not None:
            kw: dict[str, Any] = {"total": total}
            if description is not None:
                kw["description"] = description
            self._progress.reset(self._task, **kw)


@contextlib.contextmanager
def progress_bar(
    description: str, total: int, enabled: bool = True, *, eta: bool = False
) -> Iterator[Bar]:
    """A bar of ``total`` steps named ``description``; ``eta`` adds the time remaining."""
    if not show_progress(enabled):
        yield Bar()
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns: list[Any] = [
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
    ]
    if eta:
        columns.append(TimeRemainingColumn())
    with Progress(*columns) as progress:
        task = progress.add_task(description, total=total, info="")
        yield Bar(progress, task)
