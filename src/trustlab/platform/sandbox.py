"""Run a submission's evaluation in its own process, with a wall-time and a memory limit.

:func:`run_sandboxed` writes the task (the benchmark's whole definition and the submission's
reference, JSON) into a fresh temporary folder and starts ``python -m trustlab.platform.sandbox
FOLDER`` in a new session (its own process group) with the parent's working directory and
``OMP_NUM_THREADS=1``. The child asks Linux to kill it when its parent dies
(``PR_SET_PDEATHSIG``), limits its address space (``RLIMIT_AS``), loads the user's object
(:func:`~trustlab.utils.imports.load_object`, or
:func:`~trustlab.train.checkpoint.load_user_model` / :func:`~trustlab.train.checkpoint.load_model`
for a model: safetensors only), scores it (:meth:`~trustlab.platform.benchmarks.Benchmark.
evaluate`) and writes ``result.json``; as it goes it writes the stage it is in to
``stage.json`` (:data:`~trustlab.platform.benchmarks.STAGES`: ``"starting"``, ``"loading the
submission"``, ``"loading data"``, ``"planting attacks"``, ``"running the submission"``,
``"scoring"``, ...), which a failure's reason names (:func:`stage_text`). The parent waits at
most ``timeout`` seconds, then kills the whole process group; it only ever parses JSON from the
child (it never unpickles anything), and checks the result's shape before it trusts it.

The outcome (:class:`SandboxOutcome`) is ``ok`` with the result, or a failure of one kind:

- ``"raised"``: the submission (or its loading) raised; the reason is ``"Type: message"`` and the
  traceback summary the last frames of the child's traceback;
- ``"timeout"``: the evaluation ran past ``timeout`` seconds (the process group was killed); a
  timeout in the benchmark's own work (planting its attacks, training its model) says so;
- ``"memory"``: it ran out of memory under the limit (a ``MemoryError``, torch's "can't allocate
  memory", or the process killed by the kernel);
- ``"malformed"``: the submission's output had the wrong type or shape
  (:class:`~trustlab.platform.benchmarks.MalformedSubmission`), or the child's result is not the
  JSON the parent expects.

Example::

    outcome = run_sandboxed(get_benchmark("backdoor-quick"),
                            {"kind": "defense", "ref": "my_defense.py:MyDefense"},
                            timeout=600, memory_mb=4096)
    outcome.ok, outcome.failure, outcome.reason
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trustlab.errors import InputError
from trustlab.platform.benchmarks import (
    STAGES,
    Benchmark,
    MalformedSubmission,
    benchmark_from_dict,
)
from trustlab.utils.executor import die_with_parent

__all__ = ["FAILURES", "STAGES", "SandboxOutcome", "check_limits", "run_sandboxed", "stage_text"]

#: the kinds of failure
FAILURES = ("raised", "timeout", "memory", "malformed")
#: the smallest memory limit (importing torch alone takes about 0.6 GB of address space)
MIN_MEMORY_MB = 1024
_MEMORY_WORDS = ("can't allocate memory", "cannot allocate memory", "out of memory",
                 "std::bad_alloc", "not enough memory")  # fmt: skip
_LOG_TAIL = 4000
#: the file the child writes its current stage to (``{"stage", "detail"}``)
STAGE_FILE = "stage.json"


@dataclass
class SandboxOutcome:
    """What one sandboxed evaluation gave.

    Attributes:
        ok: it finished and its result has the expected shape.
        result: the evaluation (``scores``, ``primary``, ``higher_is_better``, ``details``), or
            None.
        failure: ``None``, or one of :data:`FAILURES`.
        reason: one line: why it failed ("" when ok).
        traceback: the summary of the child's traceback ("" when there is none).
        wall_s: seconds from the child's start to its end (or to the kill).
        log: the tail of the child's standard output and error.

    Example::

        if not outcome.ok:
            print(outcome.failure, outcome.reason)
    """

    ok: bool
    result: dict[str, Any] | None = None
    failure: str | None = None
    reason: str = ""
    traceback: str = ""
    wall_s: float = 0.0
    log: str = ""


def run_sandboxed(
    benchmark: Benchmark,
    submission: Mapping[str, Any],
    *,
    timeout: float,
    memory_mb: int,
) -> SandboxOutcome:
    """Evaluate ``submission`` on ``benchmark`` in a child process (see the module).

    Args:
        benchmark: the benchmark (its whole definition travels to the child).
        submission: ``{"kind": "defense", "ref": "module:Name" | "file.py:Name"}`` or
            ``{"kind": "model", "weights": path, "arch": "file.py:Class" | None}``; file paths
            are resolved against the current directory.
        timeout: wall-time limit in seconds (> 0); the process group is killed after it.
        memory_mb: address-space limit of the child in MiB (at least :data:`MIN_MEMORY_MB`).

    Returns:
        A :class:`SandboxOutcome`; a failing submission is an outcome, never an exception.

    Raises:
        InputError: a bad limit.
    """
    check_limits(timeout, memory_mb)
    with tempfile.TemporaryDirectory(prefix="trustlab-sandbox-") as tmp:
        folder = Path(tmp)
        task = {"benchmark": benchmark.to_dict(), "submission": dict(submission),
                "memory_mb": memory_mb, "parent": os.getpid()}  # fmt: skip
        (folder / "task.json").write_text(json.dumps(task))
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
               "OPENBLAS_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}  # fmt: skip
        log_path = folder / "child.log"
        start = time.monotonic()
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "trustlab.platform.sandbox", str(folder)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                start_new_session=True,
            )  # fmt: skip
            timed_out = False
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                timed_out = True
            finally:
                _kill_group(proc)
        wall = time.monotonic() - start
        log_text = _tail(log_path)
        stage = read_stage(folder)
        if timed_out:
            reason = f"the evaluation ran past its time limit of {timeout:g} s and was stopped"
            if stage and STAGES[stage["stage"]] == "benchmark":
                reason += (f" {stage_text(stage)}: the benchmark alone needs more time than "
                           "this; raise --timeout")  # fmt: skip
            elif stage:
                reason += f" {stage_text(stage)}"
            return SandboxOutcome(False, failure="timeout", wall_s=wall, log=log_text,
                                  reason=reason + ".")  # fmt: skip
        out = _read_outcome(folder / "result.json", proc.returncode, wall, log_text, benchmark)
        if not out.ok:
            out.reason = _with_stage(out.reason, stage)
        return out


def check_limits(timeout: Any, memory_mb: Any) -> None:
    """Refuse a time or memory limit the sandbox cannot run under (before anything starts).

    Args:
        timeout: seconds, a finite number > 0.
        memory_mb: MiB, an integer of at least :data:`MIN_MEMORY_MB`.

    Raises:
        InputError: a bad limit, named with the fix.

    Example::

        check_limits(600, 4096)  # fine; check_limits(0, 4096) raises
    """
    ok = isinstance(timeout, (int, float)) and not isinstance(timeout, bool)
    if not (ok and math.isfinite(timeout) and timeout > 0):
        raise InputError(
            f"the timeout must be a positive number of seconds (e.g. --timeout 600), got "
            f"{timeout!r}."
        )
    if not isinstance(memory_mb, int) or isinstance(memory_mb, bool) or memory_mb < MIN_MEMORY_MB:
        raise InputError(
            f"the memory limit must be at least {MIN_MEMORY_MB} MiB (importing torch alone needs "
            f"about 600; e.g. --memory-mb 4096), got {memory_mb!r}."
        )


def read_stage(folder: Path) -> dict[str, str]:
    """The last stage the child wrote (``{"stage", "detail"}``; empty when it wrote none)."""
    try:
        doc = json.loads((folder / STAGE_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}
    if not isinstance(doc, dict) or doc.get("stage") not in STAGES:
        return {}
    return {"stage": str(doc["stage"]), "detail": str(doc.get("detail", ""))[:200]}


def stage_text(stage: Mapping[str, str]) -> str:
    """Where an evaluation was, for a failure's reason: ``"while the benchmark was planting
    attacks (badnets, seed 0; its own work, before or between the submission's code)"``, or
    ``""`` when unknown.

    Example::

        stage_text({"stage": "running the submission", "detail": "seed 0"})
        # 'while running the submission (seed 0)'
    """
    name = stage.get("stage", "")
    if name not in STAGES:
        return ""
    detail = stage.get("detail", "")
    if STAGES[name] == "benchmark":
        extra = "; " + detail if detail else ""
        return (f"while the benchmark was {name} (its own work, not the submission's "
                f"code{extra})")  # fmt: skip
    return f"while {name}" + (f" ({detail})" if detail else "")


def _with_stage(reason: str, stage: Mapping[str, str]) -> str:
    """``reason`` with the stage added before its final full stop."""
    where = stage_text(stage)
    if not where or where in reason:
        return reason
    return f"{reason.rstrip().rstrip('.')} [{where}]."


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the child's process group (its own session: the child and whatever it
    started), then reap the child."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _tail(path: Path) -> str:
    try:
        data = path.read_bytes()
    except OSError:
        return ""
    return data[-_LOG_TAIL:].decode("utf-8", errors="replace")


def _read_outcome(
    path: Path, returncode: int, wall: float, log: str, bench: Benchmark
) -> SandboxOutcome:
    """The outcome from the child's ``result.json`` (parsed as JSON only, then checked)."""
    if not path.is_file():
        if returncode < 0:
            sig = signal.Signals(-returncode).name if -returncode in signal.valid_signals() else ""
            low = log.lower()
            memory = -returncode == signal.SIGKILL or any(w in low for w in _MEMORY_WORDS)
            return SandboxOutcome(
                False, failure="memory" if memory else "raised", wall_s=wall, log=log,
                reason=f"the evaluation process was killed by {sig or -returncode}"
                + (" (out of memory)" if memory else "") + " before it wrote a result.",
            )  # fmt: skip
        return SandboxOutcome(
            False, failure="raised", wall_s=wall, log=log,
            reason=f"the evaluation process exited with code {returncode} without a result "
            "(did the submission call sys.exit or os._exit?).",
        )  # fmt: skip
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return SandboxOutcome(False, failure="malformed", wall_s=wall, log=log,
                              reason=f"the evaluation's result is not JSON ({exc}).")  # fmt: skip
    if not isinstance(doc, dict) or not isinstance(doc.get("ok"), bool):
        return SandboxOutcome(False, failure="malformed", wall_s=wall, log=log,
                              reason="the evaluation's result has no 'ok' flag.")  # fmt: skip
    if not doc["ok"]:
        failure = doc.get("failure") if doc.get("failure") in FAILURES else "raised"
        return SandboxOutcome(
            False, failure=failure, wall_s=wall, log=log, reason=str(doc.get("reason", ""))[:2000],
            traceback=str(doc.get("traceback", ""))[:4000],
        )  # fmt: skip
    problem = check_result(doc.get("result"), bench)
    if problem:
        why = f"the evaluation's result is malformed: {problem}"
        return SandboxOutcome(False, failure="malformed", wall_s=wall, log=log, reason=why)
    wall = float(doc.get("wall_s", wall)) if isinstance(doc.get("wall_s"), (int, float)) else wall
    return SandboxOutcome(True, result=doc["result"], wall_s=wall, log=log)


def _number_or_none(v: Any) -> bool:
    return v is None or (isinstance(v, (int, float)) and not isinstance(v, bool))


def check_result(result: Any, bench: Benchmark) -> str:
    """ "" when ``result`` is a well-formed evaluation of ``bench``, else what is wrong.

    Example::

        check_result({"scores": {}, "primary": "der"}, bench)  # "no scores"
    """
    if not isinstance(result, dict):
        return "not an object"
    scores = result.get("scores")
    if not isinstance(scores, dict) or not scores:
        return "no scores"
    known = {m.name for m in bench.metrics}
    for name, s in scores.items():
        if name not in known:
            return f"unknown metric {name!r}"
        if not isinstance(s, dict) or not all(
            _number_or_none(s.get(k)) for k in ("mean", "lo", "hi")
        ):
            return f"metric {name!r} has no mean, lo and hi numbers"
        vals = s.get("values")
        if not isinstance(vals, list) or not all(_number_or_none(v) for v in vals):
            return f"metric {name!r} has no list of values"
    if result.get("primary") not in scores:
        return f"the primary metric {result.get('primary')!r} is not among the scores"
    return ""


# -- the child -------------------------------------------------------------------------------
def _traceback_summary(exc: BaseException, frames: int = 6) -> str:
    """The last ``frames`` frames (file, line, function, code) and the exception line."""
    tb = traceback.extract_tb(exc.__traceback__)[-frames:]
    lines = [f'  File "{f.filename}", line {f.lineno}, in {f.name}' + (f"\n    {f.line}"
             if f.line else "") for f in tb]  # fmt: skip
    text = f"{type(exc).__name__}: {exc}"
    return "\n".join(["Traceback (most recent call last, last frames):", *lines, text])[:4000]


def _is_memory(exc: BaseException | None) -> bool:
    """A MemoryError or torch's allocation failure, also as the cause of another error (a
    module that ran out of memory while it was imported)."""
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, MemoryError):
            return True
        text = str(exc).lower()
        if isinstance(exc, RuntimeError) and any(w in text for w in _MEMORY_WORDS):
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


