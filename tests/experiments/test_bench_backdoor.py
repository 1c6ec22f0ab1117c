"""`trustlab bench backdoor`: the attack x defense matrix, stored cell by cell."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import trustlab.experiments.bench_backdoor as bench
from trustlab.cli import app
from trustlab.experiments.base import get_experiment
from trustlab.results import RunStore


@pytest.mark.slow
def test_bench_backdoor_smoke_matrix_and_resume(_isolated_home: Path, monkeypatch) -> None:
    out = CliRunner().invoke(
        app,
        ["bench", "backdoor", "--preset", "smoke", "--attacks", "badnets,blind",
         "--defenses", "nc,strip,spectral", "--device", "cpu", "--quiet"],
        catch_exceptions=False,
    )  # fmt: skip
    assert out.exit_code == 0, out.output
    (run,) = RunStore(_isolated_home).list()
    rows = json.loads((run.dir / "table.json").read_text())["rows"]
    assert [(r["attack"], r["defense"]) for r in rows] == [
        (a, d) for a in ("badnets", "blind") for d in ("nc", "strip", "spectral")
    ]
    page = (run.dir / "matrix.html").read_text()
    assert "<table>" in page and "blind" in page and "AUROC" in page
    blind = {r["defense"]: r for r in rows if r["attack"] == "blind"}
    # a dataset filter has nothing to read when the attack poisons its batches on the fly:
    # the cell does not apply (no numbers, "n/a" in the matrix), it is not a miss
    assert "recall" not in blind["spectral"] and "auroc" in blind["strip"]
    header, lines = bench.matrix(rows)
    assert lines[1][header.index("spectral: recall of poisoned samples")] == "n/a"
    assert "n/a" in page
    # accuracies as percentages, as report.md shows them
    assert header[:3] == ["attack", "C-Acc", "ASR"] and lines[0][1].endswith("%")
    # a cell run again (a resumed run's unfinished cell) loads the stored model
    exp = get_experiment("bench-backdoor")
    exp.workdir = run.dir / "work"

    def no_training(*a, **k):
        raise AssertionError("the stored model should be loaded, not trained again")

    monkeypatch.setattr(bench, "train_backdoor", no_training)
    pre = bench.BackdoorBench.presets["smoke"]
    again = exp.run_job(pre, {"attack": "badnets", "defense": "strip"}, 0, torch.device("cpu"))
    strip = next(r for r in rows if (r["attack"], r["defense"]) == ("badnets", "strip"))
    assert again["auroc"] == pytest.approx(strip["auroc"])


def test_bench_jobs_first_cells_first_and_only_applicable_ones() -> None:
    pre = bench.BackdoorBench.presets["smoke"]
    pre = type(pre)(
        **{**pre.__dict__, "options": {**pre.options, "attacks": ["badnets", "blind"],
                                       "defenses": ["spectral", "nc", "strip"]}}
    )  # fmt: skip
    jobs = [(j["attack"], j["defense"]) for j in get_experiment("bench-backdoor").jobs(pre)]
    # each attack's first cell (which trains its model) before the others; blind x spectral
    # does not apply, so blind's first cell is nc
    assert jobs == [("badnets", "spectral"), ("blind", "nc"), ("badnets", "nc"),
                    ("badnets", "strip"), ("blind", "strip")]  # fmt: skip


def test_applies_names_why_a_cell_does_not_apply() -> None:
    assert bench.applies("badnets", "spectral") is None
    assert bench.applies("blind", "nc") is None
    assert "no poisoned training set" in bench.applies("blind", "spectral")
    assert bench.applies("no-such-attack", "spectral") is None  # a stored run read back later


def test_bench_rejects_unknown_names(_isolated_home: Path) -> None:
    out = CliRunner().invoke(app, ["bench", "backdoor", "--attacks", "badnets,trojannn"])
    assert out.exit_code == 2 and "unknown attack trojannn" in out.output
    out = CliRunner().invoke(app, ["bench", "backdoor", "--defenses", "magic"])
    assert out.exit_code == 2 and "unknown defense magic" in out.output
