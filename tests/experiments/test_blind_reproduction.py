"""`trustlab reproduce blind --preset smoke`: clean, BadNets, blind pattern and pixel, the blind
pattern with the NC-evasion task, and Neural Cleanse on BadNets and on the evader; and
`reproduce blind-variants --preset smoke`: clean and the covert task (the semantic job needs
shapes10's texture record and is left out on digits)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from trustlab.cli import app
from trustlab.results import RunStore


@pytest.mark.slow
def test_reproduce_blind_smoke(_isolated_home: Path) -> None:
    out = CliRunner().invoke(
        app,
        ["reproduce", "blind", "--preset", "smoke", "--device", "cpu", "--quiet"],
        catch_exceptions=False,
    )
    marks = re.findall(r"(PASS|FAIL) ", out.output)
    assert len(marks) == 2, out.output
    assert out.exit_code == (0 if marks == ["PASS", "PASS"] else 1)
    (run,) = RunStore(_isolated_home).list()
    rows = json.loads((run.dir / "table.json").read_text())["rows"]
    models = [r["model"] for r in rows]
    assert models == ["clean", "badnets", "blind-pattern", "blind-pixel", "blind-nc-evasion"]
    for r in rows:
        assert 0 <= r["asr"] <= 1 and 0 <= r["clean_acc"] <= 1
        assert r["asr"] + r["ra"] <= 1 + 1e-6
        scanned = r["model"] in ("badnets", "blind-nc-evasion")
        assert ("nc_anomaly" in r) == scanned
        if scanned:
            assert r["nc_anomaly"] >= 0 and 0 <= r["nc_flagged"] <= 10
            assert r["nc_target_flagged"] in (0.0, 1.0)
            assert r["nc_target_flagged"] <= r["nc_flagged"]


@pytest.mark.slow
def test_reproduce_blind_variants_smoke(_isolated_home: Path) -> None:
    out = CliRunner().invoke(
        app,
        ["reproduce", "blind-variants", "--preset", "smoke", "--device", "cpu", "--quiet"],
        catch_exceptions=False,
    )
    assert out.exit_code == 0, out.output  # no claim: nothing can fail
    (run,) = RunStore(_isolated_home).list()
    rows = json.loads((run.dir / "table.json").read_text())["rows"]
    # the clean model is measured like the backdoored one: the covert metrics' baseline
    assert [r["model"] for r in rows] == ["clean/covert", "blind-covert"]
    for r in rows:
        assert 0 <= r["asr"] <= 1 and 0 <= r["clean_acc"] <= 1 and 0 <= r["ra"] <= 1


def test_blind_variants_jobs_include_the_semantic_backdoor_on_shapes10_only() -> None:
    from trustlab.experiments.base import get_experiment

    exp = get_experiment("blind-variants")
    quick = exp.preset("quick")
    assert [j["model"] for j in exp.jobs(quick)] == ["clean", "blind-semantic", "blind-covert"]
    other = quick.with_overrides("cifar10", None, None)
    assert [j["model"] for j in exp.jobs(other)] == ["clean", "blind-covert"]
