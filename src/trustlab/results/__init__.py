"""Results store: runs in SQLite plus one folder per run (see :mod:`trustlab.results.store`)."""

from trustlab.results.store import (
    DB_NAME,
    KINDS,
    SCHEMA_VERSION,
    STATUSES,
    Run,
    RunStore,
    git_info,
    package_versions,
    recording_outcome,
)

__all__ = [
    "DB_NAME",
    "KINDS",
    "SCHEMA_VERSION",
    "STATUSES",
    "Run",
    "RunStore",
    "git_info",
    "package_versions",
    "recording_outcome",
]
