"""The results store: a SQLite database plus one folder per run (architecture, "Results store").

Layout under the store root (``$TRUSTLAB_HOME``, default ``./runs``)::

    trustlab.db            runs, per-step metrics, artefacts (SQLite, WAL journal)
    run-000007/            one folder per run: config.json, meta.json and the run's artefacts

A run records its kind (``"train"``, ``"reproduce"``, ...), name, config (JSON), seed, package
versions, git commit, per-step metrics, status, summary metrics, artefacts, the process that
runs it (pid, hostname, process start time) and its timestamps (UTC, ISO 8601).

Statuses: ``running`` -> ``finished`` | ``failed`` | ``interrupted``; ``failed`` and
``interrupted`` runs can be resumed with :meth:`Run.reopen` (back to ``running``). A ``finished``
run is never overwritten. A ``running`` run whose process is gone (or whose pid now belongs to
another process) is marked ``interrupted`` by :meth:`RunStore.mark_stale`, which
:meth:`RunStore.list` and :meth:`RunStore.get` call first, so that an interrupted run is never
mistaken for a live one. The allowed transitions, checked against the database (never a
handle's cached view) inside the write transaction:

============================  =====================  ========================================
method                        needs status           needs the owning process
============================  =====================  ========================================
``log_metrics``,              ``running``            no: threads, a forked child or other
``set_summary``,                                     ranks may write data to a live run
``add_artifact``
``finish``, ``fail``          ``running``            yes
``mark_interrupted``          any (no-op unless      yes, when ``running``
                              ``running``)
``reopen``                    not ``finished``       takes the run over (refused while its
                                                     owner is alive, unless ``force=True``)
============================  =====================  ========================================

The owner is the process that created or last reopened the run (same pid, host and process
start time). Only it may end the run, so that another process (a CLI holding a handle, a
forked worker inheriting one) cannot finish, fail or interrupt a run that is still training.
Logging is deliberately not restricted to the owner: forked children and threads of the
training process legitimately record metrics. A run whose owner died is marked
``interrupted`` by :meth:`RunStore.mark_stale`; :meth:`Run.reopen` then makes the caller its
owner.

Concurrency: several processes may share one store. A :class:`RunStore` keeps one connection
per process (``timeout=30``; shared by threads under a lock; a forked child opens its own), and
every operation is one short transaction (writes take the lock up front with ``BEGIN
IMMEDIATE``), so that reads see a consistent state and writers queue instead of failing. This
follows SQLite's advice for multi-process use (https://www.sqlite.org/wal.html,
https://www.sqlite.org/lockingv3.html); WAL needs a local file system (not NFS).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import operator
import os
import platform
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path, PurePath, PurePosixPath
from types import TracebackType
from typing import Any

from trustlab.errors import InputError
from trustlab.utils.io import write_json_atomic
from trustlab.utils.paths import not_a_folder, trustlab_home
from trustlab.utils.validate import check_int

__all__ = [
    "DB_NAME",
    "KINDS",
    "SCHEMA_VERSION",
    "STATUSES",
    "Run",
    "RunStore",
    "git_info",
    "package_versions",
]

SCHEMA_VERSION = 1
DB_NAME = "trustlab.db"
STATUSES = ("running", "finished", "failed", "interrupted")
#: The kinds of run trustlab's own workflows record (a store may hold others, made in Python).
#: Add a workflow's kind here when it starts recording runs.
KINDS = (
    "advcam", "attack", "audit", "backdoor", "collab", "defend", "defend-privacy", "detect",
    "dp-audit",
    "dpgan", "evaluate", "inpaint", "mia", "reproduce", "submission", "train", "transfer",
)  # fmt: skip
RESERVED_FILES = ("config.json", "meta.json")

_INT64 = (-(2**63), 2**63 - 1)
_RUN_DIR = re.compile(r"^run-(\d+)$")
_INHERITED: list[sqlite3.Connection] = []  # connections a forked child must neither use nor close

# Migrations: _MIGRATIONS[v] takes a database at user_version v to v + 1. Append, never edit.
_MIGRATIONS: list[list[str]] = [
    [
        """CREATE TABLE IF NOT EXISTS runs (
            id          INTEGER PRIMARY KEY AUTOINCREMENT,
            kind        TEXT NOT NULL,
            name        TEXT NOT NULL,
            status      TEXT NOT NULL
                        CHECK (status IN ('running', 'finished', 'failed', 'interrupted')),
            config      TEXT NOT NULL,
            seed        INTEGER,
            versions    TEXT NOT NULL,
            git_commit  TEXT,
            summary     TEXT NOT NULL DEFAULT '{}',
            error       TEXT,
            pid         INTEGER,
            hostname    TEXT,
            proc_start  TEXT,
            pid_ns      TEXT,
            attempt     INTEGER NOT NULL DEFAULT 1,
            created     TEXT NOT NULL,
            updated     TEXT NOT NULL,
            ended       TEXT
        )""",
        "CREATE INDEX IF NOT EXISTS runs_status ON runs (status)",
        "CREATE INDEX IF NOT EXISTS runs_kind ON runs (kind)",
        """CREATE TABLE IF NOT EXISTS metrics (
            run_id   INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
            phase    TEXT NOT NULL,
            step     INTEGER NOT NULL,
            data     TEXT NOT NULL,
            attempt  INTEGER NOT NULL,
            time     TEXT NOT NULL,
            PRIMARY KEY (run_id, phase, step)
        ) WITHOUT ROWID""",
        """CREATE TABLE IF NOT EXISTS artifacts (
            run_id   INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
            name     TEXT NOT NULL,
            kind     TEXT NOT NULL,
            size     INTEGER,
            sha256   TEXT,
            created  TEXT NOT NULL,
            PRIMARY KEY (run_id, name)
        ) WITHOUT ROWID""",
    ],
]
assert len(_MIGRATIONS) == SCHEMA_VERSION


# --------------------------------------------------------------------------------------------
# Small helpers: time, JSON, validation, process identity, versions, git
# --------------------------------------------------------------------------------------------


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _json_default(obj: Any) -> Any:
    """Accept 0-d NumPy/torch scalars and paths; refuse everything else JSON cannot encode."""
    if isinstance(obj, PurePath):
        return str(obj)
    if getattr(obj, "ndim", None) == 0 and callable(getattr(obj, "item", None)):
        return obj.item()
    hint = " (call .tolist() on arrays and tensors)" if hasattr(obj, "tolist") else ""
    raise TypeError(f"object of type {type(obj).__name__} is not JSON serialisable{hint}")


def _dumps(obj: Any, what: str, *, allow_nan: bool) -> str:
    try:
        return json.dumps(obj, sort_keys=True, allow_nan=allow_nan, default=_json_default)
    except (TypeError, ValueError) as exc:
        extra = "" if allow_nan else " and finite numbers"
        raise InputError(
            f"{what} cannot be stored as JSON: {exc}. Use only dicts with string keys, lists, "
            f"strings, numbers{extra}, booleans and None."
        ) from exc


def _check_mapping(obj: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(obj, Mapping):
        raise InputError(f"{what} must be a dict, got {type(obj).__name__}. Pass a dict.")
    bad = [k for k in obj if not isinstance(k, str)]
    if bad:
        raise InputError(f"{what} keys must be strings, got {bad[0]!r}. Use string keys.")
    return obj


def _check_label(what: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InputError(f"run {what} must be a non-empty string, got {value!r}.")
    return value


def _check_int64(what: str, value: Any, minimum: int | None = None, fix: str = "") -> int:
    """:func:`~trustlab.utils.validate.check_int`, plus SQLite's 64-bit integer range."""
    number = check_int(what, value, minimum=minimum, fix=fix)
    if not _INT64[0] <= number <= _INT64[1]:
        raise InputError(f"{what} {number} does not fit in 64 bits; use a smaller integer.")
    return number


