"""`trustlab bench backdoor`: the attack x defense matrix, stored cell by cell."""

from __future__ import annotations

import json
import math
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
    # nothing in the data to find (the loss did it): no recall at all, not a miss
    assert math.isnan(blind["spectral"]["recall"]) and "—" in page
    # accuracies as percentages, as report.md shows them
    header, lines = bench.matrix(rows)
    assert header[:3] == ["attack", "C-Acc", "ASR"] and lines[0][1].endswith("%")
    # a rerun of a job skips the finished cells and reuses the stored model
    exp = get_experiment("bench-backdoor")
    exp.workdir = run.dir / "work"
    (exp.workdir / "cell-badnets-strip-seed0.json").unlink()
    calls = []
    real = bench.run_defense
    monkeypatch.setattr(
        bench, "run_defense", lambda name, *a, **k: calls.append(name) or real(name, *a, **k)
    )
    pre = bench.BackdoorBench.presets["smoke"]
    pre = type(pre)(
        **{**pre.__dict__, "options": {**pre.options, "defenses": ["nc", "strip", "spectral"]}}
    )
    exp.run_job(pre, {"attack": "badnets"}, 0, torch.device("cpu"))
    assert calls == ["strip"]


def test_bench_rejects_unknown_names(_isolated_home: Path) -> None:
    out = CliRunner().invoke(app, ["bench", "backdoor", "--attacks", "badnets,trojannn"])
    assert out.exit_code == 2 and "unknown attack trojannn" in out.output
    out = CliRunner().invoke(app, ["bench", "backdoor", "--defenses", "magic"])
    assert out.exit_code == 2 and "unknown defense magic" in out.output
