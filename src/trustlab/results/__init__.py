"""Results store: runs in SQLite plus one folder per run (see :mod:`trustlab.results.store`);
:func:`run_report` / :func:`write_report`: a run's self-contained HTML page
(:mod:`trustlab.results.report`)."""

from trustlab.results.report import run_report, write_report
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
    "run_report",
    "write_report",
]
