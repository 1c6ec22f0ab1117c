"""Where trustlab keeps its files: ``$TRUSTLAB_HOME`` (default ``./runs``) and its ``cache``."""

from __future__ import annotations

import os
from pathlib import Path

from trustlab.errors import InputError


def not_a_folder(path: Path, variable: str) -> InputError:
    """The error for an environment variable that names a file where a folder belongs."""
    return InputError(
        f"{variable}={path} is a file, not a folder. Point {variable} at a folder "
        f"(e.g. export {variable}=$HOME/trustlab), or move the file aside."
    )


def trustlab_home() -> Path:
    """The results-store root: ``$TRUSTLAB_HOME`` or ``./runs`` (an empty variable counts as
    unset).

    Raises:
        InputError: ``$TRUSTLAB_HOME`` names an existing file rather than a folder.
    """
    path = Path(os.environ.get("TRUSTLAB_HOME") or "runs").expanduser()
    if path.exists() and not path.is_dir():
        raise not_a_folder(path, "TRUSTLAB_HOME")
    return path


def cache_root() -> tuple[Path, str]:
    """``(the cache folder, the variable that sets it)``: ``$TRUSTLAB_CACHE``, else
    ``$TRUSTLAB_HOME/cache``. Nothing is created."""
    root = os.environ.get("TRUSTLAB_CACHE")
    if root:
        path = Path(root).expanduser()
        if path.exists() and not path.is_dir():
            raise not_a_folder(path, "TRUSTLAB_CACHE")
        return path, "TRUSTLAB_CACHE"
    return trustlab_home() / "cache", "TRUSTLAB_HOME"


def cache_dir(*parts: str, create: bool = True) -> Path:
    """``$TRUSTLAB_CACHE/<parts>`` (default ``$TRUSTLAB_HOME/cache``), created on demand
    (``create=False``: only the path).

    Raises:
        InputError: the folder cannot be created (a read-only or missing place, a file in the
            way); the message names the variable to change.
    """
    base, variable = cache_root()
    path = base.joinpath(*parts)
    if create:
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InputError(
                f"cannot create the cache folder {path} ({exc.strerror or exc}); it comes from "
                f"{variable}. Set TRUSTLAB_CACHE to a writable folder (e.g. export "
                "TRUSTLAB_CACHE=$HOME/.cache/trustlab)."
            ) from None
    return path