def _check_metrics(metrics: Any) -> dict[str, int | float]:
    metrics = _check_mapping(metrics, "metrics")
    out: dict[str, int | float] = {}
    for key, value in metrics.items():
        if not key or key in ("step", "phase"):
            raise InputError(
                f"metric name {key!r} is reserved or empty; rename it (e.g. 'train_{key}')."
            )
        if isinstance(value, bool | str | bytes):
            raise InputError(f"metric {key!r} must be a number, got {value!r}.")
        try:
            out[key] = operator.index(value)
        except TypeError:
            try:
                out[key] = float(value)
            except (TypeError, ValueError, RuntimeError):
                raise InputError(
                    f"metric {key!r} must be a number (a float, int or 0-d tensor), got "
                    f"{type(value).__name__}. Log one number per name."
                ) from None
    return out


def _check_artifact_name(name: Any) -> str:
    if not isinstance(name, str | PurePath) or not str(name).strip():
        raise InputError(f"artefact name must be a non-empty relative path, got {name!r}.")
    rel = PurePosixPath(str(name).replace("\\", "/"))
    if rel.is_absolute() or ".." in rel.parts or str(rel) in ("", "."):
        raise InputError(
            f"artefact name {str(name)!r} must be a relative path inside the run folder "
            "(no leading '/', no '..'), e.g. 'checkpoints/model.safetensors'."
        )
    if str(rel) in RESERVED_FILES:
        raise InputError(
            f"{rel} is written by the results store itself; pick another artefact name."
        )
    return str(rel)


