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
from trustlab.experiments.base import ResultTable
from trustlab.results import RunStore


@pytest.mark.slow
def test_reproduce_blind_smoke(_isolated_home: Path) -> None:
    out = CliRunner().invoke(
        app,
        ["reproduce", "blind", "--preset", "smoke", "--device", "cpu", "--quiet"],
        catch_exceptions=False,
    )
    marks = re.findall(r"(PASS|FAIL|INCONCLUSIVE) ", out.output)
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


def _blind_table(
    asr: dict[str, list[float]],
    drop: dict[str, list[float]],
    flagged: list[float],
    n_asr: int = 10**6,
    seeds: int = 3,
) -> ResultTable:
    """A hand-made ``blind`` table over 3 seeds: the clean model at 90% C-Acc, each model's ASR
    and C-Acc drop as given (default 99% and 1 point), BadNets' target flagged with index 4, and
    ``flagged`` classes of the evader per seed."""
    from trustlab.experiments.backdoors import ROWS, BlindReproduction

    rows = []
    for seed in range(seeds):
        for m in ROWS:
            row = {"model": m, "seed": seed, "ra": 0.0, "n_asr": n_asr}
            row["asr"] = asr.get(m, [0.99] * 3)[seed] if m != "clean" else 0.01
            row["clean_acc"] = 0.9 - (drop.get(m, [0.01] * 3)[seed] if m != "clean" else 0)
            if m == "badnets":
                row.update(nc_anomaly=4.0, nc_flagged=1.0, nc_target_flagged=1.0)
            if m == "blind-nc-evasion":
                row.update(nc_anomaly=1.0, nc_flagged=flagged[seed], nc_target_flagged=0.0)
            rows.append(row)
    exp = BlindReproduction()
    return ResultTable(exp.keys, exp.metrics, rows)


def test_blind_claims_judge_each_seed_with_the_interval() -> None:
    from trustlab.experiments.backdoors import BlindReproduction

    exp = BlindReproduction()
    # every part clearly on the claimed side: PASS
    acc, nc = exp.check_claims(_blind_table({}, {}, [0.0, 0.0, 0.0]))
    assert (acc.verdict, nc.verdict) == ("PASS", "PASS"), (acc.detail, nc.detail)
    assert "blind-pixel: ASR 99.0% (95% interval [99.0%, 99.0%] over 3 seeds and" in acc.detail
    assert "clean model C-Acc 90.0%" in acc.detail
    # blind-pixel's ASR: mean 96% >= 95% but the seeds 99/99/90 straddle it; NC flags one class
    # of the evader in one seed of three: both INCONCLUSIVE
    table = _blind_table({"blind-pixel": [0.99, 0.99, 0.90]}, {}, [0.0, 0.0, 1.0])
    acc, nc = exp.check_claims(table)
    assert (acc.verdict, nc.verdict) == ("INCONCLUSIVE", "INCONCLUSIVE"), (acc.detail, nc.detail)
    assert "99.0%/99.0%/90.0%" in acc.detail
    # BadNets loses 3-4 points of C-Acc in every seed: FAIL, whatever the rest says
    table = _blind_table({"blind-pixel": [0.99, 0.99, 0.90]}, {"badnets": [0.03, 0.04, 0.03]},
                         [1.0, 1.0, 2.0])  # fmt: skip
    acc, nc = exp.check_claims(table)
    assert (acc.verdict, nc.verdict) == ("FAIL", "FAIL"), (acc.detail, nc.detail)


def test_blind_asr_interval_covers_the_test_images_on_one_seed() -> None:
    from trustlab.experiments.backdoors import BlindReproduction

    exp = BlindReproduction()
    asr = {m: [0.97] for m in ("badnets", "blind-pattern", "blind-pixel", "blind-nc-evasion")}
    drop = {m: [0.01] for m in asr}
    # 97% of 900 test images: the Jeffreys interval is clear of 95%
    acc, _ = exp.check_claims(_blind_table(asr, drop, [0.0], n_asr=900, seeds=1))
    assert acc.verdict == "PASS" and "over 900 test examples" in acc.detail, acc.detail
    # 97% of 100: it is not
    acc, _ = exp.check_claims(_blind_table(asr, drop, [0.0], n_asr=100, seeds=1))
    assert acc.verdict == "INCONCLUSIVE", acc.detail
