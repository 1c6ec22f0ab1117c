"""`trustlab reproduce advcam --preset smoke`: one victim, PGD vs AdvCam vs AdvCam-EOT."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from trustlab.cli import app
from trustlab.experiments.base import ResultTable
from trustlab.experiments.camouflage import (
    AdvCamReproduction,
    central_mask,
    transformed_success,
)
from trustlab.results import RunStore


def test_test_backgrounds_are_held_out() -> None:
    """The examples are tested on background photographs they were not crafted on, and that
    are not the style."""
    from trustlab.attacks.evasion.advcam import DEFAULT_BACKGROUNDS
    from trustlab.experiments.camouflage import TEST_BACKGROUNDS

    styles = {p.options["style"] for p in AdvCamReproduction.presets.values()}
    assert not set(TEST_BACKGROUNDS) & (set(DEFAULT_BACKGROUNDS) | styles)
    assert not set(DEFAULT_BACKGROUNDS) & styles


def test_transformed_success_pairs_the_draws_with_the_clean_images() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 3)).eval()
    x = torch.rand(6, 3, 8, 8)
    with torch.no_grad():
        y = model(x).argmax(1)
    scenes = torch.rand(2, 3, 8, 8)
    other = (x + 0.3 * torch.randn_like(x)).clamp(0, 1)
    out = transformed_success(model, {"clean": x, "copy": x.clone(), "other": other}, y,
                              scenes, 5, 0)  # fmt: skip
    assert out["clean"]["transformed_success_clean_correct"] == 0
    assert out["copy"] == out["clean"]  # the same draws for every method
    assert out == transformed_success(model, {"clean": x, "copy": x, "other": other}, y,
                                      scenes, 5, 0)  # fmt: skip
    for v in out["other"].values():
        assert 0 <= v <= 1


def test_central_mask() -> None:
    m = central_mask((10, 10), 0.6)
    assert int(m.sum()) == 36 and m[2:8, 2:8].eq(1).all()


@pytest.mark.slow
def test_reproduce_advcam_smoke(_isolated_home: Path) -> None:
    out = CliRunner().invoke(
        app,
        ["reproduce", "advcam", "--preset", "smoke", "--device", "cpu", "--quiet"],
        catch_exceptions=False,
    )
    marks = re.findall(r"(PASS|FAIL|INCONCLUSIVE) ", out.output)
    assert len(marks) == 3, out.output
    assert out.exit_code == (0 if set(marks) == {"PASS"} else 1)
    (run,) = RunStore(_isolated_home).list()
    rows = json.loads((run.dir / "table.json").read_text())["rows"]
    assert [r["method"] for r in rows] == ["clean", "pgd", "advcam", "advcam-eot"]
    assert rows[0]["success"] == 0  # correctly classified images, unchanged
    for r in rows:
        assert 0 <= r["success"] <= 1 and 0 <= r["transformed_success"] <= 1
        assert r["style_loss"] >= 0
    assert (run.dir / "advcam.png").stat().st_size > 0


def _advcam_table(success: list[float], ratio: list[float], eot: list[float]) -> ResultTable:
    """A hand-made table: per seed AdvCam's success, its style loss over PGD's (PGD's is 10) and
    AdvCam-EOT's success under transformations."""
    rows = []
    for seed, (s, r, e) in enumerate(zip(success, ratio, eot, strict=True)):
        rows += [
            {"method": "clean", "seed": seed, "success": 0.0, "transformed_success": 0.25,
             "transformed_success_clean_correct": 0.0, "style_loss": 20.0},
            {"method": "pgd", "seed": seed, "success": 1.0, "transformed_success": 0.5,
             "style_loss": 10.0},
            {"method": "advcam", "seed": seed, "success": s, "transformed_success": 0.5,
             "style_loss": 10.0 * r},
            {"method": "advcam-eot", "seed": seed, "success": s, "transformed_success": e,
             "transformed_success_clean_correct": e / 2, "style_loss": 10.0 * r},
        ]  # fmt: skip
    exp = AdvCamReproduction()
    return ResultTable(exp.keys, exp.metrics, rows)


def test_advcam_claims_judge_each_seed_with_the_interval() -> None:
    exp = AdvCamReproduction()
    verdicts = [c.verdict for c in exp.check_claims(_advcam_table([0.9] * 3, [0.2] * 3, [0.7] * 3))]
    assert verdicts == ["PASS"] * 3
    # each mean is on the claimed side (85%, 0.43, 63%) but one seed of three is not
    table = _advcam_table([0.9, 0.9, 0.75], [0.4, 0.3, 0.6], [0.7, 0.7, 0.5])
    success, style, eot = exp.check_claims(table)
    assert [success.verdict, style.verdict, eot.verdict] == ["INCONCLUSIVE"] * 3
    assert "90.0%/90.0%/75.0%" in success.detail and "needs >= 80.0%" in success.detail
    assert "0.40/0.30/0.60" in style.detail and "PGD success 100.0%" in style.detail
    assert "AdvCam without EOT 50.0%, clean images 25.0%" in eot.detail
    assert "still classified correctly: AdvCam-EOT 31.7%, AdvCam n/a" in eot.detail
    # every seed on the wrong side
    table = _advcam_table([0.5, 0.6, 0.7], [0.8, 0.9, 1.0], [0.3, 0.4, 0.5])
    assert [c.verdict for c in exp.check_claims(table)] == ["FAIL"] * 3
