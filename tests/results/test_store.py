"""Tests of the results store: SQLite rows + run folders, statuses, metrics, stale runs."""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import sqlite3
import subprocess
import sys
import textwrap
import threading
from datetime import datetime
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest
import torch

from trustlab.errors import InputError
from trustlab.results import SCHEMA_VERSION, STATUSES, Run, RunStore
from trustlab.results import store as store_mod
from trustlab.utils.paths import trustlab_home

HAS_PROC = Path("/proc/self/stat").exists()


@pytest.fixture
def store(_isolated_home: Path) -> RunStore:
    return RunStore()


def _sql(store: RunStore, query: str, params: tuple = ()) -> list[tuple]:
    """Direct access for white-box checks (and to fake another process's rows)."""
    conn = sqlite3.connect(store.db_path, timeout=30)
    try:
        with conn:
            return conn.execute(query, params).fetchall()
    finally:
        conn.close()


def _run_folders(store: RunStore) -> list[str]:
    if not store.root.exists():
        return []
    return sorted(p.name for p in store.root.iterdir() if p.name.startswith(("run-", ".run-")))


def _python(code: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=os.environ.copy(),
        check=True,
    )


# -- creation, folders, records ---------------------------------------------------------------


def test_default_root_is_trustlab_home_and_nothing_is_created_until_a_run_is(
    store: RunStore,
) -> None:
    assert store.root == trustlab_home()
    assert store.list() == []
    assert store.mark_stale() == []
    with pytest.raises(InputError, match="no run 1"):
        store.get(1)
    assert not store.root.exists()


def test_create_run_records_row_folder_config_and_meta(store: RunStore) -> None:
    config = {"model": "resnet20", "lr": 0.1, "epochs": 3, "aug": ["crop", "flip"], "path": None}
    run = store.create_run("train", "digits-cnn", config, seed=123)

    assert run.id == 1 and run.status == "running" and run.attempt == 1
    assert run.kind == "train" and run.name == "digits-cnn" and run.seed == 123
    assert run.dir == store.root / "run-000001" and run.dir.is_dir()
    assert run.config == config and run.summary == {} and run.error is None and run.ended is None
    assert run.pid == os.getpid() and run.hostname == socket.gethostname()
    created = datetime.fromisoformat(run.created)
    assert created.tzinfo is not None and run.updated == run.created

    assert json.loads((run.dir / "config.json").read_text()) == config
    meta = json.loads((run.dir / "meta.json").read_text())
    assert meta["id"] == 1 and meta["seed"] == 123 and meta["pid"] == os.getpid()
    assert meta["versions"] == run.versions and meta["resumes"] == []
    assert (meta["git"] or {}).get("commit") == run.git_commit
    assert sorted(p.name for p in run.dir.iterdir()) == ["config.json", "meta.json"]
    assert store.db_path.is_file()

    again = store.get(1)
    assert again.to_dict() == run.to_dict()
    json.dumps(run.to_dict())  # JSON-ready for the CLI


def test_versions_are_recorded(store: RunStore) -> None:
    import platform

    run = store.create_run("train", "v", {})
    assert run.versions["python"] == platform.python_version()
    assert run.versions["torch"] == str(torch.__version__)
    assert run.versions["numpy"] == np.__version__
    assert run.versions["trustlab"] == metadata.version("trustlab")
    assert run.versions["platform"] == platform.platform()


def test_git_commit_is_recorded_when_available_and_never_fails_without_git(
    store: RunStore, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    run = store.create_run("train", "git", {})
    if store_mod.shutil.which("git"):
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=False
        )
        if head.returncode == 0:
            assert run.git_commit == head.stdout.strip()
    if run.git_commit is not None:
        assert re.fullmatch(r"[0-9a-f]{40,64}", run.git_commit)

    monkeypatch.chdir(tmp_path)  # not a repository: falls back to the package's (if any)
    assert store.create_run("train", "elsewhere", {}).status == "running"
    monkeypatch.setenv("PATH", str(tmp_path / "no-bin"))  # git missing
    no_git = store.create_run("train", "no-git", {})
    assert no_git.git_commit is None
    assert json.loads((no_git.dir / "meta.json").read_text())["git"] is None


