"""`trustlab reproduce lid-inpainting --preset smoke`: the same inpainting model with no
regulariser, iLID, pLID and both, the three claims of methods.md decided on the table."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from trustlab.cli import app
from trustlab.experiments.base import ResultTable
from trustlab.experiments.inpainting import VARIANTS, LIDInpaintingReproduction
from trustlab.results import RunStore


@pytest.mark.slow
def test_reproduce_lid_inpainting_smoke(_isolated_home: Path) -> None:
    out = CliRunner().invoke(
        app,
        ["reproduce", "lid-inpainting", "--preset", "smoke", "--device", "cpu", "--quiet"],
        catch_exceptions=False,
    )
    marks = re.findall(r"(PASS|FAIL) ", out.output)
    assert len(marks) == 3, out.output
    assert out.exit_code == (0 if marks == ["PASS"] * 3 else 1)
    (run,) = RunStore(_isolated_home).list()
    rows = json.loads((run.dir / "table.json").read_text())["rows"]
    assert [r["variant"] for r in rows] == list(VARIANTS)
    for r in rows:
        assert 0 < r["ssim"] <= 1 and math.isfinite(r["psnr"]) and r["psnr"] > 5
        assert r["lid_gap"] == pytest.approx(abs(r["lid_restored"] - r["lid_original"]))
    # one feature space for every variant of a seed: the originals' LID is the same
    assert len({round(r["lid_original"], 9) for r in rows}) == 1
    assert len(list((run.dir / "work").glob("*-seed0.png"))) == 4


def test_variants_switch_exactly_their_regularisers() -> None:
    exp = LIDInpaintingReproduction()
    pre = exp.presets["quick"]
    lam = pre.options["lambda"]
    got = {
        v: (exp.settings(pre, v).lambda_ilid, exp.settings(pre, v).lambda_plid) for v in VARIANTS
    }
    assert got == {"none": (0, 0), "ilid": (lam, 0), "plid": (0, lam), "both": (lam, lam)}
    assert all(exp.settings(pre, v).extractor == pre.model for v in VARIANTS)


def test_claims_judge_the_paired_differences_with_their_interval() -> None:
    exp = LIDInpaintingReproduction()
    rows = []
    for seed, (none, both) in enumerate(((20.0, 21.0), (22.0, 21.5))):
        for variant, psnr in (("none", none), ("both", both)):
            rows.append({"variant": variant, "seed": seed, "psnr": psnr, "ssim": 0.5,
                         "lid_gap": 1.0 if variant == "none" else 0.5})  # fmt: skip
    table = ResultTable(exp.keys, exp.metrics, rows)
    psnr, ssim, gap = exp.check_claims(table)
    # +1.0 and -0.5 dB: the mean is above 0 but the interval straddles it
    assert psnr.verdict == "INCONCLUSIVE" and "+1.00 dB/-0.50 dB" in psnr.detail
    assert ssim.verdict == "FAIL"  # equal is not higher
    assert gap.verdict == "PASS" and gap.passed
