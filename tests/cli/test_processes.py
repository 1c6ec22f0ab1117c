"""Whole processes: SIGKILL mid-training then `trustlab resume` gives exactly the numbers of an
uninterrupted run; `torchrun --nproc_per_node 2 -m trustlab train` trains with DDP (gloo)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from trustlab.results import RunStore

TRAIN = [
    "train",
    "--dataset",
    "digits",
    "--model",
    "cnn-small",
    "--epochs",
    "4",
    "--batch-size",
    "16",
    "--lr",
    "0.02",
    "--augment",
    "crop",
    "--seed",
    "3",
    "--device",
    "cpu",
    "--quiet",
]


def cli(home: Path, *args: str, **kw) -> subprocess.Popen:
    env = {**os.environ, "TRUSTLAB_HOME": str(home), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "trustlab", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **kw,
    )


def numbers(run) -> list[dict]:
    return [{k: v for k, v in m.items() if k != "epoch_seconds"} for m in run.metrics()]


@pytest.mark.slow
def test_sigkill_then_resume_matches_uninterrupted(tmp_path: Path) -> None:
    home = tmp_path / "store"
    p = cli(home, *TRAIN)
    store = RunStore(home)
    deadline = time.time() + 120
    while time.time() < deadline:  # wait until epoch 1 is stored, then kill inside epoch 2
        runs = store.list() if (home / "trustlab.db").exists() else []
        if runs and len(runs[0].metrics()) >= 1:
            break
        time.sleep(0.05)
    time.sleep(0.3)
    p.send_signal(signal.SIGKILL)
    p.wait()
    (run,) = store.list()
    assert run.status == "interrupted"  # its process is gone
    done_before = len(run.metrics())
    assert 1 <= done_before < 4
    ckpt = run.dir / "checkpoints" / "last.safetensors"
    assert ckpt.exists()  # resume continues from here, it does not start over
    from trustlab.train.checkpoint import read_checkpoint_meta

    assert read_checkpoint_meta(ckpt)["epoch"] >= done_before  # saved before it is logged

    out, _ = cli(home, "resume", str(run.id), "--quiet").communicate(timeout=300)
    assert "test accuracy" in out, out
    resumed = store.get(run.id)
    assert resumed.status == "finished"
    meta = json.loads((run.dir / "meta.json").read_text())
    assert len(meta["resumes"]) == 1

    ref = cli(home, *TRAIN)
    out, _ = ref.communicate(timeout=300)
    assert ref.returncode == 0, out
    reference = max(store.list(), key=lambda r: r.id)
    assert reference.id != run.id
    assert numbers(resumed) == numbers(reference)
    assert resumed.summary["test_accuracy"] == reference.summary["test_accuracy"]


@pytest.mark.slow
@pytest.mark.ddp
def test_torchrun_ddp_two_gloo_processes(tmp_path: Path) -> None:
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    assert torchrun, "torchrun is installed with torch"
    home = tmp_path / "store"
    env = {**os.environ, "TRUSTLAB_HOME": str(home), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [
            torchrun,
            "--standalone",
            "--nproc_per_node",
            "2",
            "-m",
            "trustlab",
            "train",
            "--dataset",
            "digits",
            "--model",
            "cnn-small",
            "--epochs",
            "2",
            "--device",
            "cpu",
            "--quiet",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (run,) = RunStore(home).list()
    assert run.status == "finished" and len(run.metrics()) == 2
    assert run.summary["test_accuracy"] > 0.5  # 2 epochs; this checks that DDP trains