def test_ids_parse_and_missing_or_malformed_ids_raise(store: RunStore) -> None:
    for _ in range(7):
        store.create_run("train", "x", {})
    for key in (7, "7", "run-000007", " run-7 ", np.int64(7)):
        assert store.get(key).id == 7
    with pytest.raises(InputError, match="no run 8 .*trustlab runs"):
        store.get("run-000008")
    for bad in ("abc", "run-", "-1", -1, 1.5, True, None, "７"):
        with pytest.raises(InputError, match="not a run id"):
            store.get(bad)  # type: ignore[arg-type]


def test_list_filters_orders_newest_first_and_limits(store: RunStore) -> None:
    a = store.create_run("train", "a", {})
    b = store.create_run("reproduce", "b", {})
    c = store.create_run("train", "c", {})
    a.finish()
    b.fail("boom")

    assert [r.id for r in store.list()] == [c.id, b.id, a.id]
    assert [r.id for r in store.list(kind="train")] == [c.id, a.id]
    assert [r.id for r in store.list(status="finished")] == [a.id]
    assert [r.id for r in store.list(status="failed", kind="reproduce")] == [b.id]
    assert store.list(status="failed", kind="train") == []
    assert [r.id for r in store.list(limit=2)] == [c.id, b.id]
    with pytest.raises(InputError, match="unknown run status 'done'"):
        store.list(status="done")
    for bad in (0, -3, "2", 1.0):
        with pytest.raises(InputError, match="limit"):
            store.list(limit=bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "kind, name, config, seed, match",
    [
        ("", "n", {}, None, "kind"),
        ("train", None, {}, None, "name"),
        ("train", "n", [1, 2], None, "config must be a dict"),
        ("train", "n", {1: "a"}, None, "keys must be strings"),
        ("train", "n", {"f": float("nan")}, None, "finite"),
        ("train", "n", {"s": {1, 2}}, None, "cannot be stored as JSON"),
        ("train", "n", {"t": torch.ones(3)}, None, r"tolist"),
        ("train", "n", {}, 2.5, "seed must be an integer"),
        ("train", "n", {}, 2**64, "64 bits"),
    ],
)
def test_bad_create_arguments_raise_and_leave_nothing(
    store: RunStore, kind: object, name: object, config: object, seed: object, match: str
) -> None:
    with pytest.raises(InputError, match=match):
        store.create_run(kind, name, config, seed)  # type: ignore[arg-type]
    assert store.list() == [] and _run_folders(store) == []


def test_unserialisable_config_leaves_no_row_and_no_folder(store: RunStore) -> None:
    store.create_run("train", "ok", {})
    with pytest.raises(InputError, match="config cannot be stored as JSON"):
        store.create_run("train", "bad", {"model": object()})
    assert [r.name for r in store.list()] == ["ok"]
    assert _run_folders(store) == ["run-000001"]
    assert store.create_run("train", "next", {}).id == 2


def test_scalars_and_paths_in_config_are_stored_as_json(store: RunStore) -> None:
    run = store.create_run(
        "train", "n", {"lr": np.float32(0.5), "k": torch.tensor(3), "root": Path("/data")}
    )
    assert run.config == {"lr": 0.5, "k": 3, "root": "/data"}


