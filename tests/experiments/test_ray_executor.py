"""The Ray executor on a local Ray with 2 CPUs (one session for the module): the same smoke
reproduction gives the same table as the local pool; a Ray worker killed mid-job is retried, or,
without retries, leaves a failed run that `trustlab resume` finishes without redoing the jobs
that had finished.

Skipped when Ray is not installed (``pip install -e ".[ray]"``); CI installs it, and there a
missing Ray fails instead of skipping.
"""

from __future__ import annotations

import json
import math
import operator
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from trustlab.cli import app
from trustlab.errors import InputError
from trustlab.experiments.base import Experiment, Preset, reproduce
from trustlab.registry import EXPERIMENTS
from trustlab.results import RunStore
from trustlab.utils.executor import RayExecutor, Resources, Task, WorkerLost

if os.environ.get("CI"):
    import ray  # CI installs the ray extra: there a missing Ray is a failure, not a skip
else:
    ray = pytest.importorskip(
        "ray", reason='Ray is not installed: pip install -e ".[ray]" runs these tests'
    )

runner = CliRunner()


class KillOnce(Experiment):
    """Three jobs; the ``victim`` job SIGKILLs its own worker process the first time it runs
    (after another job finished), and runs normally once its marker file exists. Every job
    that returns leaves a file in the work folder, so the test counts how often each ran."""

    name = "ray-kill-once-test"
    title = "kill a Ray worker mid-job"
    paper = "none"
    keys = ("arm",)
    metrics = ("score",)
    presets = {"smoke": Preset("smoke", "digits", "mlp", seeds=1)}

    def jobs(self, preset: Preset) -> list[dict[str, Any]]:
        return [{"arm": "a"}, {"arm": "victim"}, {"arm": "b"}]

    def check(self, preset: Preset) -> None:
        pass

    def run_job(self, preset, job, seed, device) -> dict[str, float]:
        work = self.work_path("")
        marker = work / "killed"
        if job["arm"] == "victim" and not marker.exists():
            marker.touch()
            deadline = time.monotonic() + 30
            while not any(work.glob("done-*")) and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(0.5)  # the finished job's result reaches the driver first
            os.kill(os.getpid(), signal.SIGKILL)
        (work / f"done-{job['arm']}-{os.getpid()}-{time.monotonic_ns()}").touch()
        return {"score": {"a": 1.0, "b": 2.0, "victim": 3.0}[job["arm"]] + seed}


if KillOnce.name not in EXPERIMENTS:
    EXPERIMENTS.register(KillOnce.name, KillOnce.title)(KillOnce)


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray with 2 CPUs for the module (one per xdist worker that runs a test of it);
    this module's classes travel by value (a Ray worker cannot import a test module)."""
    ray.init(num_cpus=2, include_dashboard=False, logging_level="warning")
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    try:
        yield ray
    finally:
        ray.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
        ray.shutdown()


def _done(run_dir: Path) -> dict[str, int]:
    counts: dict[str, int] = {}
    for f in (run_dir / "work").glob("done-*"):
        arm = f.name.split("-")[1]
        counts[arm] = counts.get(arm, 0) + 1
    return counts


def test_ray_executor_contract(local_ray, _isolated_home: Path) -> None:
    """map in order, shared objects, the driver's store path in the job, a job's own exception
    re-raised as itself after the finished results, an impossible GPU request refused."""
    with RayExecutor() as ex:  # joins the module's Ray, leaves it running
        assert ex.workers == 2 and ex.job_device("cuda:1") == "cuda"
        assert ex.map(operator.pow, [1, 2, 3], args=(2,)) == [1, 4, 9]
        shared = ex.share(list(range(1000)))
        assert ex.map(operator.getitem, [shared, shared], args=(999,)) == [999, 999]
        assert ex.map(os.getenv, ["TRUSTLAB_HOME"]) == [str(_isolated_home)]
        got = {}
        tasks = [Task(math.sqrt, (4.0,), key="ok"), Task(operator.truediv, (1, 0), key="bad")]
        with pytest.raises(ZeroDivisionError):
            for key, value in ex.as_completed(tasks):
                got[key] = value
        assert got in ({}, {"ok": 2.0})
        with pytest.raises(InputError, match="needs 1 GPU.* has 0 in all"):
            list(ex.as_completed([Task(abs, (-1,), resources=Resources(gpus=1))]))
    assert ray.is_initialized()


