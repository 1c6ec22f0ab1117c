"""``trustlab submit``: mistakes of the command refused before anything runs or is recorded
(pickles, missing classes, a plain state_dict without --arch, bad limits), the label on a cache
hit, default labels and absolute references, the run recorded while it runs (and marked
interrupted when its parent dies), and the stage a timeout hit in."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from trustlab.cli import app
from trustlab.errors import InputError
from trustlab.platform import submissions as subs
from trustlab.platform.benchmarks import get_benchmark
from trustlab.platform.sandbox import SandboxOutcome, _with_stage, read_stage, stage_text
from trustlab.platform.submissions import (
    KIND,
    check_object_exists,
    find_cached,
    source_hash,
    submit,
)
from trustlab.results import RunStore

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples" / "submissions"
TINY_NET = """
from torch import nn


class TinyNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(256, 10)

    def forward(self, x):
        return self.fc(x.flatten(1))
"""
KEEP = "class Keep:\n    def repair(self, model, clean):\n        return model\n"


def _fake_outcome(*args, **kwargs):
    return SandboxOutcome(
        True,
        result={"scores": {"der": {"mean": 0.75, "lo": 0.7, "hi": 0.8, "values": [0.7, 0.8]}},
                "primary": "der", "higher_is_better": {"der": True}, "details": {}},
        wall_s=1.5,
    )  # fmt: skip


def _fake_model_outcome(*args, **kwargs):
    s = {"mean": 0.5, "lo": 0.4, "hi": 0.6, "values": [0.5]}
    return SandboxOutcome(
        True, wall_s=1.0,
        result={"scores": {"robust_accuracy": s, "clean_accuracy": s},
                "primary": "robust_accuracy", "details": {}},
    )  # fmt: skip


@pytest.fixture
def no_sandbox(monkeypatch):
    """The sandbox replaced by a fake outcome (a refused command never gets to it)."""
    monkeypatch.setattr("trustlab.platform.submissions.run_sandboxed", _fake_model_outcome)


def _invoke(*args: str):
    return CliRunner().invoke(app, ["submit", *args])


def _one_error(out, words: str) -> None:
    assert out.exit_code == 2, out.output
    assert out.output.count("error:") == 1 and "Traceback" not in out.output, out.output
    assert words in " ".join(out.output.split()), out.output
    assert "evaluating" not in out.output
    assert RunStore().list() == []  # nothing recorded


# -- 1. mistakes of the command: one error line, exit 2, nothing recorded -------------------
def test_pickle_model_is_refused_in_the_parent(tmp_path, monkeypatch, no_sandbox):
    monkeypatch.chdir(tmp_path)
    Path("mynet.py").write_text(textwrap.dedent(TINY_NET))
    torch.save({"fc.weight": torch.zeros(10, 256), "fc.bias": torch.zeros(10)}, "tiny.pt")
    out = _invoke("--model", "tiny.pt", "--arch", "mynet.py:TinyNet",
                  "--benchmark", "robustness-quick")  # fmt: skip
    _one_error(out, "is a torch.save file (a pickle inside a zip archive), not a safetensors")


def test_missing_class_is_refused_without_importing(tmp_path, monkeypatch, no_sandbox):
    monkeypatch.chdir(tmp_path)
    save_file({"fc.weight": torch.zeros(10, 256)}, "w.safetensors")
    arch = f"{EXAMPLES / 'digits_net.py'}:Nope"
    out = _invoke("--model", "w.safetensors", "--arch", arch, "--benchmark", "robustness-quick")
    _one_error(out, "digits_net.py has no top-level 'Nope' (it defines the classes DigitsNet)")
    # a defense: by file, and by module (trustlab's own, found without importing it anew)
    Path("mine.py").write_text("raise SystemExit('imported!')\n\nclass Mine:\n    pass\n")
    out = _invoke("--defense", "mine.py:Mien", "--benchmark", "backdoor-quick")
    _one_error(out, "mine.py has no top-level 'Mien' (it defines the classes Mine)")
    spec = "trustlab.defenses.backdoor.fine_pruning:FinePrune"
    _one_error(_invoke("--defense", spec, "--benchmark", "backdoor-quick"), "no top-level")


def test_object_check_reads_the_source_only(tmp_path):
    path = tmp_path / "odd.py"
    path.write_text(textwrap.dedent("""
        raise SystemExit("imported!")
        import numpy as np
        from os import path as P
        try:
            from fast import Quick
        except ImportError:
            class Quick:
                pass
        Alias = dict
        A, (B, C) = 1, (2, 3)
        def make():
            pass
    """))  # fmt: skip
    for name in ("Quick", "Alias", "B", "C", "make", "np", "P"):
        check_object_exists(f"{path}:{name}", "defense")  # found, nothing imported
    with pytest.raises(InputError, match="no top-level 'Missing'"):
        check_object_exists(f"{path}:Missing", "defense")
    # where the source cannot tell, the sandbox decides: a star import, a module __getattr__,
    # a syntax error
    (tmp_path / "star.py").write_text("from os.path import *\n")
    (tmp_path / "lazy.py").write_text("def __getattr__(name):\n    return dict\n")
    (tmp_path / "broken.py").write_text("class X(:\n")
    for f in ("star", "lazy", "broken"):
        check_object_exists(f"{tmp_path / f}.py:Anything", "defense")
    check_object_exists("trustlab.defenses.backdoor.fine_pruning:FinePruning", "defense")
    with pytest.raises(InputError, match="no module named 'trustlab.defenses.nope'"):
        check_object_exists("trustlab.defenses.nope:X", "defense")


def test_state_dict_without_arch_names_the_flag(tmp_path, monkeypatch, no_sandbox):
    monkeypatch.chdir(tmp_path)
    save_file({"fc.weight": torch.zeros(10, 256)}, "tiny.safetensors")
    fix = "add --arch file.py:Class (your model's class)"
    out = _invoke("--model", "tiny.safetensors", "--benchmark", "robustness-quick")
    _one_error(out, fix)
    assert "create_model" not in out.output
    audit = CliRunner().invoke(app, ["audit", "tiny.safetensors", "--dataset", "digits"])
    assert audit.exit_code == 2 and fix in " ".join(audit.output.split()), audit.output
    assert "create_model" not in audit.output


@pytest.mark.parametrize(
    "flags, words",
    [
        (["--timeout", "0"], "the timeout must be a positive number of seconds"),
        (["--memory-mb", "100"], "the memory limit must be at least 1024 MiB"),
    ],
)
def test_limits_are_checked_before_anything_is_said(tmp_path, no_sandbox, flags, words):
    path = tmp_path / "mine.py"
    path.write_text(KEEP)
    out = _invoke("--defense", f"{path}:Keep", "--benchmark", "backdoor-quick", *flags)
    _one_error(out, words)


# -- 2. the label on a cache hit -------------------------------------------------------------
def test_cache_hit_says_the_label_is_not_changed(tmp_path, monkeypatch):
    monkeypatch.setattr("trustlab.platform.submissions.run_sandboxed", _fake_outcome)
    path = tmp_path / "mine.py"
    path.write_text(KEEP)
    args = ["--defense", f"{path}:Keep", "--benchmark", "backdoor-quick"]
    assert _invoke(*args, "--label", "first").exit_code == 0
    again = _invoke(*args, "--label", "second")
    text = " ".join(again.output.split())
    assert again.exit_code == 0, again.output
    assert "cached: evaluated before as first, run 1" in text
    assert "The label is not changed: --label second" in text
    same = " ".join(_invoke(*args).output.split())
    assert "cached: evaluated before as first, run 1" in same and "not changed" not in same
    (run,) = RunStore().list(kind=KIND)
    assert run.config["submission"]["label"] == "first" and run.name == "backdoor-quick/first"


# -- 3. default labels; absolute references --------------------------------------------------
def test_default_labels_do_not_collide_and_refs_are_absolute(tmp_path, monkeypatch):
    from trustlab.models import create_model
    from trustlab.train.checkpoint import save_model

    monkeypatch.setattr("trustlab.platform.submissions.run_sandboxed", _fake_model_outcome)
    monkeypatch.chdir(tmp_path)
    store = RunStore(tmp_path / "store")
    train = store.create_run("train", "t", {})
    torch.manual_seed(0)
    save_model(create_model("mlp", in_channels=1, image_size=16), train.dir / "model.safetensors")
    train.finish({})
    bench = get_benchmark("robustness-quick")
    rel = os.path.relpath(train.dir / "model.safetensors")
    res = submit(rel, bench, kind="model", store=store)
    assert res.label == f"run-{train.id:06d}" and res.run.name == f"robustness-quick/{res.label}"
    assert res.run.config["submission"]["ref"] == str(train.dir / "model.safetensors")
    # two different files both called model.safetensors: the second gets a hash suffix
    other = tmp_path / "elsewhere"
    other.mkdir()
    (other / "net.py").write_text(textwrap.dedent(TINY_NET))
    save_file({"fc.weight": torch.zeros(10, 256), "fc.bias": torch.zeros(10)},
              str(other / "model.safetensors"))  # fmt: skip
    save_file({"fc.weight": torch.ones(10, 256), "fc.bias": torch.zeros(10)},
              str(tmp_path / "model.safetensors"))  # fmt: skip
    first = submit("elsewhere/model.safetensors", bench, kind="model",
                   arch="elsewhere/net.py:TinyNet", store=store)  # fmt: skip
    assert first.label == "model"
    assert first.run.config["submission"]["ref"] == (
        f"{other / 'model.safetensors'} --arch {other / 'net.py'}:TinyNet"
    )
    second = submit("model.safetensors", bench, kind="model", arch="elsewhere/net.py:TinyNet",
                    store=store)  # fmt: skip
    assert second.label == f"model-{second.source_hash[:7]}" and second.label != first.label
    # a defense given by a relative file is recorded by its absolute path
    Path("mine.py").write_text(KEEP)
    monkeypatch.setattr("trustlab.platform.submissions.run_sandboxed", _fake_outcome)
    d = submit("mine.py:Keep", "backdoor-quick", kind="defense", store=store)
    assert d.label == "Keep" and d.run.config["submission"]["ref"] == f"{tmp_path}/mine.py:Keep"


# -- 4. the run exists while it is evaluated -------------------------------------------------
def test_run_is_recorded_running_before_the_sandbox(tmp_path, monkeypatch):
    store = RunStore(tmp_path / "store")
    path = tmp_path / "mine.py"
    path.write_text(KEEP)
    seen = []

    def sandbox(bench, task, **kw):
        (run,) = store.list(kind=KIND)
        seen.append((run.status, run.name, run.config["submission"]["label"]))
        assert find_cached(store, run.config["cache_key"]) is None  # a running run: no hit
        return _fake_outcome()

    monkeypatch.setattr("trustlab.platform.submissions.run_sandboxed", sandbox)
    lines: list[str] = []
    res = submit(f"{path}:Keep", "backdoor-quick", kind="defense", store=store,
                 notify=lines.append)  # fmt: skip
    assert seen == [("running", "backdoor-quick/Keep", "Keep")]
    assert res.ok and store.get(res.run.id).status == "finished"
    assert f"as run {res.run.id}" in lines[0]
    assert find_cached(store, res.cache_key).id == res.run.id


def _processes_in(folder: Path) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if Path(os.readlink(proc / "cwd")) == folder:
                    found.append(int(proc.name))
            except OSError:
                continue
    return found


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_killed_parent_leaves_an_interrupted_run_and_no_evaluation(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    (work / "slow.py").write_text("import time\ntime.sleep(300)\n\nclass Slow:\n    pass\n")
    script = textwrap.dedent(f"""
        from trustlab.platform.benchmarks import get_benchmark
        from trustlab.platform.submissions import submit
        from trustlab.results import RunStore
        bench = get_benchmark("backdoor-quick").scaled(seeds=(0,))
        submit("slow.py:Slow", bench, kind="defense", store=RunStore({str(tmp_path / 's')!r}),
               timeout=600)
    """)  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    parent = subprocess.Popen([sys.executable, "-c", script], cwd=work, env=env)
    try:
        store = RunStore(tmp_path / "s")
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:  # the run, then the sandbox's child, appear
            runs = store.list(kind=KIND) if (tmp_path / "s").exists() else []
            if runs and len(_processes_in(work)) >= 2:
                break
            assert parent.poll() is None, "the submitting process ended early"
            time.sleep(0.5)
        (run,) = store.list(kind=KIND)
        assert run.status == "running"
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait()
        deadline = time.monotonic() + 20
        while _processes_in(work) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _processes_in(work) == []  # the evaluation died with its parent
        assert store.get(run.id).status == "interrupted"
        assert find_cached(store, run.config["cache_key"]) is None
        store.check()
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        for pid in _processes_in(work):
            os.kill(pid, signal.SIGKILL)


# -- 5. the stage a failure happened in --------------------------------------------------------
def test_stage_text_and_reason(tmp_path):
    (tmp_path / "stage.json").write_text('{"stage": "planting attacks", "detail": "blend, seed 2"}')
    stage = read_stage(tmp_path)
    assert stage == {"stage": "planting attacks", "detail": "blend, seed 2"}
    assert stage_text(stage) == (
        "while the benchmark was planting attacks (its own work, not the submission's code; "
        "blend, seed 2)"
    )
    user = {"stage": "running the submission", "detail": "seed 0"}
    assert _with_stage("ValueError: boom.", user) == (
        "ValueError: boom [while running the submission (seed 0)]."
    )
    (tmp_path / "stage.json").write_text('{"stage": "rm -rf"}')
    assert read_stage(tmp_path) == {} and _with_stage("x", {}) == "x"


def test_timeout_while_planting_says_so(tmp_path):
    path = tmp_path / "keep.py"
    path.write_text(KEEP)
    bench = get_benchmark("backdoor-quick").scaled(
        seeds=(0,), attacks=("badnets",), data={"train_size": 300, "test_size": 100},
        model={"train": {"epochs": 10_000, "lr": 0.05, "batch_size": 64}},
    )  # fmt: skip
    store = RunStore(tmp_path / "store")
    res = submit(f"{path}:Keep", bench, kind="defense", store=store, timeout=15)
    assert res.failure == "timeout", res.reason
    assert "time limit of 15 s" in res.reason
    assert "while the benchmark was planting attacks" in res.reason
    assert "not the submission's code; badnets, seed 0" in res.reason
    assert "raise --timeout" in res.reason
    assert store.get(res.run.id).error == res.reason


def test_raised_failure_names_its_stage(tmp_path):
    path = tmp_path / "broken.py"
    path.write_text("raise RuntimeError('broken at import')\n\nclass X:\n    pass\n")
    res = submit(f"{path}:X", "backdoor-quick", kind="defense",
                 store=RunStore(tmp_path / "store"), timeout=120)  # fmt: skip
    assert res.failure == "raised"
    assert "RuntimeError: broken at import" in res.reason
    assert "[while loading the submission (importing its module)]" in res.reason


# -- 6. the docstring's example names a class that exists ------------------------------------
def test_source_hash_docstring_example_exists():
    (spec,) = re.findall(r'source_hash\("([^"]+)"', subs.source_hash.__doc__ or "")
    check_object_exists(str(REPO / spec), "defense")
    assert len(source_hash(str(REPO / spec), kind="defense")) == 64
