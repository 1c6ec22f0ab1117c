"""The results store and the data cache in hostile places: read-only, damaged, truncated, a file
where a folder should be, unknown filters. Every case is one InputError naming the problem and
the fix, never a traceback, and nothing is written."""

from __future__ import annotations

import os
import random
import shutil
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from trustlab.cli import app
from trustlab.data import datasets as datasets_mod
from trustlab.errors import InputError
from trustlab.results import KINDS, STATUSES, RunStore
from trustlab.utils.paths import cache_dir, trustlab_home

runner = CliRunner()


def _make_store(root: Path, runs: int = 3, steps: int = 40) -> RunStore:
    store = RunStore(root)
    for i in range(runs):
        with store.create_run("train", f"r{i}", {"i": i}, seed=i) as run:
            for step in range(steps):
                run.log_metrics(step, {"loss": 1.0 / (step + 1), "acc": 0.5})
    store.close()
    return store


def _entries(root: Path) -> list[str]:
    """The store's files and folders, without SQLite's -wal/-shm files (a reader makes them)."""
    return sorted(p.name for p in root.iterdir() if not p.name.endswith(("-wal", "-shm")))


def _snapshot(root: Path) -> tuple[bytes, list[str]]:
    return (root / "trustlab.db").read_bytes(), _entries(root)


def _rootpage(root: Path, table: str) -> tuple[int, int]:
    conn = sqlite3.connect(root / "trustlab.db")
    try:
        (page,) = conn.execute(
            "SELECT rootpage FROM sqlite_master WHERE name = ?", (table,)
        ).fetchone()
        (size,) = conn.execute("PRAGMA page_size").fetchone()
    finally:
        conn.close()
    return (page - 1) * size, size


def _scribble(root: Path, table: str) -> None:
    """Overwrite the root page of ``table`` with random bytes (a damaged disk page)."""
    offset, size = _rootpage(root, table)
    with open(root / "trustlab.db", "r+b") as fh:
        fh.seek(offset)
        fh.write(random.Random(0).randbytes(size))


def _cli(*args: str):
    return runner.invoke(app, list(args))


def _one_error_line(result, *needles: str) -> None:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert result.output.startswith("error:"), result.output
    for needle in needles:
        assert needle in result.output, result.output


# -- a read-only store --------------------------------------------------------------------------


def test_a_read_only_store_lists_and_shows_its_runs(tmp_path: Path) -> None:
    _make_store(tmp_path / "s")
    before = _snapshot(tmp_path / "s")
    store = RunStore(tmp_path / "s", readonly=True)
    assert store.readonly
    assert [r.id for r in store.list()] == [3, 2, 1]
    assert [r.id for r in store.list(kind="train", status="finished", limit=1)] == [3]
    run = store.get(2)
    assert run.name == "r1" and len(run.metrics()) == 40 and run.artifacts() == []
    assert store.kinds() == sorted(KINDS)
    assert _snapshot(tmp_path / "s")[0] == before[0]


def test_a_read_only_store_refuses_every_write_with_the_fix(tmp_path: Path) -> None:
    _make_store(tmp_path / "s")
    conn = sqlite3.connect(tmp_path / "s" / "trustlab.db")
    with conn:
        conn.execute("UPDATE runs SET status = 'interrupted' WHERE id = 1")
        conn.execute("UPDATE runs SET status = 'running', pid = 999999999 WHERE id = 2")
    conn.close()
    before = _snapshot(tmp_path / "s")
    store = RunStore(tmp_path / "s", readonly=True)
    # a stale running run cannot be marked interrupted, but it is still listed
    assert [r.status for r in store.list()] == ["finished", "running", "interrupted"]
    fix = "Set TRUSTLAB_HOME to a writable folder"
    with pytest.raises(InputError, match="read-only") as info:
        store.create_run("train", "new", {})
    assert fix in str(info.value) and str(tmp_path / "s") in str(info.value)
    run = store.get(1)
    for write in (
        run.reopen,
        lambda: run.log_metrics(1, {"x": 1.0}),
        lambda: run.set_summary({"x": 1}),
        lambda: run.fail("x"),
    ):
        with pytest.raises(InputError, match="read-only.*Set TRUSTLAB_HOME"):
            write()
    assert _snapshot(tmp_path / "s") == before