def test_smoke_reproduction_same_table_local_and_ray(local_ray, _isolated_home: Path) -> None:
    """The sce smoke reproduction's noisy setting (CE and SCE at 60% symmetric noise: 2 jobs,
    one round on 2 CPUs) on the local pool and on Ray: the same table, to the last digit."""
    noisy = {"noise": ("sym:0.6",)}
    args = {"device": "cpu", "progress": False, "options": noisy}
    local = reproduce("sce", "smoke", workers=2, **args)
    on_ray = reproduce("sce", "smoke", executor="ray", **args)
    assert local.run.config["executor"] == "local" and on_ray.run.config["executor"] == "ray"
    assert on_ray.run.summary["executor"] == "ray" and on_ray.run.summary["workers"] == 2
    table = json.loads((on_ray.run.dir / "table.json").read_text())
    assert table["rows"] == json.loads((local.run.dir / "table.json").read_text())["rows"]
    assert sorted(r["loss"] for r in table["rows"]) == ["ce", "sce"]


def test_killed_ray_worker_is_retried(local_ray, _isolated_home: Path) -> None:
    out = runner.invoke(
        app, ["reproduce", KillOnce.name, "--preset", "smoke", "--device", "cpu", "--quiet",
              "--executor", "ray"],
    )  # fmt: skip
    assert out.exit_code == 0, out.output
    (run,) = RunStore(_isolated_home).list()
    assert run.status == "finished" and (run.dir / "work" / "killed").exists()
    assert run.config["executor"] == "ray" and run.summary["executor"] == "ray"
    rows = json.loads((run.dir / "table.json").read_text())["rows"]
    assert sorted(r["score"] for r in rows) == [1.0, 2.0, 3.0]
    assert _done(run.dir) == {"a": 1, "b": 1, "victim": 1}  # the killed attempt never returned


def test_killed_ray_worker_without_retries_leaves_a_resumable_run(
    local_ray, _isolated_home: Path
) -> None:
    with RayExecutor(max_retries=0) as ex, pytest.raises(WorkerLost) as err:
        reproduce(KillOnce.name, "smoke", device="cpu", progress=False, executor=ex)
    (run,) = RunStore(_isolated_home).list()
    assert '"arm": "victim"' in str(err.value) and f"trustlab resume {run.id}" in str(err.value)
    assert run.status == "failed" and "WorkerLost" in run.error
    kept = {int(r["step"]) for r in run.metrics(phase="row")}
    assert kept and 1 not in kept  # a finished job was stored; the victim (job 1) was not
    out = runner.invoke(app, ["resume", str(run.id), "--quiet"])  # with the run's executor: ray
    assert out.exit_code == 0, out.output
    run = run.refresh()
    assert run.status == "finished" and run.summary["resumed"] is True
    assert run.summary["executor"] == "ray" and len(run.metrics(phase="row")) == 3
    done = _done(run.dir)
    arms = ["a", "victim", "b"]
    assert all(done[arms[i]] == 1 for i in kept)  # the stored jobs did not run again
    assert done["victim"] == 1


def test_shadows_on_ray_equal_the_local_pool_and_are_cached(local_ray, tmp_path: Path) -> None:
    """LiRA's shadows trained on Ray are the models the local pool trains (single-threaded
    jobs: bitwise), cached as they arrive, so a second call trains none."""
    import torch

    from trustlab.attacks.privacy import ShadowRecipe, train_shadows
    from trustlab.data import load_dataset
    from trustlab.models.spec import ModelSpec
    from trustlab.train import TrainSettings

    data = load_dataset("digits", "train").subset(range(120))
    recipe = ShadowRecipe(ModelSpec.for_data("mlp", data), TrainSettings(epochs=1, batch_size=32))
    kw = {"seed": 3, "device": "cpu", "progress": False}
    on_ray = train_shadows(recipe, data, 4, cache=tmp_path / "ray", executor="ray", **kw)
    local = train_shadows(recipe, data, 4, cache=tmp_path / "local", executor="local", **kw)
    assert on_ray.trained == local.trained == 4
    for a, b in zip(on_ray.models(), local.models(), strict=True):
        for (name, p), q in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
            assert torch.equal(p, q), name
    again = train_shadows(recipe, data, 4, cache=tmp_path / "ray", executor="ray", **kw)
    assert again.trained == 0
