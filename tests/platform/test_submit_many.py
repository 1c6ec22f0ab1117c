"""Several submissions at once (``submit_many``, ``trustlab submit --defense A --defense B``):
all checked before anything is recorded, evaluated as executor jobs, recorded by the driver as
each returns; a lost worker fails the runs it leaves, with the reason."""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Iterator
from typing import Any

import pytest
from typer.testing import CliRunner

from trustlab.cli import app
from trustlab.errors import InputError
from trustlab.platform.sandbox import SandboxOutcome
from trustlab.platform.submissions import KIND, submit_many
from trustlab.results import RunStore
from trustlab.utils.executor import Executor, LocalExecutor, Task, WorkerLost


def _outcome(bench: Any, task: dict, **limits: Any) -> SandboxOutcome:
    score = 0.25 if task["ref"].endswith(":A") else 0.75
    return SandboxOutcome(
        True, wall_s=1.0,
        result={"scores": {"der": {"mean": score, "lo": score, "hi": score, "values": [score]}},
                "primary": "der", "details": {}},
    )  # fmt: skip


@pytest.fixture
def defenses(tmp_path, monkeypatch):
    monkeypatch.setattr("trustlab.platform.submissions.run_sandboxed", _outcome)
    for name in ("A", "B", "C"):
        (tmp_path / f"{name.lower()}.py").write_text(
            f"class {name}:\n    def repair(self, model, clean):\n        return model\n"
        )
    return [f"{tmp_path / n.lower()}.py:{n}" for n in ("A", "B", "C")]


def test_each_is_evaluated_and_recorded_and_cache_hits_are_not_run(defenses, tmp_path) -> None:
    store = RunStore(tmp_path / "store")
    lines: list[str] = []
    with LocalExecutor(1) as ex:  # in this process: the fake sandbox applies
        first = submit_many(defenses[:2], "backdoor-quick", kind="defense", store=store,
                            executor=ex, notify=lines.append)  # fmt: skip
    assert [r.label for r in first] == ["A", "B"] and all(r.ok and not r.cached for r in first)
    assert [r.scores["der"]["mean"] for r in first] == [0.25, 0.75]
    assert len(lines) == 2
    assert all(f"as run {r.run.id}" in line for r, line in zip(first, lines, strict=True))
    with LocalExecutor(1) as ex:
        again = submit_many(defenses, "backdoor-quick", kind="defense", store=store, executor=ex)
    assert [r.cached for r in again] == [True, True, False] and again[2].label == "C"
    assert len(store.list(kind=KIND)) == 3


def test_labels_name_them(defenses, tmp_path) -> None:
    store = RunStore(tmp_path / "store")
    with LocalExecutor(1) as ex:
        out = submit_many(defenses[:2], "backdoor-quick", kind="defense", store=store,
                          executor=ex, labels=["first", None])  # fmt: skip
    assert [r.label for r in out] == ["first", "B"]
    with pytest.raises(InputError, match="one label per submission"):
        submit_many(defenses[:2], "backdoor-quick", kind="defense", store=store, labels=["x"])


def test_one_bad_submission_records_nothing(defenses, tmp_path) -> None:
    store = RunStore(tmp_path / "store")
    with pytest.raises(InputError, match="Missing"):
        submit_many([defenses[0], f"{tmp_path / 'a.py'}:Missing"], "backdoor-quick",
                    kind="defense", store=store)  # fmt: skip
    with pytest.raises(InputError, match="given twice"):
        submit_many([defenses[0], defenses[0]], "backdoor-quick", kind="defense", store=store)
    assert store.list() == []


class _LosesTheSecond(Executor):
    """Runs the first job in this process, then reports its worker lost."""

    @property
    def workers(self) -> int:
        return 1

    def as_completed(self, tasks: Iterable[Task]) -> Iterator[tuple[Hashable, Any]]:
        first, *rest = list(tasks)
        yield first.key, first.fn(*first.args, **first.kwargs)
        raise WorkerLost("the node died", key=rest[0].key)


def test_a_lost_worker_fails_the_runs_it_leaves(defenses, tmp_path) -> None:
    store = RunStore(tmp_path / "store")
    out = submit_many(defenses, "backdoor-quick", kind="defense", store=store,
                      executor=_LosesTheSecond())  # fmt: skip
    assert [r.ok for r in out] == [True, False, False]
    assert all("not evaluated: WorkerLost: the node died" in r.reason for r in out[1:])
    assert sorted(r.status for r in store.list(kind=KIND)) == ["failed", "failed", "finished"]


def test_cli_scores_several_and_refuses_a_label_for_them(defenses, _isolated_home) -> None:
    runner = CliRunner()
    args = ["submit", "--benchmark", "backdoor-quick", "--defense", defenses[0],
            "--defense", defenses[1]]  # fmt: skip
    bad = runner.invoke(app, [*args, "--label", "x"])
    assert bad.exit_code == 2 and "--label names one submission" in bad.output
    one = runner.invoke(app, ["submit", "--benchmark", "backdoor-quick", "--defense",
                              defenses[0], "--executor", "slurm"])  # fmt: skip
    assert one.exit_code == 2 and "unknown executor 'slurm'" in one.output
    assert RunStore().list() == []