def test_readonly_must_be_a_bool_or_none(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="readonly must be True, False or None"):
        RunStore(tmp_path, readonly="yes")  # type: ignore[arg-type]


def test_a_store_this_process_cannot_write_is_opened_read_only(
    _isolated_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a chmod or a read-only mount does, simulated so that it is tested as root too."""
    trained = _cli("train", "--model", "mlp", "--epochs", "1", "-q")
    assert trained.exit_code == 0, trained.output
    _make_store(_isolated_home, runs=2)
    real = os.access

    def access(path: object, mode: int, *args: object, **kwargs: object) -> bool:
        if mode & os.W_OK and Path(str(path)).resolve().is_relative_to(_isolated_home):
            return False
        return real(path, mode, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "access", access)
    before = _snapshot(_isolated_home)
    assert RunStore().readonly
    out = _cli("runs")
    assert out.exit_code == 0, out.output
    assert "r1" in out.output and "(3 of 3" in out.output
    out = _cli("show", "2")
    assert out.exit_code == 0 and "r0" in out.output, out.output
    _one_error_line(_cli("train", "--model", "mlp", "--epochs", "1", "-q"), "read-only")
    conn = sqlite3.connect(_isolated_home / "trustlab.db")
    with conn:
        conn.execute("UPDATE runs SET status = 'interrupted' WHERE id = 1")
    conn.close()
    before = _snapshot(_isolated_home)
    _one_error_line(_cli("resume", "1"), "read-only", "TRUSTLAB_HOME")
    assert _snapshot(_isolated_home) == before


def _read_only_runner(folder: Path) -> list[str] | None:
    """A command prefix that runs a command with ``folder`` really read-only: chmod for a normal
    user; for root (who ignores permissions) a private read-only bind mount. None: impossible."""
    if os.geteuid() != 0:
        for path in (folder, *folder.rglob("*")):
            path.chmod(path.stat().st_mode & ~0o222)
        return []
    unshare = shutil.which("unshare")
    if unshare is None:
        return None
    prefix = [
        unshare,
        "-m",
        "sh",
        "-c",
        'mount --bind "$0" "$0" && mount -o remount,ro,bind "$0" && exec "$@"',
        str(folder),
    ]
    probe = subprocess.run(
        [*prefix, "sh", "-c", f'touch "{folder}/probe"'], capture_output=True, check=False
    )
    if probe.returncode == 0 or (folder / "probe").exists():
        (folder / "probe").unlink(missing_ok=True)
        return None
    return prefix


def test_a_really_read_only_store_from_the_command_line(tmp_path: Path) -> None:
    home = tmp_path / "home"
    _make_store(home, runs=2, steps=3)
    prefix = _read_only_runner(home)
    if prefix is None:
        pytest.skip("cannot make a folder read-only here (root without mount namespaces)")
    try:
        env = {**os.environ, "TRUSTLAB_HOME": str(home)}
        code = "from trustlab.cli import main; main()"

        def trustlab(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [*prefix, sys.executable, "-c", code, *args],
                capture_output=True,
                text=True,
                env=env,
                timeout=120,
                check=False,
            )

        listed = trustlab("runs")
        assert listed.returncode == 0 and "r1" in listed.stdout, listed.stderr
        shown = trustlab("show", "2", "--json")
        assert shown.returncode == 0 and '"name": "r1"' in shown.stdout, shown.stderr
        code_create = (
            "from trustlab.results import RunStore\nRunStore().create_run('train', 'x', {})"
        )
        made = subprocess.run(
            [*prefix, sys.executable, "-c", code_create],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
            check=False,
        )
        assert "InputError" in made.stderr and "read-only" in made.stderr
        assert "OperationalError" not in made.stderr
        assert sorted(p.name for p in home.iterdir()) == ["run-000001", "run-000002", "trustlab.db"]
    finally:
        for path in (home, *home.rglob("*")):
            path.chmod(path.stat().st_mode | 0o200)


# -- damaged databases --------------------------------------------------------------------------


def test_a_damaged_runs_table_is_an_input_error(tmp_path: Path) -> None:
    _make_store(tmp_path / "s")
    _scribble(tmp_path / "s", "runs")
    store = RunStore(tmp_path / "s")
    for call in (store.list, lambda: store.get(1), lambda: store.create_run("train", "x", {})):
        with pytest.raises(InputError, match=r"trustlab.db is (damaged|not a trustlab).*aside"):
            call()
    assert sorted(p.name for p in (tmp_path / "s").iterdir())[-1] == "trustlab.db"
    assert not (tmp_path / "s" / "run-000004").exists()


def test_a_damaged_page_elsewhere_stops_the_next_write(tmp_path: Path) -> None:
    _make_store(tmp_path / "s")
    _scribble(tmp_path / "s", "metrics")
    store = RunStore(tmp_path / "s")
    with pytest.raises(InputError, match=r"damaged.*Move it aside"):
        store.create_run("train", "x", {})
    assert not (tmp_path / "s" / "run-000004").exists()


def test_a_damaged_run_counter_never_hands_out_a_garbage_id(tmp_path: Path) -> None:
    _make_store(tmp_path / "s")
    conn = sqlite3.connect(tmp_path / "s" / "trustlab.db")
    with conn:
        conn.execute("UPDATE sqlite_sequence SET seq = 6245747993460714411 WHERE name = 'runs'")
    conn.close()
    store = RunStore(tmp_path / "s")
    with pytest.raises(InputError, match="run counter.*6245747993460714412.*newest run is 3"):
        store.create_run("train", "x", {})
    assert [r.id for r in store.list()] == [3, 2, 1]
    assert len(_entries(tmp_path / "s")) == 4


def test_cli_runs_on_a_damaged_database(_isolated_home: Path) -> None:
    _make_store(_isolated_home)
    _scribble(_isolated_home, "runs")
    _one_error_line(_cli("runs"), "trustlab.db is damaged", "aside")


def test_an_empty_database_next_to_run_folders_is_refused(tmp_path: Path) -> None:
    _make_store(tmp_path / "s")
    (tmp_path / "s" / "trustlab.db").write_bytes(b"")
    store = RunStore(tmp_path / "s")
    for call in (store.list, lambda: store.create_run("train", "x", {})):
        with pytest.raises(InputError, match="empty.*3 run folder.*would hide those runs"):
            call()
    with pytest.raises(InputError, match="empty.*3 run folder"):
        RunStore(tmp_path / "s", readonly=True).list()
    assert (tmp_path / "s" / "trustlab.db").stat().st_size == 0
    assert not (tmp_path / "s" / "run-000004").exists()


def test_an_empty_database_alone_or_a_database_moved_aside_starts_afresh(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "trustlab.db").write_bytes(b"")
    assert RunStore(tmp_path / "a", readonly=True).list() == []
    assert RunStore(tmp_path / "a").create_run("train", "x", {}).id == 1
    _make_store(tmp_path / "b")
    (tmp_path / "b" / "trustlab.db").rename(tmp_path / "b.db")
    assert RunStore(tmp_path / "b").create_run("train", "x", {}).id == 4


# -- TRUSTLAB_HOME and TRUSTLAB_CACHE in the wrong place ---------------------------------------


def test_trustlab_home_pointing_at_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "a-file"
    home.write_text("x")
    monkeypatch.setenv("TRUSTLAB_HOME", str(home))
    with pytest.raises(InputError, match="TRUSTLAB_HOME=.*a-file is a file, not a folder"):
        trustlab_home()
    for args in (["runs"], ["show", "1"], ["train", "--model", "mlp", "--epochs", "1"]):
        _one_error_line(_cli(*args), "TRUSTLAB_HOME", "a-file is a file")
    with pytest.raises(InputError, match="is a file, not a folder"):
        RunStore(home).list()
    assert home.read_text() == "x"


def test_trustlab_home_in_a_place_that_cannot_be_created(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "f").write_text("x")
    monkeypatch.setenv("TRUSTLAB_HOME", str(tmp_path / "f" / "runs"))
    store = RunStore()
    assert store.list() == []  # nothing there, nothing created
    with pytest.raises(InputError, match="cannot create the results store .*TRUSTLAB_HOME"):
        store.create_run("train", "x", {})


def test_an_empty_trustlab_home_means_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRUSTLAB_HOME", "")
    assert trustlab_home() == Path("runs")


def test_a_cache_that_cannot_be_written_builds_in_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "f").write_text("x")
    monkeypatch.setenv("TRUSTLAB_CACHE", str(tmp_path / "f" / "cache"))  # cannot be created
    monkeypatch.setattr(datasets_mod, "_UNWRITABLE", set())
    calls = []

    def build() -> dict[str, torch.Tensor]:
        calls.append(1)
        return {"x": torch.arange(6).reshape(2, 3)}

    with pytest.warns(UserWarning, match="cannot write the dataset cache.*TRUSTLAB_CACHE"):
        out = datasets_mod.cached_tensors("k-v1", build)
    assert torch.equal(out["x"], torch.arange(6).reshape(2, 3))
    out = datasets_mod.cached_tensors("k-v1", build)  # warned once per folder
    assert len(calls) == 2
    with pytest.raises(InputError, match="cannot create the cache folder.*TRUSTLAB_CACHE"):
        cache_dir("shadows")


def test_a_really_read_only_cache_still_loads_a_generated_dataset(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    prefix = _read_only_runner(cache)
    if prefix is None:
        pytest.skip("cannot make a folder read-only here (root without mount namespaces)")
    code = textwrap.dedent(
        """
        import warnings
        from trustlab.data import load_dataset
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ds = load_dataset("digits", "test")
        print(len(ds), [str(w.message) for w in caught])
        """
    )
    env = {**os.environ, "TRUSTLAB_CACHE": str(cache), "TRUSTLAB_HOME": str(tmp_path / "h")}
    try:
        out = subprocess.run(
            [*prefix, sys.executable, "-c", code],
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
            check=False,
        )
        assert out.returncode == 0, out.stderr
        assert "cannot write the dataset cache" in out.stdout
        assert list(cache.iterdir()) == []
    finally:
        cache.chmod(0o755)


def test_trustlab_cache_pointing_at_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "f").write_text("x")
    monkeypatch.setenv("TRUSTLAB_CACHE", str(tmp_path / "f"))
    with pytest.raises(InputError, match="TRUSTLAB_CACHE=.* is a file, not a folder"):
        datasets_mod.cached_tensors("k-v1", lambda: {"x": torch.zeros(1)})


# -- unknown filters ----------------------------------------------------------------------------


def test_list_refuses_an_unknown_kind_or_status_and_names_the_known_ones(
    tmp_path: Path,
) -> None:
    store = RunStore(tmp_path / "s")
    with pytest.raises(InputError, match="unknown run kind 'bogus'; use one of .*train"):
        store.list(kind="bogus")
    assert store.list(kind="attack") == []  # a known kind without runs: nothing, no error
    store.create_run("my-sweep", "x", {})  # kinds made in Python are listed too
    with pytest.raises(InputError, match="my-sweep"):
        store.list(kind="bogus")
    assert [r.kind for r in store.list(kind="my-sweep")] == ["my-sweep"]
    with pytest.raises(InputError, match=f"use one of {', '.join(STATUSES)}"):
        store.list(status="bogus")


def test_cli_runs_with_an_unknown_kind_or_status(_isolated_home: Path) -> None:
    _one_error_line(_cli("runs", "--kind", "bogus"), "unknown run kind", "train")
    _one_error_line(_cli("runs", "--status", "bogus"), "unknown run status", "finished")
