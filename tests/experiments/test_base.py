"""The reproduction machinery: the table's statistics, claims, storing, resuming."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from trustlab.errors import InputError
from trustlab.experiments.base import (
    Claim,
    Experiment,
    Preset,
    ResultTable,
    reproduce,
    resume_reproduction,
)
from trustlab.experiments.noisy_labels import beats_ce, clean_within
from trustlab.registry import EXPERIMENTS
from trustlab.results import RunStore

CALLS: list[tuple[str, int]] = []
INTERRUPT_AT: list[int] = []


class Toy(Experiment):
    name = "toy-test"
    title = "toy"
    paper = "none"
    keys = ("arm",)
    metrics = ("score",)
    presets = {"smoke": Preset("smoke", "digits", "mlp", seeds=2, options={"arms": ("a", "b")})}
    claims = (
        Claim(
            "a-beats-b",
            "arm a scores higher than arm b",
            lambda t: (
                t.mean("score", arm="a") > t.mean("score", arm="b"),
                f"a {t.mean('score', arm='a'):.2f} b {t.mean('score', arm='b'):.2f}",
            ),
        ),
    )

    def jobs(self, preset: Preset) -> list[dict[str, Any]]:
        return [{"arm": a} for a in preset.options["arms"]]

    def run_job(self, preset, job, seed, device) -> dict[str, float]:
        if INTERRUPT_AT and len(CALLS) == INTERRUPT_AT[0]:
            INTERRUPT_AT.clear()
            raise KeyboardInterrupt
        CALLS.append((job["arm"], seed))
        return {"score": (2.0 if job["arm"] == "a" else 1.0) + seed}


if "toy-test" not in EXPERIMENTS:
    EXPERIMENTS.register("toy-test", "toy")(Toy)


def test_table_statistics() -> None:
    rows = [{"k": "x", "m": 1.0}, {"k": "x", "m": 3.0}, {"k": "y", "m": 5.0}]
    t = ResultTable(("k",), ("m",), rows)
    (x, y) = t.summary()
    assert (x["k"], x["m"], x["m_std"], x["seeds"]) == ("x", 2.0, 1.0, 2)
    assert (y["m"], y["m_std"]) == (5.0, 0.0)
    assert t.mean("m", k="x") == 2.0 and t.has(k="y") and not t.has(k="z")
    with pytest.raises(KeyError):
        t.mean("m", k="z")
    assert "2.00 [1.00, 3.00]" in t.to_markdown()  # two seeds: the bootstrap sees their range
    assert (x["m_lo"], x["m_hi"]) == (1.0, 3.0) and (y["m_lo"], y["m_hi"]) == (5.0, 5.0)
    assert "| 5.00 |" in t.to_markdown()  # one seed: no interval


def test_table_statistics_with_a_non_finite_seed() -> None:
    """A seed whose metric is inf (e.g. an epsilon without a bound) gives a NaN spread, not a
    crash of the table (statistics.pstdev raises on inf)."""
    rows = [{"k": "x", "m": 1.0}, {"k": "x", "m": math.inf}]
    (x,) = ResultTable(("k",), ("m",), rows).summary()
    assert x["m"] == math.inf and math.isnan(x["m_std"])


def _noisy_table(acc: dict[tuple[str, str], float]) -> ResultTable:
    rows = [{"noise": n, "loss": loss, "last_acc": a} for (n, loss), a in acc.items()]
    return ResultTable(("noise", "loss"), ("last_acc",), rows)


def test_noisy_label_claims() -> None:
    good = {
        ("none", "ce"): 0.98,
        ("none", "sce"): 0.97,
        ("sym:0.4", "ce"): 0.70,
        ("sym:0.4", "sce"): 0.76,
        ("asym:0.4", "ce"): 0.80,
        ("asym:0.4", "sce"): 0.85,
    }
    res = beats_ce(("sce",)).evaluate(_noisy_table(good))
    assert res.verdict == "PASS" and "sym:0.4 sce 76.0 vs CE 70.0: gap 6.0 points" in res.detail
    bad = {**good, ("asym:0.4", "sce"): 0.84}
    res = beats_ce(("sce",)).evaluate(_noisy_table(bad))
    assert res.verdict == "FAIL" and "gap 4.0 points" in res.detail
    assert clean_within(0.03).evaluate(_noisy_table(good)).verdict == "PASS"
    far = {**good, ("none", "sce"): 0.94}
    res = clean_within(0.03).evaluate(_noisy_table(far))
    assert res.verdict == "FAIL" and "-4.0" in res.detail
    assert beats_ce(("sce",)).evaluate(_noisy_table({("none", "ce"): 0.9})).verdict == "FAIL"


def test_reproduce_stores_table_and_claims(_isolated_home) -> None:
    CALLS.clear()
    rep = reproduce("toy-test", "smoke", device="cpu", workers=1, progress=False)
    assert rep.passed and sorted(CALLS) == [("a", 0), ("a", 1), ("b", 0), ("b", 1)]
    assert rep.table.mean("score", arm="a") == 2.5
    run = RunStore(_isolated_home).get(rep.run.id)
    assert run.kind == "reproduce" and run.status == "finished"
    assert run.summary["passed"] is True
    table = json.loads((run.dir / "table.json").read_text())
    assert len(table["rows"]) == 4
    assert "PASS" in (run.dir / "report.md").read_text()
    with pytest.raises(InputError, match="no preset 'huge'"):
        reproduce("toy-test", "huge", device="cpu")
    with pytest.raises(InputError, match="unknown experiment"):
        reproduce("nope", "smoke", device="cpu")


def test_interrupted_reproduction_resumes_without_redoing_jobs(_isolated_home) -> None:
    CALLS.clear()
    INTERRUPT_AT.append(2)
    with pytest.raises(KeyboardInterrupt):
        reproduce("toy-test", "smoke", device="cpu", workers=1, progress=False, seed=5)
    (run,) = RunStore(_isolated_home).list()
    assert run.status == "interrupted" and len(run.metrics(phase="row")) == 2
    done = list(CALLS)
    rep = resume_reproduction(run, workers=1, progress=False)
    assert rep.passed and len(CALLS) == 4 and CALLS[:2] == done  # only the two missing jobs
    assert {r["seed"] for r in rep.table.rows} == {5, 6}
    assert not math.isnan(rep.table.mean("score", arm="b"))


def test_resume_refuses_a_changed_preset(_isolated_home, monkeypatch) -> None:
    CALLS.clear()
    INTERRUPT_AT.append(1)
    with pytest.raises(KeyboardInterrupt):
        reproduce("toy-test", "smoke", device="cpu", workers=1, progress=False)
    (run,) = RunStore(_isolated_home).list()
    changed = Preset("smoke", "digits", "mlp", seeds=2, options={"arms": ("b", "a")})
    monkeypatch.setattr(Toy, "presets", {"smoke": changed})
    with pytest.raises(InputError, match="cannot be reused"):
        resume_reproduction(run, workers=1, progress=False)
    assert run.refresh().status == "interrupted"  # a refused resume leaves the run as it was


def test_option_overrides_are_recorded_and_kept_on_resume(_isolated_home) -> None:
    CALLS.clear()
    INTERRUPT_AT.append(1)
    with pytest.raises(KeyboardInterrupt):
        reproduce("toy-test", "smoke", device="cpu", workers=1, progress=False,
                  options={"arms": ("b", "a")})  # fmt: skip
    (run,) = RunStore(_isolated_home).list()
    assert run.config["overrides"] == {"arms": ["b", "a"]}
    rep = resume_reproduction(run, workers=1, progress=False)
    assert CALLS == [("b", 0), ("b", 1), ("a", 0), ("a", 1)]  # the overridden order, none twice
    assert [r["arm"] for r in rep.table.rows] == ["b", "b", "a", "a"]


def test_bad_workers_and_device_store_nothing(_isolated_home) -> None:
    with pytest.raises(InputError, match="--workers"):
        reproduce("toy-test", "smoke", device="cpu", workers=0, progress=False)
    with pytest.raises(InputError):
        reproduce("toy-test", "smoke", device="tpu", progress=False)
    assert not (_isolated_home / "trustlab.db").exists() or not RunStore(_isolated_home).list()


class Staged(Experiment):
    """Jobs leave files in the work folder; summarize builds the table from them."""

    name = "staged-test"
    title = "staged"
    paper = "none"
    keys = ("pair",)
    metrics = ("total",)
    presets = {"smoke": Preset("smoke", "digits", "mlp", seeds=1)}
    claims = ()

    def jobs(self, preset: Preset) -> list[dict[str, Any]]:
        return [{"part": p} for p in ("x", "y")]

    def run_job(self, preset, job, seed, device) -> dict[str, float]:
        assert self.workdir is not None and self.workdir.name == "work"
        (self.workdir / f"{job['part']}.txt").write_text(str(len(job["part"]) + seed))
        return {"done": 1.0}

    def summarize(self, preset, rows, device):
        assert [r["part"] for r in rows] == ["x", "y"]
        values = {p: int((self.workdir / f"{p}.txt").read_text()) for p in ("x", "y")}
        return [{"pair": "x+y", "seed": 0, "total": float(values["x"] + values["y"])}]


if "staged-test" not in EXPERIMENTS:
    EXPERIMENTS.register("staged-test", "staged")(Staged)


def test_summarize_builds_the_table_from_files_the_jobs_left(tmp_path) -> None:
    # (worker processes get the same work folder: tests/experiments/test_sgm_reproduction.py)
    store = RunStore(tmp_path)
    rep = reproduce("staged-test", "smoke", store=store, progress=False, workers=1)
    assert rep.table.summary()[0]["total"] == 2.0
    assert sorted(p.name for p in (rep.run.dir / "work").iterdir()) == ["x.txt", "y.txt"]
