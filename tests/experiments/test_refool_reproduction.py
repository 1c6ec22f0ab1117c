"""`trustlab reproduce refool --preset smoke`: clean, ranked Refool, and an unranked reflection
of the same pool for each reflection model (like with like)."""

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
def test_reproduce_refool_smoke(_isolated_home: Path) -> None:
    out = CliRunner().invoke(
        app,
        ["reproduce", "refool", "--preset", "smoke", "--device", "cpu", "--quiet"],
        catch_exceptions=False,
    )
    marks = re.findall(r"(PASS|FAIL|INCONCLUSIVE) ", out.output)
    assert len(marks) == 1, out.output
    assert out.exit_code == (0 if marks == ["PASS"] else 1)
    (run,) = RunStore(_isolated_home).list()
    rows = json.loads((run.dir / "table.json").read_text())["rows"]
    assert [r["model"] for r in rows] == [
        "clean", "refool", "unranked-in-focus", "unranked-out-of-focus", "unranked-ghost"
    ]  # fmt: skip
    for r in rows:
        assert 0 <= r["asr"] <= 1 and 0 <= r["clean_acc"] <= 1
    assert rows[0]["rate"] == 0 and all(abs(r["rate"] - 0.05) < 0.01 for r in rows[1:])
    record = json.loads((run.dir / "work" / "refool-seed0.json").read_text())
    assert record["chosen"] == record["ranking"][0]["candidate"]
    # the pool: 2 photographs x 3 models, those the authors' SSIM filter keeps
    assert 1 <= len(record["ranking"]) == len(record["candidates"]) <= 6
    assert all(0.7 < c["ssim"] < 0.85 for c in record["candidates"])
    assert len(record["rounds"]) == 1


def _table(asr: tuple[float, ...], rate: tuple[float, ...]) -> ResultTable:
    """refool rows with the given per-seed ASRs and poisoned fractions of the ranked attack."""
    exp = get_experiment("refool")
    rows = []
    for seed, (a, r) in enumerate(zip(asr, rate, strict=True)):
        rows.append({"model": "clean", "seed": seed, "clean_acc": 0.9, "asr": 0.1, "ra": 0.8,
                     "rate": 0.0})  # fmt: skip
        rows.append({"model": "refool", "seed": seed, "clean_acc": 0.89, "asr": a, "ra": 0.2,
                     "rate": r})  # fmt: skip
        for m, u in (("in-focus", 0.4), ("out-of-focus", 0.3), ("ghost", 0.2)):
            rows.append({"model": f"unranked-{m}", "seed": seed, "clean_acc": 0.89, "asr": u,
                         "ra": 0.5, "rate": r})  # fmt: skip
    return ResultTable(exp.keys, exp.metrics, rows)


def test_claim_judges_asr_and_rate_on_their_intervals() -> None:
    exp = get_experiment("refool")
    (ok,) = exp.check_claims(_table((0.85, 0.90, 0.95), (0.05, 0.05, 0.05)))
    assert ok.verdict == "PASS" and "Refool ASR 90.0% (95% interval" in ok.detail
    assert "by model: in-focus 40.0%, out-of-focus 30.0%, ghost 20.0%" in ok.detail
    # ASR 95/85/40: the mean (73.3%) meets 70% but the interval reaches below it
    (unsure,) = exp.check_claims(_table((0.95, 0.85, 0.40), (0.05, 0.05, 0.05)))
    assert unsure.verdict == "INCONCLUSIVE" and "per seed 95.0%/85.0%/40.0%" in unsure.detail
    (low,) = exp.check_claims(_table((0.50, 0.55, 0.60), (0.05, 0.05, 0.05)))
    assert low.verdict == "FAIL"
    (too_many,) = exp.check_claims(_table((0.85, 0.90, 0.95), (0.10, 0.10, 0.10)))
    assert too_many.verdict == "FAIL"  # more than 5% of the training set poisoned
    (edge,) = exp.check_claims(_table((0.70,), (0.05,)))  # the thresholds themselves, one seed
    assert edge.verdict == "PASS" and "1 seed: no interval" in edge.detail


@pytest.mark.parametrize("stage", [None, "after-augment"])
def test_ranking_poisons_at_the_presets_trigger_stage(
    monkeypatch: pytest.MonkeyPatch, stage: str | None
) -> None:
    """The trial models of the ranking get the preset's ``trigger_stage``, as the final model."""
    import dataclasses

    import torch

    import trustlab.experiments.refool as refool
    from trustlab.attacks.backdoor import PixelTrigger
    from trustlab.data import ArrayDataset

    exp = get_experiment("refool")
    smoke = exp.presets["smoke"]
    options = {**smoke.options, **({} if stage is None else {"trigger_stage": stage})}
    preset = dataclasses.replace(smoke, options=options)
    got = {}

    class Stop(Exception):
        pass

    def fake_select(*args: object, **kwargs: object) -> None:
        got.update(kwargs)
        raise Stop

    monkeypatch.setattr(refool, "reflection_candidates", lambda *a, **k: [PixelTrigger()])
    monkeypatch.setattr(refool, "select_reflections", fake_select)
    data = ArrayDataset(torch.rand(20, 3, 8, 8), torch.arange(20) % 2, ["a", "b"])
    with pytest.raises(Stop):
        exp._select(preset, data, 0, torch.device("cpu"))
    assert got["trigger_stage"] == (stage or "poisoning")