def _load_submission(sub: Mapping[str, Any]) -> Any:
    """The user's object: a defense (by spec) or a model (safetensors only)."""
    if sub["kind"] == "defense":
        from trustlab.utils.imports import load_object

        return load_object(str(sub["ref"]), what="defense")
    if sub.get("arch"):
        from trustlab.train.checkpoint import load_user_model

        return load_user_model(str(sub["weights"]), str(sub["arch"]))
    from trustlab.train.checkpoint import load_model

    return load_model(str(sub["weights"]))


def _child(folder: Path) -> int:
    """The child's whole life: limit memory, load, evaluate, write ``result.json``; the stage
    it is in goes to ``stage.json`` as it moves on."""
    import resource

    from trustlab.utils.io import write_json_atomic

    start = time.monotonic()
    task = json.loads((folder / "task.json").read_text())
    # a killed ``trustlab submit`` leaves no evaluation running
    die_with_parent(task.get("parent"), signal.SIGKILL)
    current = {"stage": "starting", "detail": "importing torch"}

    def stage(name: str, detail: str = "") -> None:
        current.update(stage=name, detail=detail)
        with contextlib.suppress(OSError):
            write_json_atomic(folder / STAGE_FILE, current)

    stage("starting", "importing torch")
    limit = int(task["memory_mb"]) << 20
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    out: dict[str, Any]
    try:
        import torch

        torch.set_num_threads(1)
        bench = benchmark_from_dict(task["benchmark"])
        stage("loading the submission", "importing its module"
              if task["submission"]["kind"] == "defense" else "its weights and class")  # fmt: skip
        submission = _load_submission(task["submission"])
        result = bench.evaluate(submission, stage=stage)
        out = {"ok": True, "result": result}
    except MalformedSubmission as exc:
        out = {"ok": False, "failure": "malformed", "reason": str(exc),
               "traceback": _traceback_summary(exc)}  # fmt: skip
    except BaseException as exc:  # noqa: BLE001 - every failure of user code is an outcome
        failure = "memory" if _is_memory(exc) else "raised"
        reason = f"{type(exc).__name__}: {exc}"
        if failure == "memory":
            reason = f"out of memory under the limit of {task['memory_mb']} MiB ({reason})"
        out = {"ok": False, "failure": failure, "reason": reason[:2000],
               "traceback": _traceback_summary(exc)}  # fmt: skip
    out["wall_s"] = time.monotonic() - start
    write_json_atomic(folder / "result.json", out)
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m trustlab.platform.sandbox FOLDER``: the child (see the module)."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or not (Path(args[0]) / "task.json").is_file():
        print("usage: python -m trustlab.platform.sandbox FOLDER (holding task.json)",
              file=sys.stderr)  # fmt: skip
        return 2
    return _child(Path(args[0]))


if __name__ == "__main__":
    sys.exit(main())
