"""`trustlab reproduce video-backdoor --preset smoke`: clean, plain patch, adversarial patch."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from trustlab.cli import app
from trustlab.experiments.base import ResultTable, get_experiment
from trustlab.results import RunStore


@pytest.mark.slow
def test_reproduce_video_backdoor_smoke(_isolated_home: Path) -> None:
    out = CliRunner().invoke(
        app,
        ["reproduce", "video-backdoor", "--preset", "smoke", "--device", "cpu", "--quiet"],
        catch_exceptions=False,
    )
    marks = re.findall(r"(PASS|FAIL|INCONCLUSIVE) ", out.output)
    assert len(marks) == 1, out.output
    assert out.exit_code == (0 if marks == ["PASS"] else 1)
    (run,) = RunStore(_isolated_home).list()
    rows = json.loads((run.dir / "table.json").read_text())["rows"]
    assert [r["model"] for r in rows] == ["clean", "plain", "adversarial"]
    for r in rows:
        assert 0 <= r["asr"] <= 1 and 0 <= r["clean_acc"] <= 1 and r["asr"] + r["ra"] <= 1 + 1e-6
    assert (run.dir / "work" / "poisoned-seed0.png").is_file()


def _table(adv: tuple[float, ...], plain: tuple[float, ...]) -> ResultTable:
    """video-backdoor rows with the given per-seed ASRs of the two attacks."""
    exp = get_experiment("video-backdoor")
    rows = []
    for seed, (a, p) in enumerate(zip(adv, plain, strict=True)):
        rows.append({"model": "clean", "seed": seed, "clean_acc": 0.9, "asr": 0.05, "ra": 0.8})
        rows.append({"model": "plain", "seed": seed, "clean_acc": 0.9, "asr": p, "ra": 0.5})
        rows.append({"model": "adversarial", "seed": seed, "clean_acc": 0.9, "asr": a, "ra": 0.2})
    return ResultTable(exp.keys, exp.metrics, rows)


def test_claim_judges_the_paired_excess_over_twice_plain_with_its_interval() -> None:
    exp = get_experiment("video-backdoor")
    (ok,) = exp.check_claims(_table((0.80, 0.85, 0.90), (0.20, 0.25, 0.30)))
    assert ok.verdict == "PASS" and "ASR adversarial - 2 x plain +35.0 points" in ok.detail
    assert "over 3 seeds" in ok.detail and "ASR adversarial patch 85.0%" in ok.detail
    # 60/40/50 vs 20/30/20: adversarial - 2 plain = +20/-20/+10, mean above 0, interval across it
    (unsure,) = exp.check_claims(_table((0.60, 0.40, 0.50), (0.20, 0.30, 0.20)))
    assert unsure.verdict == "INCONCLUSIVE" and not unsure.passed
    assert "per seed +20.0 points/-20.0 points/+10.0 points" in unsure.detail
    (bad,) = exp.check_claims(_table((0.30, 0.35, 0.40), (0.25, 0.30, 0.30)))
    assert bad.verdict == "FAIL"
    (exactly,) = exp.check_claims(_table((0.6,), (0.3,)))  # exactly twice, one seed
    assert exactly.verdict == "PASS" and "1 seed: no interval" in exactly.detail
