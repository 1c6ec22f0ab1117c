"""The executor interface without Ray: names, resources, the local pool's contract (results as
they finish, the finished ones handed back before a failure, a dead worker named), and the CLI's
``--executor`` errors. The Ray executor: tests/experiments/test_ray_executor.py."""

from __future__ import annotations

import math
import operator
import os
import socket
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from trustlab.cli import app
from trustlab.errors import InputError
from trustlab.results import RunStore
from trustlab.utils.executor import (
    RAY_INSTALL,
    LocalExecutor,
    Resources,
    Task,
    WorkerLost,
    _check_reachable,
    make_executor,
)

runner = CliRunner()


def test_make_executor_by_name_and_its_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    ex = make_executor("local", workers=3)
    assert isinstance(ex, LocalExecutor) and ex.workers == 3 and ex.name == "local"
    assert make_executor("local").workers == (os.cpu_count() or 1)
    with pytest.raises(InputError, match="unknown executor 'dask'; use one of: local, ray"):
        make_executor("dask")
    with pytest.raises(InputError, match="--ray-address goes with --executor ray"):
        make_executor("local", address="head:6379")
    with pytest.raises(InputError, match="num_cpus sizes a local Ray"):
        make_executor("local", num_cpus=2)
    with pytest.raises(InputError, match="--workers sizes the local pool"):
        make_executor("ray", workers=2)
    with pytest.raises(InputError, match="--workers must be an integer >= 1, got 0"):
        LocalExecutor(0)
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    with pytest.raises(InputError, match="not installed") as err:
        make_executor("ray")
    assert RAY_INSTALL in str(err.value) and RAY_INSTALL == 'pip install "trustlab[ray]"'


def test_an_address_where_no_cluster_listens_fails_fast() -> None:
    with socket.socket() as sock:  # a port that was free a moment ago: nothing listens there
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(InputError, match=f"no Ray cluster answers at 127.0.0.1:{port}"):
        _check_reachable(f"127.0.0.1:{port}")
    _check_reachable("auto")  # left to Ray


def test_resources() -> None:
    assert Resources() == Resources(cpus=1, gpus=0)
    assert Resources.for_device("cuda:1") == Resources(cpus=1, gpus=1)
    assert Resources.for_device("cpu").gpus == 0.0
    assert Resources(cpus=2.5).threads == 2 and Resources(cpus=0.5).threads == 1
    with pytest.raises(InputError, match="cpus must be finite and >= 0"):
        Resources(cpus=-1)
    with pytest.raises(InputError, match="gpus must be a number"):
        Resources(gpus="1")  # type: ignore[arg-type]


def test_one_worker_runs_in_this_process_in_order() -> None:
    ex = LocalExecutor(workers=1)
    assert ex.map(operator.pow, [1, 2, 3], args=(2,)) == [1, 4, 9]
    seen = []
    tasks = [Task(seen.append, (k,), key=k) for k in "abc"]  # not picklable: in-process only
    assert [k for k, _ in ex.as_completed(tasks)] == ["a", "b", "c"] and seen == ["a", "b", "c"]
    with pytest.raises(ZeroDivisionError):
        ex.map(operator.truediv, [1, 0], args=(0,))


def test_pool_hands_back_what_finished_before_a_failure() -> None:
    """Two spawned workers: the quick jobs finish and are handed back, then the failing one's
    own exception is raised; the jobs behind it are cancelled or handed back, never lost."""
    fail = Task(operator.truediv, (1, 0), key="fail")
    quick = [Task(math.sqrt, (float(k * k),), key=k) for k in range(2)]
    later = [Task(math.sqrt, (float(k * k),), key=k) for k in range(2, 6)]
    got: dict = {}
    with pytest.raises(ZeroDivisionError):
        for key, value in LocalExecutor(workers=2).as_completed([*quick, fail, *later]):
            got[key] = value
    assert "fail" not in got and all(got[k] == k for k in got)
    assert LocalExecutor(workers=2).map(math.sqrt, [4.0, 9.0, 16.0]) == [2.0, 3.0, 4.0]


def test_pool_names_a_worker_that_died() -> None:
    with pytest.raises(WorkerLost, match="worker process died"):
        list(LocalExecutor(workers=2).as_completed([Task(os._exit, (3,)), Task(abs, (-1,))]))


def test_cli_executor_errors(_isolated_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    args = ["reproduce", "sce", "--preset", "smoke", "--device", "cpu", "--quiet"]
    out = runner.invoke(app, [*args, "--executor", "dask"])
    assert out.exit_code == 2 and "unknown executor 'dask'" in out.output
    out = runner.invoke(app, [*args, "--ray-address", "head:6379"])
    assert out.exit_code == 2 and "--executor ray" in out.output
    monkeypatch.setitem(sys.modules, "ray", None)
    out = runner.invoke(app, [*args, "--executor", "ray"])
    assert out.exit_code == 2 and 'pip install "trustlab[ray]"' in out.output
    assert RunStore(_isolated_home).list() == []  # refused before anything was stored


def test_resume_takes_executor_flags_for_reproductions_only(_isolated_home: Path) -> None:
    run = RunStore(_isolated_home).create_run("train", "t", {"dataset": "digits"})
    run.mark_interrupted()
    out = runner.invoke(app, ["resume", str(run.id), "--executor", "local"])
    assert out.exit_code == 2 and "apply to reproductions" in out.output


def test_workers_with_ray_is_refused_before_anything_runs(_isolated_home) -> None:
    from trustlab.experiments.base import reproduce
    from trustlab.results import RunStore

    with pytest.raises(InputError, match="--workers sizes the local pool"):
        reproduce("sce", "smoke", executor="ray", workers=1, progress=False)
    assert RunStore().list() == []
