"""Where trustlab keeps its files: ``$TRUSTLAB_HOME`` (default ``./runs``) and its ``cache``."""

from __future__ import annotations

import os
from pathlib import Path


def trustlab_home() -> Path:
    """The results-store root: ``$TRUSTLAB_HOME`` or ``./runs``."""
    return Path(os.environ.get("TRUSTLAB_HOME", "runs")).expanduser()


def cache_dir(*parts: str) -> Path:
    """``$TRUSTLAB_CACHE/<parts>`` (default ``$TRUSTLAB_HOME/cache``), created on demand."""
    root = os.environ.get("TRUSTLAB_CACHE")
    base = Path(root).expanduser() if root else trustlab_home() / "cache"
    path = base.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path