def _proc_stat(pid: int) -> list[str] | None:
    """Fields 3.. of ``/proc/<pid>/stat`` (index 0: state, index 19: start time), or None."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (OSError, ValueError):
        return None
    # Field 2 (the command name) is parenthesised and may itself contain spaces and ')'.
    return text[text.rfind(")") + 2 :].split()


def _process_start(pid: int) -> str | None:
    """The process start time in clock ticks after boot (``proc(5)``, stat field 22)."""
    fields = _proc_stat(pid)
    return fields[19] if fields is not None and len(fields) > 19 else None


def _pid_namespace() -> str | None:
    try:
        return os.readlink("/proc/self/ns/pid")
    except (OSError, AttributeError):
        return None


def _process_alive(pid: int | None, start: str | None) -> bool:
    """Whether ``pid`` is a live process on this host that started at ``start`` (when known)."""
    if pid is None or pid <= 0:
        return False
    if os.name == "nt":  # os.kill(pid, 0) would terminate the process on Windows
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, under another user
    except OSError:
        return True  # cannot tell: leave the run alone
    fields = _proc_stat(pid)
    if fields is not None:
        if fields[0] in ("Z", "X", "x"):  # zombie / dead: it will never finish the run
            return False
        if start is not None and len(fields) > 19 and fields[19] != start:
            return False  # the pid was reused by another process
    return True


def _identity() -> dict[str, Any]:
    pid = os.getpid()
    return {
        "pid": pid,
        "hostname": socket.gethostname(),
        "proc_start": _process_start(pid),
        "pid_ns": _pid_namespace(),
    }


def _owns(row: Mapping[str, Any] | sqlite3.Row, ident: Mapping[str, Any]) -> bool:
    """Whether the run recorded in ``row`` belongs to the process ``ident`` describes: the same
    pid, host and process start time (a forked child or a reused pid differs)."""
    return all(row[k] == ident[k] for k in ("pid", "hostname", "proc_start"))


@functools.cache
def _installed_version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def _version_of(module: str) -> str:
    loaded = sys.modules.get(module)
    version = getattr(loaded, "__version__", None) if loaded is not None else None
    return str(version) if version else _installed_version(module)


def package_versions() -> dict[str, str]:
    """Versions recorded with every run: python, torch, numpy, trustlab and the platform.

    Read from the already imported modules when they are loaded (``torch.__version__`` includes
    the build, e.g. ``+cpu``), else from the installed distributions' metadata, so that creating
    a run never imports torch.
    """
    return {
        "python": platform.python_version(),
        "torch": _version_of("torch"),
        "numpy": _version_of("numpy"),
        "trustlab": _version_of("trustlab"),
        "platform": platform.platform(),
    }


def _git(git: str, cwd: Path, *args: str) -> str | None:
    try:
        out = subprocess.run(
            [git, "-C", str(cwd), *args],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def git_info() -> dict[str, Any] | None:
    """``{"commit", "dirty", "repo"}`` of the working directory's git repository, else of the
    repository trustlab is installed from; None when neither is one or git is missing. Never
    raises. Looked up afresh for every run (a notebook may commit between runs)."""
    git = shutil.which("git")
    if git is None:
        return None
    try:
        places = [Path.cwd()]
    except OSError:  # the working directory was deleted
        places = []
    for where in [*places, Path(__file__).resolve().parent]:
        commit = _git(git, where, "rev-parse", "HEAD")
        if commit and re.fullmatch(r"[0-9a-f]{40,64}", commit):
            status = _git(git, where, "status", "--porcelain", "--untracked-files=no")
            return {
                "commit": commit,
                "dirty": None if status is None else bool(status),
                "repo": _git(git, where, "rev-parse", "--show-toplevel"),
            }
    return None


def _hash_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# --------------------------------------------------------------------------------------------
# The store
# --------------------------------------------------------------------------------------------


class RunStore:
    """Runs in a SQLite database ``<root>/trustlab.db`` with one folder per run ``<root>/run-N``.

    Several processes may share one store (one connection per process, one short transaction per
    operation; see the module docstring). :meth:`create_run` starts a :class:`Run`; :meth:`get` and
    :meth:`list` read them back after :meth:`mark_stale`.

    A store whose folder or database this process cannot write (a read-only mount, another
    user's files) is opened read-only: its runs are still listed and shown, and anything that
    would write raises :class:`InputError` naming the folder and the fix. A damaged database
    (:meth:`check` runs SQLite's ``quick_check`` before the first write) raises
    :class:`InputError` too, instead of handing out runs or run ids made of garbage.

    Args:
        root: the store folder; default None (:func:`trustlab.utils.paths.trustlab_home`:
            ``$TRUSTLAB_HOME``, else ``./runs``). Nothing is created until the first run is:
            listing an empty or missing store returns ``[]`` and leaves no file behind.
        readonly: True opens the database read-only (SQLite ``mode=ro``): reading works,
            writing raises InputError; False always opens it for writing; default None: read-only
            exactly when the folder or the database is not writable by this process.

    Example:
        >>> store = RunStore("runs")
        >>> store.run_dir(7).name
        'run-000007'
        >>> RunStore("runs", readonly=True).readonly  # lists and shows runs, never writes
        True
    """

    def __init__(
        self, root: str | os.PathLike[str] | None = None, *, readonly: bool | None = None
    ) -> None:
        if readonly is not None and not isinstance(readonly, bool):
            raise InputError(f"readonly must be True, False or None, got {readonly!r}.")
        self._from_env = root is None
        self.root = Path(root).expanduser() if root is not None else trustlab_home()
        self.db_path = self.root / DB_NAME
        self._readonly_arg = readonly
        self._ready = False
        self._checked = False
        self._conn: sqlite3.Connection | None = None
        self._conn_pid = 0
        self._conn_readonly = False
        self._lock = threading.RLock()

    @property
    def readonly(self) -> bool:
        """Whether this store is (or will be) opened read-only; see the ``readonly`` argument."""
        if self._readonly_arg is not None:
            return self._readonly_arg
        return self._unwritable() is not None

    def _unwritable(self) -> str | None:
        """Why this process cannot write the existing store (None: it can, or it is new)."""
        if not self.db_path.exists():
            return None
        for path in (self.root, self.db_path):
            if not os.access(path, os.W_OK):
                return f"{path} is not writable"
        return None

    def _name(self) -> str:
        """The store folder, with the variable that chose it."""
        return f"{self.root} (TRUSTLAB_HOME)" if self._from_env else str(self.root)

    def _readonly_error(self, why: str | None = None) -> InputError:
        if why is None:
            if self._readonly_arg:
                why = "opened with readonly=True"
            else:
                why = self._unwritable() or "not writable"
        return InputError(
            f"the results store {self._name()} is read-only ({why}): its runs can be listed "
            "and shown, but no run can be recorded or changed there. Set TRUSTLAB_HOME to a "
            f"writable folder (e.g. export TRUSTLAB_HOME=$HOME/trustlab-runs), or make {self.root} "
            "and its trustlab.db writable."
        )

    def _damaged_error(self, detail: object) -> InputError:
        if "not a database" in str(detail):
            what = f"{self.db_path} is not a trustlab results database ({detail})"
        else:
            what = f"{self.db_path} is damaged: {detail}"
        return InputError(
            f"{what}. Move it aside (e.g. mv trustlab.db trustlab.db.damaged; new runs then "
            "start after the existing run folders) or restore it from a backup (`sqlite3 "
            "trustlab.db .recover` may rescue its rows); or point TRUSTLAB_HOME at another "
            "folder."
        )

    def _check_root(self) -> None:
        if self.root.exists() and not self.root.is_dir():
            if self._from_env:
                raise not_a_folder(self.root, "TRUSTLAB_HOME")
            raise InputError(
                f"the results store {self.root} is a file, not a folder; pass a folder."
            )

    def check(self) -> None:
        """Check the database's structure (SQLite ``PRAGMA quick_check``); run once per store
        before its first write.

        Raises:
            InputError: the database is damaged (the message says how to recover).
        """
        if not self._ensure_schema(create=False):
            return
        try:
            with self._lock:
                rows = self._connection().execute("PRAGMA quick_check").fetchall()
        except sqlite3.DatabaseError as exc:
            raise self._damaged(exc) from exc
        problems = [str(r[0]) for r in rows if str(r[0]) != "ok"]
        if problems:
            first = problems[0].replace("*** in database main ***", "").strip().splitlines()
            raise self._damaged_error(
                f"SQLite's quick_check found {first[0] if first else problems[0]!r}"
            )
        self._checked = True

    def _damaged(self, exc: BaseException) -> InputError:
        self.close()
        return self._damaged_error(exc)

    def __repr__(self) -> str:
        return f"RunStore({str(self.root)!r})"

    def run_dir(self, run_id: int) -> Path:
        """The folder of run ``run_id``: ``<root>/run-{id:06d}``."""
        return self.root / f"run-{run_id:06d}"

    # -- connections ------------------------------------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        """This process's connection (one per store, shared by its threads under a lock).

        Kept open because closing the last connection checkpoints the WAL (milliseconds per
        operation). A connection inherited through ``fork`` is never used nor closed by the
        child (SQLite forbids it, https://www.sqlite.org/howtocorrupt.html section 2.6): the
        child opens its own. A read-only store is opened with SQLite's ``mode=ro``.
        """
        if self._conn is not None and self._conn_pid == os.getpid():
            return self._conn
        if self._conn is not None:
            _INHERITED.append(self._conn)  # keep it referenced so that it is never closed here
            self._conn = None
        readonly = self.readonly
        try:
            if readonly:
                conn = self._open_readonly()
            else:
                conn = sqlite3.connect(
                    self.db_path, timeout=30, isolation_level=None, check_same_thread=False
                )
                conn.execute("PRAGMA synchronous = NORMAL")  # durable in WAL mode, much faster
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA foreign_keys = ON")
        except sqlite3.OperationalError as exc:
            raise self._translate(exc) from exc
        except sqlite3.DatabaseError as exc:
            if type(exc) is not sqlite3.DatabaseError:
                raise
            raise self._damaged(exc) from exc
        self._conn, self._conn_pid, self._conn_readonly = conn, os.getpid(), readonly
        return conn

    def _open_readonly(self) -> sqlite3.Connection:
        """Open the database with ``mode=ro``. Reading a WAL database needs its ``-shm`` file;
        in a read-only folder without one, the database is read as ``immutable`` (nobody can
        write it there either)."""
        uri = self.db_path.resolve().as_uri()
        for options in ("mode=ro", "mode=ro&immutable=1"):
            conn = sqlite3.connect(
                f"{uri}?{options}",
                uri=True,
                timeout=30,
                isolation_level=None,
                check_same_thread=False,
            )
            try:
                conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
            except sqlite3.OperationalError:
                conn.close()
                if "immutable" in options:
                    raise
                continue
            return conn
        raise AssertionError("unreachable")

    def _translate(self, exc: sqlite3.OperationalError) -> BaseException:
        """An InputError for the operational errors a person can fix (a read-only or missing
        place, damaged text); other errors (a lock held too long) are returned as they are."""
        text = str(exc).lower()
        if "readonly" in text or "read-only" in text or "unable to open" in text:
            self.close()
            return self._readonly_error(str(exc))
        if "could not decode" in text or "malformed" in text:
            return self._damaged(exc)
        return exc

    def close(self) -> None:
        """Close this process's connection (reopened on the next operation)."""
        with self._lock:
            if self._conn is not None and self._conn_pid == os.getpid():
                self._conn.close()
            self._conn = None

    def _run_folders(self) -> list[str]:
        try:
            return sorted(p.name for p in self.root.iterdir() if _RUN_DIR.match(p.name))
        except OSError:
            return []

    def _refuse_empty_database(self, conn: sqlite3.Connection) -> None:
        """An existing database without tables next to run folders was truncated or replaced:
        re-creating the schema would hide those runs, so refuse."""
        if conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()[0]:
            return
        folders = self._run_folders()
        if not folders:
            return
        shown = ", ".join(folders[:3]) + (", ..." if len(folders) > 3 else "")
        raise InputError(
            f"{self.db_path} is empty (no tables) but {self.root} holds {len(folders)} run "
            f"folder(s) ({shown}): the database was truncated or replaced, and a new one would "
            "hide those runs. Restore trustlab.db from a backup; or move it aside (e.g. mv "
            f"{self.db_path} {self.db_path}.empty) to start a new database whose runs are "
            "numbered after the existing folders."
        )

    def _ensure_schema(self, create: bool) -> bool:
        """Create or migrate the schema; False when the database does not exist (and
        ``create`` is False) or, read-only, holds no tables.

        Raises:
            InputError: the store folder is a file, cannot be created or (``create``) written;
                the database is not one, is damaged, newer, or empty next to run folders.
        """
        if self._ready:
            if create and self._conn_readonly:
                raise self._readonly_error()
            return True
        self._check_root()
        existed = self.db_path.exists()
        if not existed:
            if not create:
                return False
            if self._readonly_arg:
                raise self._readonly_error()
            try:
                self.root.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise InputError(
                    f"cannot create the results store {self._name()} ({exc.strerror or exc}). "
                    "Set TRUSTLAB_HOME to a folder you can write (e.g. export "
                    "TRUSTLAB_HOME=$HOME/trustlab-runs)."
                ) from None
            if not os.access(self.root, os.W_OK):
                raise self._readonly_error(f"{self.root} is not writable")
        elif create and self.readonly:
            raise self._readonly_error()
        try:
            with self._lock:
                conn = self._connection()
                version = conn.execute("PRAGMA user_version").fetchone()[0]
                if version < SCHEMA_VERSION and self._conn_readonly:
                    self._refuse_empty_database(conn)
                    if (
                        version == 0
                        and not conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()[0]
                    ):
                        return False  # an empty database: no runs (and nothing to write)
                    raise self._readonly_error(
                        f"its schema {version} needs upgrading to {SCHEMA_VERSION}"
                    )
                if version < SCHEMA_VERSION:
                    if existed:  # before anything is written (the WAL switch writes a header)
                        self._refuse_empty_database(conn)
                    mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
                    if str(mode).lower() != "wal":
                        with contextlib.suppress(sqlite3.OperationalError):
                            conn.execute("PRAGMA journal_mode = WAL")
                    with self._transaction(write=True):
                        if existed:
                            self._refuse_empty_database(conn)
                        version = conn.execute("PRAGMA user_version").fetchone()[0]
                        for step in range(version, SCHEMA_VERSION):
                            for statement in _MIGRATIONS[step]:
                                conn.execute(statement)
                        if version < SCHEMA_VERSION:
                            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION:d}")
        except sqlite3.OperationalError as exc:
            raise self._translate(exc) from exc
        except sqlite3.DatabaseError as exc:
            if type(exc) is not sqlite3.DatabaseError:  # integrity, ...: not ours to hide
                raise
            raise self._damaged(exc) from exc
        if version > SCHEMA_VERSION:
            raise InputError(
                f"{self.db_path} was written by a newer trustlab (store schema {version}, this "
                f"one reads up to {SCHEMA_VERSION}). Upgrade trustlab, or use another "
                "TRUSTLAB_HOME."
            )
        self._ready = True
        return True

    @contextlib.contextmanager
    def _transaction(self, write: bool) -> Iterator[sqlite3.Connection]:
        """One short transaction: ``BEGIN IMMEDIATE`` takes the database's write lock up front
        (waiting up to 30 s for it), so read-check-write sequences are atomic across processes;
        a read transaction sees one consistent snapshot. Rolled back on any exception.

        A write on a read-only store raises InputError; the first write of this store checks
        the database (:meth:`check`). SQLite's errors for a damaged or unwritable database
        become InputErrors saying what to do."""
        with self._lock:
            conn = self._connection()
            if write and self._conn_readonly:
                raise self._readonly_error()
            if write and self._ready and not self._checked:
                self.check()
            try:
                if conn.in_transaction:  # left over by an interrupted operation
                    conn.execute("ROLLBACK")
                conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
                try:
                    yield conn
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        with contextlib.suppress(sqlite3.Error):
                            conn.execute("ROLLBACK")
                    raise
            except sqlite3.OperationalError as exc:
                raise self._translate(exc) from exc
            except sqlite3.DatabaseError as exc:
                if type(exc) is not sqlite3.DatabaseError:  # integrity, ...: not ours to hide
                    raise
                raise self._damaged(exc) from exc

    def _row(self, conn: sqlite3.Connection, run_id: int) -> sqlite3.Row | None:
        return conn.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()

    # -- runs -------------------------------------------------------------------------------

    def create_run(
        self, kind: str, name: str, config: Mapping[str, Any], seed: int | None = None
    ) -> Run:
        """Start a new run (status ``running``, owned by this process).

        The database row, the folder ``run-{id:06d}`` and its ``config.json`` and ``meta.json``
        appear together or not at all: the folder is assembled under a temporary name and
        renamed into place inside the transaction that inserts the row.

        Raises:
            InputError: ``kind``/``name`` empty, ``config`` not a dict of JSON values (NaN and
                infinities are refused), ``seed`` not a 64-bit integer. Nothing is written.
        """
        kind = _check_label("kind", kind)
        name = _check_label("name", name)
        config_json = _dumps(_check_mapping(config, "config"), "config", allow_nan=False)
        seed = None if seed is None else _check_int64("seed", seed)
        self._ensure_schema(create=True)

        versions = package_versions()
        git = git_info()
        ident = _identity()
        now = _now()
        columns = (
            "kind, name, status, config, seed, versions, git_commit, summary, pid, hostname, "
            "proc_start, pid_ns, attempt, created, updated"
        )
        values = (
            kind, name, "running", config_json, seed, json.dumps(versions, sort_keys=True),
            git["commit"] if git else None, "{}", ident["pid"], ident["hostname"],
            ident["proc_start"], ident["pid_ns"], 1, now, now,
        )  # fmt: skip
        marks = ", ".join("?" * len(values))

        final: Path | None = None
        try:
            with self._transaction(write=True) as conn:
                cur = conn.execute(f"INSERT INTO runs ({columns}) VALUES ({marks})", values)
                run_id = int(cur.lastrowid or 0)
                self._check_new_id(conn, run_id)
                if self.run_dir(run_id).exists():
                    # A folder without a row (e.g. the database was deleted): never reuse it.
                    conn.execute("DELETE FROM runs WHERE id = ?", (run_id,))
                    run_id = max(run_id, self._max_folder_id()) + 1
                    conn.execute(
                        f"INSERT INTO runs (id, {columns}) VALUES (?, {marks})", (run_id, *values)
                    )
                meta = {
                    "id": run_id,
                    "kind": kind,
                    "name": name,
                    "seed": seed,
                    "versions": versions,
                    "git": git,
                    **ident,
                    "created": now,
                    "resumes": [],
                    "schema": SCHEMA_VERSION,
                }
                final = self._make_run_dir(run_id, json.loads(config_json), meta)
        except BaseException:  # the row was rolled back (or never written): drop the folder
            if final is not None:
                shutil.rmtree(final, ignore_errors=True)
            raise
        with self._transaction(write=False) as conn:
            row = self._row(conn, run_id)
        assert row is not None
        return Run(self, row)

    def _check_new_id(self, conn: sqlite3.Connection, run_id: int) -> None:
        """Refuse an id past every stored run and run folder: the store never skips ids, so
        its run counter was damaged (or runs were deleted by hand)."""
        newest = conn.execute("SELECT MAX(id) FROM runs WHERE id != ?", (run_id,)).fetchone()[0]
        if run_id <= int(newest or 0) + 1:  # the usual case: no folder scan under the lock
            return
        newest = max(int(newest or 0), self._max_folder_id())
        if run_id > newest + 1:
            raise InputError(
                f"{self.db_path} looks damaged: its run counter gives the next run the id "
                f"{run_id}, but the newest run is {newest}. If you deleted runs by hand, reset "
                f'the counter (sqlite3 {self.db_path} "UPDATE sqlite_sequence SET seq = '
                f"{newest} WHERE name = 'runs'\"); otherwise move the database aside or "
                "restore it from a backup."
            )

    def _max_folder_id(self) -> int:
        return max((int(_RUN_DIR.match(n).group(1)) for n in self._run_folders()), default=0)

    def _make_run_dir(self, run_id: int, config: dict[str, Any], meta: dict[str, Any]) -> Path:
        final = self.run_dir(run_id)
        tmp = self.root / f".{final.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
        try:
            tmp.mkdir(parents=True)
            write_json_atomic(tmp / "config.json", config)
            write_json_atomic(tmp / "meta.json", meta)
            os.rename(tmp, final)  # fails rather than merge if `final` appeared meanwhile
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return final

    @staticmethod
    def parse_id(run_id: int | str) -> int:
        """``7``, ``"7"`` or ``"run-000007"`` -> ``7``; anything else raises InputError."""
        if isinstance(run_id, str):
            text = run_id.strip()
            match = _RUN_DIR.match(text)
            if match:
                text = match.group(1)
            if text.isdigit() and text.isascii():
                return int(text)
        elif not isinstance(run_id, bool):
            with contextlib.suppress(TypeError):
                number = operator.index(run_id)
                if number >= 0:
                    return number
        raise InputError(
            f"{run_id!r} is not a run id; use a number such as 7, '7' or 'run-000007'."
        )

    def get(self, run_id: int | str) -> Run:
        """The run with this id (``7``, ``"7"`` or ``"run-000007"``), after :meth:`mark_stale`.

        Raises:
            InputError: the id is malformed or no such run exists in this store.
        """
        number = self.parse_id(run_id)
        row = None
        if self._ensure_schema(create=False):
            self._mark_stale_quietly()
            with self._transaction(write=False) as conn:
                row = self._row(conn, number)
        if row is None:
            raise InputError(
                f"no run {number} in the results store {self.root}. List the runs with "
                "`trustlab runs` (or RunStore.list()), or set TRUSTLAB_HOME to the store "
                "that holds it."
            )
        return self._as_run(row)

    def _as_run(self, row: sqlite3.Row) -> Run:
        try:
            return Run(self, row)
        except (ValueError, TypeError, KeyError) as exc:  # a row made of garbage
            raise self._damaged_error(f"run {row['id']} cannot be read ({exc})") from exc

    def kinds(self) -> list[str]:
        """The run kinds :meth:`list` accepts: :data:`KINDS` and every kind in this store."""
        found: set[str] = set()
        if self._ensure_schema(create=False):
            with self._transaction(write=False) as conn:
                found = {r[0] for r in conn.execute("SELECT DISTINCT kind FROM runs")}
        return sorted(found | set(KINDS))

    def list(
        self, status: str | None = None, kind: str | None = None, limit: int | None = None
    ) -> list[Run]:
        """Runs, newest first, after :meth:`mark_stale`; optionally only one ``status``
        (one of :data:`STATUSES`) and/or ``kind`` (one of :meth:`kinds`), at most ``limit`` of
        them.

        Raises:
            InputError: an unknown status or kind (the message lists the known ones), a bad
                limit, or a damaged database.
        """
        if status is not None and status not in STATUSES:
            raise InputError(f"unknown run status {status!r}; use one of {', '.join(STATUSES)}.")
        if kind is not None and not isinstance(kind, str):
            raise InputError(f"kind must be a string such as 'train', got {kind!r}.")
        if kind is not None and kind not in KINDS and kind not in (known := self.kinds()):
            raise InputError(f"unknown run kind {kind!r}; use one of {', '.join(known)}.")
        if limit is not None:
            limit = _check_int64("limit", limit, 1, fix="Pass a positive number of runs.")
        if not self._ensure_schema(create=False):
            return []
        self._mark_stale_quietly()
        query, params = "SELECT * FROM runs WHERE 1 = 1", []
        if status is not None:
            query += " AND status = ?"
            params.append(status)
        if kind is not None:
            query += " AND kind = ?"
            params.append(kind)
        query += " ORDER BY id DESC"
        if limit is not None:
            query += " LIMIT ?"
            params.append(limit)
        with self._transaction(write=False) as conn:
            rows = conn.execute(query, params).fetchall()
        return [self._as_run(row) for row in rows]

    def latest(self, kind: str | None = None) -> Run:
        """The newest finished run (of ``kind``; None: of any kind): what ``latest`` names on
        the command line (``trustlab report latest``).

        Raises:
            InputError: the store holds no such run (the message says what to pass instead).
        """
        runs = self.list(status="finished", kind=kind, limit=1)
        if runs:
            return runs[0]
        what = "finished run" if kind is None else f"finished {kind} run"
        raise InputError(
            f"`latest` names the newest {what}, and {self.root} holds none; pass a run id "
            "(`trustlab runs` lists them)."
        )

    def mark_stale(self) -> list[int]:
        """Mark ``running`` runs whose process is gone as ``interrupted``; returns their ids.

        A run is stale when it was started on this host (same hostname and, on Linux, the same
        pid namespace) and its pid is not alive, is a zombie, or belongs to a process that
        started at another time than the recorded one (``/proc/<pid>/stat`` field 22: the pid
        was reused). Runs from other hosts or containers are left alone.
        """
        if not self._ensure_schema(create=False):
            return []
        ident = _identity()
        with self._transaction(write=False) as conn:
            rows = conn.execute(
                "SELECT id, pid, proc_start, pid_ns FROM runs "
                "WHERE status = 'running' AND hostname = ?",
                (ident["hostname"],),
            ).fetchall()
        stale = [
            row
            for row in rows
            if (
                row["pid_ns"] is None or ident["pid_ns"] is None or row["pid_ns"] == ident["pid_ns"]
            )
            and not _process_alive(row["pid"], row["proc_start"])
        ]
        if not stale:
            return []
        now, marked = _now(), []
        with self._transaction(write=True) as conn:
            for row in stale:
                cur = conn.execute(
                    "UPDATE runs SET status = 'interrupted', updated = ?, ended = ?, error = ? "
                    "WHERE id = ? AND status = 'running' AND pid = ? AND proc_start IS ?",
                    (
                        now,
                        now,
                        f"process {row['pid']} on {ident['hostname']} ended without finishing "
                        "the run",
                        row["id"],
                        row["pid"],
                        row["proc_start"],
                    ),
                )
                if cur.rowcount:
                    marked.append(int(row["id"]))
        return marked

    def _mark_stale_quietly(self) -> None:
        """:meth:`mark_stale` for readers: a read-only or busy store still lists its runs."""
        if self._conn_readonly and self._conn_pid == os.getpid():
            return
        with contextlib.suppress(sqlite3.OperationalError):
            self.mark_stale()


# --------------------------------------------------------------------------------------------
# A run
# --------------------------------------------------------------------------------------------


class Run:
    """One run of the store: its record (attributes, refreshed after every change) and the
    methods that write it. Get one from :meth:`RunStore.create_run` or :meth:`RunStore.get`.

    Used as a context manager, a still-running run that this process owns is finished on a
    normal exit, marked ``interrupted`` on ``KeyboardInterrupt``/``SystemExit`` and ``failed`` on
    any other error; a run that already ended, or that another process owns, is left alone.

    Attributes:
        id: the run's number; ``dir`` is its folder ``<root>/run-{id:06d}``.
        dir: the run's folder (``config.json``, ``meta.json``, artefacts).
        kind: what made it, e.g. ``"train"``, ``"reproduce"``.
        name: its label.
        status: ``"running"``, ``"finished"``, ``"failed"`` or ``"interrupted"``.
        config: the run's configuration (JSON values).
        seed: the run's seed, or None.
        created: creation time (UTC, ISO 8601).
        updated: time of the last change.
        ended: time it ended, or None while running.
        versions: python, torch, numpy, trustlab and platform versions at creation.
        git_commit: the git commit of the code, or None.
        summary: summary metrics (:meth:`set_summary`, :meth:`finish`).
        error: the error of a failed run, or None.
        pid: the owning process's id.
        hostname: the owning process's host.
        attempt: 1, plus one for every :meth:`reopen`.

    Example:
        >>> with RunStore("runs").create_run("train", "demo", {"lr": 0.1}, seed=0) as run:
        ...     run.log_metrics(1, {"train_loss": 0.5})
    """

    id: int
    dir: Path
    kind: str
    name: str
    status: str
    config: dict[str, Any]
    seed: int | None
    created: str
    updated: str
    ended: str | None
    versions: dict[str, str]
    git_commit: str | None
    summary: dict[str, Any]
    error: str | None
    pid: int | None
    hostname: str | None
    attempt: int

    def __init__(self, store: RunStore, row: sqlite3.Row) -> None:
        self._store = store
        self._load(row)

    def _load(self, row: sqlite3.Row) -> None:
        self.id = int(row["id"])
        self.dir = self._store.run_dir(self.id)
        self.kind = row["kind"]
        self.name = row["name"]
        self.status = row["status"]
        self.config = json.loads(row["config"])
        self.seed = row["seed"]
        self.created = row["created"]
        self.updated = row["updated"]
        self.ended = row["ended"]
        self.versions = json.loads(row["versions"])
        self.git_commit = row["git_commit"]
        self.summary = json.loads(row["summary"])
        self.error = row["error"]
        self.pid = row["pid"]
        self.hostname = row["hostname"]
        self.attempt = int(row["attempt"])
        self._proc_start: str | None = row["proc_start"]

    def __repr__(self) -> str:
        return f"Run(id={self.id}, kind={self.kind!r}, name={self.name!r}, status={self.status!r})"

    def to_dict(self) -> dict[str, Any]:
        """The record as plain JSON-ready values (``dir`` as a string)."""
        keys = (
            "id", "kind", "name", "status", "config", "seed", "created", "updated", "ended",
            "versions", "git_commit", "summary", "error", "pid", "hostname", "attempt",
        )  # fmt: skip
        return {"dir": str(self.dir), **{k: getattr(self, k) for k in keys}}

    # -- plumbing ---------------------------------------------------------------------------

    def _check_status(self, row: sqlite3.Row, action: str, allowed: tuple[str, ...]) -> None:
        """Raise InputError unless the stored status is one of ``allowed``."""
        status = row["status"]
        if status in allowed:
            return
        if status == "finished":
            raise InputError(
                f"cannot {action}: run {self.id} is finished; start a new run "
                "(finished runs are never overwritten)."
            )
        raise InputError(  # failed or interrupted: only a resumed (running) run is written
            f"cannot {action}: run {self.id} is {status}; reopen it (trustlab resume "
            f"{self.id}, or Run.reopen() in Python) first."
        )

    def _check_owner(self, row: sqlite3.Row, action: str) -> None:
        """Raise InputError unless this process owns the running run (see the module notes)."""
        if _owns(row, _identity()):
            return
        raise InputError(
            f"cannot {action}: run {self.id} is running in another process (pid {row['pid']} "
            f"on {row['hostname']}), not in this one (pid {os.getpid()}); only the process "
            "running it ends it. Wait for it to end; if it is gone, reopen it (trustlab resume "
            f"{self.id}, or Run.reopen() in Python) first."
        )

    @contextlib.contextmanager
    def _modify(
        self, action: str, allowed: tuple[str, ...] = ("running",), owner: bool = False
    ) -> Iterator[tuple[sqlite3.Connection, sqlite3.Row]]:
        """One write transaction on this run's row, after checking that its stored status is
        one of ``allowed`` and, with ``owner=True``, that a ``running`` run belongs to this
        process. The checks read the database, never this handle's cached view."""
        with self._store._transaction(write=True) as conn:
            row = self._store._row(conn, self.id)
            if row is None:
                raise InputError(f"run {self.id} is no longer in {self._store.db_path}.")
            self._check_status(row, action, allowed)
            if owner and row["status"] == "running":
                self._check_owner(row, action)
            yield conn, row
            row = self._store._row(conn, self.id)
        assert row is not None
        self._load(row)

    def refresh(self) -> Run:
        """Re-read this run from the database (another process may have changed it)."""
        with self._store._transaction(write=False) as conn:
            row = self._store._row(conn, self.id)
        if row is None:
            raise InputError(f"run {self.id} is no longer in {self._store.db_path}.")
        self._load(row)
        return self

    # -- metrics and summary ----------------------------------------------------------------

    def log_metrics(self, step: int, metrics: Mapping[str, float], phase: str = "epoch") -> None:
        """Record ``metrics`` for ``(phase, step)``.

        Calls for the same step in one attempt merge their values (e.g. train, then validation
        metrics of epoch 3); after :meth:`reopen`, a step logged again replaces the row the
        interrupted attempt wrote, so a re-done epoch is never duplicated. Values are numbers
        (Python, NumPy or 0-d torch scalars); NaN and infinities are kept as they are.

        Raises:
            InputError: bad arguments, or the run is not ``running`` (a ``failed`` or
                ``interrupted`` run must be reopened first; a ``finished`` one never changes).
        """
        step = _check_int64("step", step)
        phase = _check_label("phase", phase)
        values = _check_metrics(metrics)
        with self._modify("log metrics") as (conn, row):
            old = conn.execute(
                "SELECT data, attempt FROM metrics WHERE run_id = ? AND phase = ? AND step = ?",
                (self.id, phase, step),
            ).fetchone()
            if old is not None and old["attempt"] == row["attempt"]:
                values = {**json.loads(old["data"]), **values}
            now = _now()
            conn.execute(
                "INSERT OR REPLACE INTO metrics (run_id, phase, step, data, attempt, time) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (self.id, phase, step, json.dumps(values), row["attempt"], now),
            )
            conn.execute("UPDATE runs SET updated = ? WHERE id = ?", (now, self.id))

    def metrics(self, phase: str | None = None) -> list[dict[str, Any]]:
        """``[{"step": s, "phase": p, name: value, ...}]`` ordered by step (then phase)."""
        query = "SELECT phase, step, data FROM metrics WHERE run_id = ?"
        params: list[Any] = [self.id]
        if phase is not None:
            query += " AND phase = ?"
            params.append(phase)
        with self._store._transaction(write=False) as conn:
            rows = conn.execute(query + " ORDER BY step, phase", params).fetchall()
        return [{"step": r["step"], "phase": r["phase"], **json.loads(r["data"])} for r in rows]

    def set_summary(self, summary: Mapping[str, Any]) -> None:
        """Merge ``summary`` (JSON values) into the stored summary, key by key.

        Raises:
            InputError: ``summary`` is not a dict of JSON values, or the run is not ``running``.
        """
        text = _dumps(_check_mapping(summary, "summary"), "summary", allow_nan=True)
        with self._modify("set the summary") as (conn, row):
            merged = {**json.loads(row["summary"]), **json.loads(text)}
            conn.execute(
                "UPDATE runs SET summary = ?, updated = ? WHERE id = ?",
                (json.dumps(merged, sort_keys=True), _now(), self.id),
            )

    # -- artefacts --------------------------------------------------------------------------

    def artifact_path(self, name: str) -> Path:
        """``<run folder>/<name>`` for a relative ``name`` such as ``"model.safetensors"``;
        its parent folders are created (unless the run is finished: then it is only a path to
        read)."""
        path = self.dir / _check_artifact_name(name)
        if self.status != "finished":
            path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def add_artifact(self, name: str, kind: str = "file") -> Path:
        """Record the existing file (or folder) ``<run folder>/<name>`` as an artefact, with its
        size and SHA-256 (files only). Recording a name again updates it. Returns its path.

        Raises:
            InputError: a bad or missing name, or the run is not ``running``.
        """
        rel = _check_artifact_name(name)
        kind = _check_label("artefact kind", kind)
        path = self.dir / rel
        if not path.exists():
            raise InputError(
                f"artefact {rel!r} does not exist in {self.dir}; write it to "
                f"run.artifact_path({rel!r}) first, then add it."
            )
        if not path.resolve().is_relative_to(self.dir.resolve()):
            raise InputError(f"artefact {rel!r} points outside the run folder {self.dir}.")
        if path.is_dir():
            size, sha = sum(p.stat().st_size for p in path.rglob("*") if p.is_file()), None
        else:
            size, sha = path.stat().st_size, _hash_file(path)
        with self._modify("add an artefact") as (conn, _row):
            now = _now()
            conn.execute(
                "INSERT OR REPLACE INTO artifacts (run_id, name, kind, size, sha256, created) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (self.id, rel, kind, size, sha, now),
            )
            conn.execute("UPDATE runs SET updated = ? WHERE id = ?", (now, self.id))
        return path

    def artifacts(self) -> list[dict[str, Any]]:
        """``[{"name", "kind", "path", "size", "sha256", "created"}]`` in the order added."""
        with self._store._transaction(write=False) as conn:
            rows = conn.execute(
                "SELECT name, kind, size, sha256, created FROM artifacts WHERE run_id = ? "
                "ORDER BY created, name",
                (self.id,),
            ).fetchall()
        return [{**dict(r), "path": str(self.dir / r["name"])} for r in rows]

    # -- status -----------------------------------------------------------------------------

    def finish(self, summary: Mapping[str, Any] | None = None) -> None:
        """Mark the run ``finished`` (after merging ``summary``); it is read-only from now on.

        Raises:
            InputError: the run is not ``running``, or another process owns it.
        """
        text = None
        if summary is not None:
            text = _dumps(_check_mapping(summary, "summary"), "summary", allow_nan=True)
        with self._modify("finish it", owner=True) as (conn, row):
            merged = json.loads(row["summary"])
            if text is not None:
                merged.update(json.loads(text))
            now = _now()
            conn.execute(
                "UPDATE runs SET status = 'finished', summary = ?, error = NULL, updated = ?, "
                "ended = ? WHERE id = ?",
                (json.dumps(merged, sort_keys=True), now, now, self.id),
            )

    def fail(self, error: str | BaseException) -> None:
        """Mark the run ``failed`` with an error message (an exception is formatted as
        ``"Type: message"``) and the time.

        Raises:
            InputError: the run is not ``running``, or another process owns it.
        """
        if isinstance(error, BaseException):
            error = f"{type(error).__name__}: {error}"
        with self._modify("mark it failed", owner=True) as (conn, _row):
            now = _now()
            conn.execute(
                "UPDATE runs SET status = 'failed', error = ?, updated = ?, ended = ? WHERE id = ?",
                (str(error), now, now, self.id),
            )

    def mark_interrupted(self) -> None:
        """Mark a ``running`` run ``interrupted`` (e.g. on Ctrl-C) with the time. A run that
        already ended (finished, failed, interrupted) is left as it is.

        Raises:
            InputError: the run is ``running`` in another process.
        """
        with self._modify("mark it interrupted", STATUSES, owner=True) as (conn, row):
            if row["status"] == "running":
                now = _now()
                conn.execute(
                    "UPDATE runs SET status = 'interrupted', updated = ?, ended = ? WHERE id = ?",
                    (now, now, self.id),
                )

    def reopen(self, *, force: bool = False) -> None:
        """Resume the run in this process: ``interrupted``, ``failed`` or stale ``running`` ->
        ``running`` with this pid, a new attempt number and the error cleared. The resume is
        appended to ``meta.json`` (``resumes``: time, pid, host, versions, git commit).

        Raises:
            InputError: the run is finished; or it is still running in a live process (on
                another host this cannot be checked: pass ``force=True`` if it is gone).
        """
        ident, versions, git = _identity(), package_versions(), git_info()
        with self._modify("reopen it", ("running", "failed", "interrupted")) as (conn, row):
            if row["status"] == "running":
                if _owns(row, ident):
                    return
                here = row["hostname"] == ident["hostname"] and row["pid_ns"] in (
                    None,
                    ident["pid_ns"],
                )
                gone = here and not _process_alive(row["pid"], row["proc_start"])
                if not (gone or force):
                    raise InputError(
                        f"run {self.id} is still running (pid {row['pid']} on "
                        f"{row['hostname']}); wait for it to end, or reopen(force=True) if "
                        "you know that process is gone."
                    )
            now, attempt = _now(), int(row["attempt"]) + 1
            conn.execute(
                "UPDATE runs SET status = 'running', pid = ?, hostname = ?, proc_start = ?, "
                "pid_ns = ?, attempt = ?, error = NULL, ended = NULL, updated = ? WHERE id = ?",
                (
                    ident["pid"],
                    ident["hostname"],
                    ident["proc_start"],
                    ident["pid_ns"],
                    attempt,
                    now,
                    self.id,
                ),
            )
            meta_path = self.dir / "meta.json"
            try:
                meta = json.loads(meta_path.read_text())
            except (OSError, ValueError):
                meta = {"id": self.id}
            meta.setdefault("resumes", []).append(
                {
                    "attempt": attempt,
                    "time": now,
                    "from_status": row["status"],
                    "versions": versions,
                    "git_commit": git["commit"] if git else None,
                    **ident,
                }
            )
            write_json_atomic(meta_path, meta)

    # -- context manager --------------------------------------------------------------------

    def __enter__(self) -> Run:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.refresh()
        owner = {"pid": self.pid, "hostname": self.hostname, "proc_start": self._proc_start}
        if self.status != "running" or not _owns(owner, _identity()):
            return  # ended already, or another process's run (e.g. a forked child's handle)
        if exc is None:
            self.finish()
        elif isinstance(exc, KeyboardInterrupt | SystemExit):
            self.mark_interrupted()
        else:
            self.fail(exc)


@contextlib.contextmanager
def recording_outcome(run: Run | None) -> Iterator[Run | None]:
    """Inside: the run's work. On Ctrl-C the run is marked ``interrupted``, on any other error
    ``failed`` (with the error), and the exception is re-raised; a normal exit leaves the status
    to the caller (who finishes the run with its summary). ``None`` records nothing."""
    try:
        yield run
    except KeyboardInterrupt:
        if run is not None:
            run.mark_interrupted()
        raise
    except BaseException as exc:
        if run is not None and run.refresh().status == "running":
            run.fail(f"{type(exc).__name__}: {exc}")
        raise
