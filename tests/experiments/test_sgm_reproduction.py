"""`trustlab reproduce sgm --preset smoke`: three trained models, four transfer attacks, claims."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

import pytest
from typer.testing import CliRunner

from trustlab.attacks.evasion.sgm import sgm_branches
from trustlab.cli import app
from trustlab.errors import InputError
from trustlab.experiments.base import ResultTable
from trustlab.experiments.transferability import SGMReproduction
from trustlab.models import create_model, residual_branches
from trustlab.results import RunStore


@pytest.mark.slow
def test_reproduce_sgm_smoke_in_two_workers(_isolated_home: Path) -> None:
    out = CliRunner().invoke(
        app,
        ["reproduce", "sgm", "--preset", "smoke", "--device", "cpu", "--workers", "2", "--quiet"],
        catch_exceptions=False,
    )
    marks = re.findall(r"(PASS|FAIL|INCONCLUSIVE) ", out.output)
    assert len(marks) == 2, out.output
    assert out.exit_code == (0 if set(marks) == {"PASS"} else 1)
    (run,) = RunStore(_isolated_home).list()
    rows = json.loads((run.dir / "table.json").read_text())["rows"]
    assert [(r["attack"], r["target"]) for r in rows] == [
        (a, t) for a in ("pgd", "sgm", "mi", "sgm+mi") for t in ("mlp", "cnn-small")
    ]
    assert all(0 <= r["success"] <= 1 for r in rows)
    work = sorted(p.name for p in (run.dir / "work").glob("*.safetensors"))
    assert work == [f"{m}-seed0.safetensors" for m in ("cnn-small", "mlp", "source")]


def _sgm_table(success: dict[str, list[tuple[float, float]]]) -> ResultTable:
    """A hand-made table: per attack, per seed, the success on the targets ``a`` and ``b``."""
    rows = [
        {"attack": attack, "target": target, "seed": seed, "success": v, "target_acc": 0.9}
        for attack, seeds in success.items()
        for seed, pair in enumerate(seeds)
        for target, v in zip(("a", "b"), pair, strict=True)
    ]
    exp = SGMReproduction()
    return ResultTable(exp.keys, exp.metrics, rows)


def test_sgm_claims_judge_the_paired_gain_of_each_seed_with_the_interval() -> None:
    exp = SGMReproduction()
    base = [(0.2, 0.4), (0.1, 0.3), (0.3, 0.5)]  # per seed the mean over targets: 30/20/40%
    plus = lambda d: [(a + d, b + d) for a, b in base]  # noqa: E731
    # SGM +10 points over PGD in every seed, SGM+MI +2 over MI: PASS
    table = _sgm_table({"pgd": base, "sgm": plus(0.1), "mi": base, "sgm+mi": plus(0.02)})
    sgm, mi = exp.check_claims(table)
    assert (sgm.verdict, mi.verdict) == ("PASS", "PASS"), (sgm.detail, mi.detail)
    assert "SGM 40.0%, PGD 30.0%" in sgm.detail
    # gains +9/+9/-3 points (mean +5): the interval straddles both bars
    gains = [0.09, 0.09, -0.03]
    sgm_rows = [(a + g, b + g) for (a, b), g in zip(base, gains, strict=True)]
    table = _sgm_table({"pgd": base, "sgm": sgm_rows, "mi": base, "sgm+mi": sgm_rows})
    sgm, mi = exp.check_claims(table)
    assert (sgm.verdict, mi.verdict) == ("INCONCLUSIVE", "INCONCLUSIVE"), (sgm.detail, mi.detail)
    assert "9.0 points/9.0 points/-3.0 points" in sgm.detail
    # SGM+MI never beats MI: FAIL; SGM +3 points in every seed, short of 5: FAIL
    table = _sgm_table({"pgd": base, "sgm": plus(0.03), "mi": base, "sgm+mi": base})
    assert [c.verdict for c in exp.check_claims(table)] == ["FAIL", "FAIL"]


@pytest.mark.parametrize("preset", ["smoke", "quick", "real", "full"])
def test_presets_have_a_source_sgm_scales_and_targets_of_other_families(preset: str) -> None:
    """The source has blocks that SGM scales as the authors do (not ResNet-8, whose blocks all
    open a stage); the smoke, quick and real targets have no skip connections."""
    p = SGMReproduction().preset(preset)
    assert sgm_branches(create_model(p.model))
    if preset != "full":
        assert p.model == "resnet20" and p.options["eps"] >= 0.1
        for name, kwargs in p.options["targets"].values():
            assert not residual_branches(create_model(name, **kwargs))
    if preset in ("quick", "real"):
        assert p.seeds >= 2


def test_a_source_without_scaled_blocks_is_refused() -> None:
    p = SGMReproduction().preset("smoke")
    with pytest.raises(InputError, match="no block that SGM scales"):
        SGMReproduction().jobs(replace(p, model="resnet8"))