def test_failed_folder_write_leaves_no_row_and_no_folder(
    store: RunStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = store_mod.write_json_atomic

    def failing(path: Path, obj: object) -> None:
        if Path(path).name == "meta.json":
            raise OSError("disk full")
        real(path, obj)

    monkeypatch.setattr(store_mod, "write_json_atomic", failing)
    with pytest.raises(OSError, match="disk full"):
        store.create_run("train", "x", {"a": 1})
    assert store.list() == [] and _run_folders(store) == []
    assert _sql(store, "SELECT COUNT(*) FROM runs") == [(0,)]

    monkeypatch.setattr(store_mod, "write_json_atomic", real)
    run = store.create_run("train", "y", {})
    assert run.id == 1 and (run.dir / "meta.json").is_file()


def test_orphan_folder_is_never_reused(store: RunStore) -> None:
    orphan = store.root / "run-000003"
    orphan.mkdir(parents=True)
    (orphan / "keep.txt").write_text("old")
    assert [store.create_run("train", str(i), {}).id for i in range(2)] == [1, 2]
    run = store.create_run("train", "third", {})  # would be 3 without the guard
    assert run.id == 4 and run.dir.name == "run-000004"
    assert (orphan / "keep.txt").read_text() == "old"
    assert not (orphan / "config.json").exists()


def test_schema_is_versioned_and_uses_wal(store: RunStore) -> None:
    store.create_run("train", "x", {})
    assert _sql(store, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
    assert _sql(store, "PRAGMA journal_mode")[0][0].lower() == "wal"
    _sql(store, f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(InputError, match="newer trustlab"):
        RunStore(store.root).list()


def test_a_file_that_is_not_a_database_is_an_input_error(tmp_path: Path) -> None:
    (tmp_path / "trustlab.db").write_bytes(b"definitely not sqlite" * 100)
    with pytest.raises(InputError, match="not a trustlab results database"):
        RunStore(tmp_path).list()


# -- metrics, summary, artefacts ----------------------------------------------------------------


def test_metrics_are_ordered_by_step_and_filtered_by_phase(store: RunStore) -> None:
    run = store.create_run("train", "m", {})
    run.log_metrics(2, {"loss": 0.5})
    run.log_metrics(0, {"loss": 1.5, "acc": 0.1})
    run.log_metrics(1, {"loss": 1.0})
    run.log_metrics(10, {"loss": 0.9}, phase="step")
    run.log_metrics(1, {"val_acc": np.float64(0.7), "n": np.int64(12), "t": torch.tensor(0.25)})

    assert run.metrics("epoch") == [
        {"step": 0, "phase": "epoch", "loss": 1.5, "acc": 0.1},
        {"step": 1, "phase": "epoch", "loss": 1.0, "val_acc": 0.7, "n": 12, "t": 0.25},
        {"step": 2, "phase": "epoch", "loss": 0.5},
    ]
    assert [(m["phase"], m["step"]) for m in run.metrics()] == [
        ("epoch", 0),
        ("epoch", 1),
        ("epoch", 2),
        ("step", 10),
    ]
    assert run.metrics("test") == []
    assert run.updated >= run.created


def test_metrics_keep_nan_and_reject_bad_values(store: RunStore) -> None:
    run = store.create_run("train", "m", {})
    run.log_metrics(0, {"loss": float("nan"), "grad": float("inf")})
    row = run.metrics()[0]
    assert np.isnan(row["loss"]) and row["grad"] == float("inf")
    bad_cases = [
        ({"loss": "low"}, "must be a number"),
        ({"loss": torch.ones(2)}, "must be a number"),
        ({"loss": None}, "must be a number"),
        ({"step": 1.0}, "reserved"),
        ({1: 1.0}, "keys must be strings"),
        ([("loss", 1.0)], "must be a dict"),
    ]
    for metrics, match in bad_cases:
        with pytest.raises(InputError, match=match):
            run.log_metrics(1, metrics)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="step must be an integer"):
        run.log_metrics(1.5, {"loss": 1.0})  # type: ignore[arg-type]
    with pytest.raises(InputError, match="phase"):
        run.log_metrics(1, {"loss": 1.0}, phase="")
    assert len(run.metrics()) == 1


def test_resumed_run_overwrites_a_redone_epoch_instead_of_duplicating(store: RunStore) -> None:
    run = store.create_run("train", "resume", {})
    run.log_metrics(0, {"loss": 2.0, "acc": 0.1})
    run.log_metrics(1, {"loss": 1.5, "stale_key": 9.0})
    run.mark_interrupted()
    run.reopen()
    assert run.status == "running" and run.attempt == 2
    run.log_metrics(1, {"loss": 1.4})  # epoch 1 redone: replaces the old row
    run.log_metrics(1, {"acc": 0.3})  # same attempt: merged into it
    run.log_metrics(2, {"loss": 1.0})
    assert run.metrics() == [
        {"step": 0, "phase": "epoch", "loss": 2.0, "acc": 0.1},
        {"step": 1, "phase": "epoch", "loss": 1.4, "acc": 0.3},
        {"step": 2, "phase": "epoch", "loss": 1.0},
    ]
    assert _sql(store, "SELECT COUNT(*) FROM metrics") == [(3,)]


def test_summary_is_merged(store: RunStore) -> None:
    run = store.create_run("train", "s", {})
    run.set_summary({"acc": 0.5, "loss": 1.0})
    run.set_summary({"acc": 0.9, "asr": np.float32(0.25)})
    assert run.summary == {"acc": 0.9, "loss": 1.0, "asr": 0.25}
    run.finish({"epochs": 3})
    assert store.get(run.id).summary == {"acc": 0.9, "loss": 1.0, "asr": 0.25, "epochs": 3}
    other = store.create_run("train", "s2", {})
    with pytest.raises(InputError, match="summary cannot be stored as JSON"):
        other.set_summary({"x": object()})
    with pytest.raises(InputError, match="summary must be a dict"):
        other.set_summary([1])  # type: ignore[arg-type]
    assert other.refresh().summary == {}


def test_artifacts_are_recorded_with_size_and_hash(store: RunStore) -> None:
    run = store.create_run("train", "a", {})
    path = run.artifact_path("checkpoints/model.safetensors")
    assert path == run.dir / "checkpoints" / "model.safetensors" and path.parent.is_dir()
    path.write_bytes(b"weights" * 100)
    assert run.add_artifact("checkpoints/model.safetensors", kind="checkpoint") == path
    run.artifact_path("plots").mkdir()
    (run.dir / "plots" / "a.txt").write_text("12345")
    run.add_artifact("plots", kind="dir")

    arts = run.artifacts()
    assert [a["name"] for a in arts] == ["checkpoints/model.safetensors", "plots"]
    first = arts[0]
    assert first["kind"] == "checkpoint" and first["size"] == 700
    assert first["sha256"] == hashlib.sha256(b"weights" * 100).hexdigest()
    assert first["path"] == str(path)
    assert arts[1]["size"] == 5 and arts[1]["sha256"] is None

    path.write_bytes(b"new")  # recording again updates, never duplicates
    run.add_artifact("checkpoints/model.safetensors", kind="checkpoint")
    by_name = {a["name"]: a for a in run.artifacts()}
    assert len(by_name) == 2 and by_name["checkpoints/model.safetensors"]["size"] == 3


def test_bad_artifact_names_and_missing_files_raise(store: RunStore, tmp_path: Path) -> None:
    run = store.create_run("train", "a", {})
    for bad in ("../escape.txt", "/etc/passwd", "", "a/../../b", "config.json", "meta.json"):
        with pytest.raises(InputError, match="artefact name|relative path|written by"):
            run.artifact_path(bad)
    with pytest.raises(InputError, match="does not exist.*artifact_path"):
        run.add_artifact("missing.bin")
    outside = tmp_path / "outside.txt"
    outside.write_text("x")
    (run.dir / "link.txt").symlink_to(outside)
    with pytest.raises(InputError, match="outside the run folder"):
        run.add_artifact("link.txt")
    assert run.artifacts() == []


# -- statuses -----------------------------------------------------------------------------------


def test_status_transitions_record_error_and_time(store: RunStore) -> None:
    run = store.create_run("train", "t", {})
    run.fail(RuntimeError("out of memory"))
    assert run.status == "failed" and run.error == "RuntimeError: out of memory"
    assert run.ended is not None and datetime.fromisoformat(run.ended)
    run.mark_interrupted()  # an ended run keeps its status
    assert run.status == "failed"

    run.reopen()
    assert run.status == "running" and run.error is None and run.ended is None
    assert run.attempt == 2
    run.mark_interrupted()
    assert run.status == "interrupted" and run.ended is not None
    run.reopen()
    run.finish({"acc": 1.0})
    assert run.status == "finished" and run.attempt == 3
    resumes = json.loads((run.dir / "meta.json").read_text())["resumes"]
    assert [(r["attempt"], r["from_status"]) for r in resumes] == [
        (2, "failed"),
        (3, "interrupted"),
    ]
    assert all(r["pid"] == os.getpid() and "versions" in r for r in resumes)
    assert set(STATUSES) == {"running", "finished", "failed", "interrupted"}


def test_finished_runs_are_never_overwritten(store: RunStore) -> None:
    run = store.create_run("train", "done", {})
    run.log_metrics(0, {"loss": 1.0})
    (run.dir / "late.txt").write_text("x")
    run.finish({"acc": 0.9})
    before = (run.to_dict(), run.metrics(), run.artifacts())

    attempts = [
        lambda: run.log_metrics(0, {"loss": 0.0}),
        lambda: run.set_summary({"acc": 0.0}),
        lambda: run.finish(),
        lambda: run.fail("late"),
        lambda: run.reopen(),
        lambda: run.add_artifact("late.txt"),
    ]
    for attempt in attempts:
        with pytest.raises(InputError, match=f"run {run.id} is finished; start a new run"):
            attempt()
    run.mark_interrupted()  # e.g. Ctrl-C after finish: a no-op
    stale = store.get(run.id)  # another handle, with an outdated view, is refused too
    assert (stale.to_dict(), stale.metrics(), stale.artifacts()) == before
    assert run.refresh().status == "finished"


def test_a_second_handle_sees_changes_after_refresh(store: RunStore) -> None:
    run = store.create_run("train", "r", {})
    other = store.get(run.id)
    run.set_summary({"x": 1})
    assert other.summary == {} and other.refresh().summary == {"x": 1}
    run.finish()
    with pytest.raises(InputError, match="is finished"):
        other.log_metrics(1, {"loss": 1.0})  # its cached status says running; the DB decides


def test_context_manager_finishes_fails_or_interrupts(store: RunStore) -> None:
    with store.create_run("train", "ok", {}) as run:
        run.log_metrics(0, {"loss": 1.0})
    assert run.status == "finished"

    with pytest.raises(ValueError, match="bad lr"), store.create_run("train", "bad", {}) as run:
        raise ValueError("bad lr")
    assert run.status == "failed" and run.error == "ValueError: bad lr"

    with pytest.raises(KeyboardInterrupt), store.create_run("train", "ctrl-c", {}) as run:
        raise KeyboardInterrupt
    assert run.status == "interrupted"


# -- the transition table: status and owner checks ---------------------------------------------

_WRITES = {
    "log_metrics": lambda run: run.log_metrics(5, {"loss": 0.0}),
    "set_summary": lambda run: run.set_summary({"acc": 0.0}),
    "add_artifact": lambda run: run.add_artifact("late.txt"),
}
_ENDS = {
    "finish": lambda run: run.finish({"acc": 0.0}),
    "fail": lambda run: run.fail("late"),
}


def _ended_run(store: RunStore, status: str) -> Run:
    run = store.create_run("train", status, {})
    run.log_metrics(0, {"loss": 1.0})
    (run.dir / "late.txt").write_text("x")
    if status == "failed":
        run.fail("boom")
    else:
        run.mark_interrupted()
    assert run.status == status
    return run


def _state(run: Run) -> tuple:
    return (run.refresh().to_dict(), run.metrics(), run.artifacts())


@pytest.mark.parametrize("status", ["failed", "interrupted"])
@pytest.mark.parametrize("action", [*_WRITES, *_ENDS])
def test_failed_and_interrupted_runs_must_be_reopened_before_any_write(
    store: RunStore, status: str, action: str
) -> None:
    run = _ended_run(store, status)
    stale_view = store.get(run.id)
    before = _state(run)
    fn = {**_WRITES, **_ENDS}[action]
    for handle in (run, stale_view):
        with pytest.raises(
            InputError, match=rf"run {run.id} is {status}; reopen it \(trustlab resume {run.id}"
        ):
            fn(handle)
    assert _state(run) == before  # nothing written, the status and its time unchanged

    run.reopen()  # the fix the message names
    assert run.status == "running" and run.attempt == 2
    fn(run)
    assert run.status == {"finish": "finished", "fail": "failed"}.get(action, "running")


@pytest.mark.parametrize("status", ["failed", "interrupted"])
def test_mark_interrupted_is_a_no_op_on_ended_runs(store: RunStore, status: str) -> None:
    run = _ended_run(store, status)
    before = _state(run)
    run.mark_interrupted()
    store.get(run.id).mark_interrupted()
    assert _state(run) == before


def test_a_running_run_takes_every_write_and_ends_once(store: RunStore) -> None:
    run = store.create_run("train", "ok", {})
    (run.dir / "late.txt").write_text("x")
    for fn in _WRITES.values():
        fn(run)
    assert run.status == "running" and run.summary == {"acc": 0.0}
    assert [a["name"] for a in run.artifacts()] == ["late.txt"]
    run.fail("first")
    with pytest.raises(InputError, match="is failed; reopen it"):
        run.fail("second")  # the first error is kept
    assert run.refresh().error == "first"


def _owned_by_parent(store: RunStore, run_id: int) -> None:
    """Make a live process that is not this one (our parent) the run's owner."""
    parent = os.getppid()
    _sql(
        store,
        "UPDATE runs SET pid = ?, proc_start = ? WHERE id = ?",
        (parent, store_mod._process_start(parent), run_id),
    )


def test_only_the_owning_process_ends_a_running_run_but_anyone_may_log(store: RunStore) -> None:
    run = store.create_run("train", "live-elsewhere", {})
    (run.dir / "late.txt").write_text("x")
    _owned_by_parent(store, run.id)
    handle = store.get(run.id)  # not stale: the owner is alive
    assert handle.status == "running"

    for fn in _WRITES.values():  # data: allowed (threads, forked workers, other ranks)
        fn(handle)
    assert handle.summary == {"acc": 0.0} and len(handle.metrics()) == 1
    before = _state(handle)
    ends = {**_ENDS, "mark_interrupted": lambda r: r.mark_interrupted()}
    for fn in ends.values():
        with pytest.raises(
            InputError, match=rf"run {run.id} is running in another process \(pid {os.getppid()}"
        ):
            fn(handle)
    assert _state(handle) == before

    # a context manager over another process's run leaves it alone, and never hides an error
    with handle:
        pass
    with pytest.raises(ValueError, match="mine"), handle:
        raise ValueError("mine")
    assert _state(handle) == before

    with pytest.raises(InputError, match="still running"):
        handle.reopen()
    handle.reopen(force=True)  # taking it over makes this process the owner
    handle.finish()
    assert handle.status == "finished" and handle.pid == os.getpid()


def test_a_run_whose_owner_died_must_be_reopened_before_it_ends(store: RunStore) -> None:
    run = store.create_run("train", "dead-owner", {})
    _sql(store, "UPDATE runs SET pid = ? WHERE id = ?", (2**22 + 12345, run.id))
    with pytest.raises(InputError, match="running in another process.*reopen it"):
        run.finish()  # this handle's view is outdated; the database says who owns it
    assert store.get(run.id).status == "interrupted"  # get() marks it stale
    with pytest.raises(InputError, match="is interrupted; reopen it"):
        run.finish()
    run.reopen()
    run.finish({"acc": 1.0})
    assert run.status == "finished" and run.attempt == 2


# -- stale runs and several processes ----------------------------------------------------------


def test_run_left_running_by_a_dead_process_becomes_interrupted(store: RunStore) -> None:
    out = _python(
        """
        from trustlab.results import RunStore
        run = RunStore().create_run("train", "child", {"a": 1})
        run.log_metrics(0, {"loss": 1.0})
        print(run.id, run.pid)
        """
    )
    run_id, pid = map(int, out.stdout.split())
    assert pid != os.getpid()
    assert _sql(store, "SELECT status FROM runs WHERE id = ?", (run_id,)) == [("running",)]

    mine = store.create_run("train", "mine", {})  # this process is alive: never stale
    runs = {r.id: r for r in store.list()}  # list() marks stale runs first
    assert runs[run_id].status == "interrupted" and "ended without finishing" in runs[run_id].error
    assert runs[mine.id].status == "running"
    assert store.mark_stale() == []

    child = store.get(run_id)
    child.reopen()  # resumed by this process
    assert child.status == "running" and child.pid == os.getpid()
    assert child.metrics() == [{"step": 0, "phase": "epoch", "loss": 1.0}]


def test_get_marks_stale_and_mark_stale_returns_ids(store: RunStore) -> None:
    run = store.create_run("train", "fake-dead", {})
    dead_pid = 2**22 + 12345  # above the default pid_max: cannot be alive
    _sql(store, "UPDATE runs SET pid = ? WHERE id = ?", (dead_pid, run.id))
    assert store.mark_stale() == [run.id]
    assert store.mark_stale() == []

    other = store.create_run("train", "fake-dead-2", {})
    _sql(store, "UPDATE runs SET pid = ? WHERE id = ?", (dead_pid, other.id))
    assert store.get(other.id).status == "interrupted"


def test_reopen_takes_over_a_stale_running_run(store: RunStore) -> None:
    run = store.create_run("train", "stale-handle", {})
    handle = store.get(run.id)
    _sql(store, "UPDATE runs SET pid = ? WHERE id = ?", (2**22 + 12345, run.id))
    handle.reopen()  # its cached view says running; the owning process is gone
    assert handle.status == "running" and handle.pid == os.getpid() and handle.attempt == 2
    handle.reopen()  # already ours: a no-op
    assert handle.refresh().attempt == 2


@pytest.mark.skipif(not HAS_PROC, reason="process start times need /proc")
def test_reused_pid_is_detected_by_start_time(store: RunStore) -> None:
    run = store.create_run("train", "reused", {})
    assert _sql(store, "SELECT proc_start FROM runs WHERE id = ?", (run.id,))[0][0] is not None
    # the pid is alive (ours) but the recorded process started at another time
    _sql(store, "UPDATE runs SET proc_start = '1' WHERE id = ?", (run.id,))
    assert store.mark_stale() == [run.id]


def test_runs_from_another_host_or_live_process_are_left_alone(store: RunStore) -> None:
    remote = store.create_run("train", "remote", {})
    _sql(
        store,
        "UPDATE runs SET hostname = 'some-other-host', pid = ? WHERE id = ?",
        (2**22 + 12345, remote.id),
    )
    live = store.create_run("train", "live", {})
    # a live process that is not us (our parent) owns the run
    parent = os.getppid()
    start = store_mod._process_start(parent)
    _sql(
        store,
        "UPDATE runs SET pid = ?, proc_start = ? WHERE id = ?",
        (parent, start, live.id),
    )
    assert store.mark_stale() == []
    assert {r.status for r in store.list()} == {"running"}

    with pytest.raises(InputError, match="still running .*force=True"):
        store.get(live.id).reopen()
    with pytest.raises(InputError, match="some-other-host"):
        store.get(remote.id).reopen()
    taken = store.get(remote.id)
    taken.reopen(force=True)
    assert taken.hostname == socket.gethostname() and taken.attempt == 2


def test_two_processes_creating_runs_concurrently_get_distinct_ids(
    store: RunStore, tmp_path: Path
) -> None:
    go = tmp_path / "go"
    code = textwrap.dedent(
        """
        import sys, time
        from pathlib import Path
        from trustlab.results import RunStore
        store = RunStore()
        while not Path(sys.argv[2]).exists():  # start together, so that the writers overlap
            time.sleep(0.005)
        ids = []
        for i in range(6):
            run = store.create_run("train", f"p{sys.argv[1]}-{i}", {"i": i})
            run.log_metrics(0, {"loss": float(i)})
            run.finish({"i": i})
            ids.append(run.id)
        print(" ".join(map(str, ids)))
        """
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(k), str(go)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=os.environ.copy(),
        )
        for k in range(3)
    ]
    go.touch()
    ids: list[int] = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        ids += [int(tok) for tok in out.split()]

    assert len(ids) == 18 and sorted(ids) == list(range(1, 19))
    runs = store.list(status="finished")
    assert len(runs) == 18
    assert _run_folders(store) == [f"run-{i:06d}" for i in range(1, 19)]
    for run in runs:
        assert json.loads((run.dir / "config.json").read_text()) == run.config
        assert run.summary == run.config


def test_threads_share_a_store(store: RunStore) -> None:
    run = store.create_run("train", "threads", {})

    def work(offset: int) -> None:
        for i in range(50):
            run.log_metrics(offset + i, {"loss": float(i)}, phase="step")

    threads = [threading.Thread(target=work, args=(k * 100,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    steps = [m["step"] for m in run.metrics("step")]
    assert steps == sorted(k * 100 + i for k in range(4) for i in range(50))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_opens_its_own_connection(store: RunStore) -> None:
    run = store.create_run("train", "fork", {})
    run.log_metrics(0, {"loss": 1.0})  # the parent's connection is open now
    pid = os.fork()
    if pid == 0:  # child: must not touch the inherited connection
        code = 1
        try:
            run.log_metrics(1, {"loss": 0.5})
            code = 0 if len(run.metrics()) == 2 else 1
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    run.log_metrics(2, {"loss": 0.25})
    assert [m["step"] for m in run.metrics()] == [0, 1, 2]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_may_log_but_never_ends_the_parents_run(store: RunStore) -> None:
    run = store.create_run("train", "fork-owner", {})
    pid = os.fork()
    if pid == 0:  # child: logging is fine, ending the parent's live run is not
        code = 1
        try:
            run.log_metrics(1, {"loss": 0.5})
            refused = 0
            for end in (run.finish, lambda: run.fail("child"), run.mark_interrupted):
                try:
                    end()
                except InputError as exc:
                    refused += "running in another process" in str(exc)
            with run:  # the context manager leaves the parent's run alone
                pass
            code = 0 if refused == 3 and run.refresh().status == "running" else 1
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert run.refresh().status == "running" and run.metrics()[0]["step"] == 1
    run.finish()
    assert run.status == "finished"
