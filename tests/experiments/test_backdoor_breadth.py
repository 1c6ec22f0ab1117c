"""backdoor-breadth: the claims read the bench's cells; the smoke preset runs end to end."""

from __future__ import annotations

from pathlib import Path

import pytest

from trustlab.experiments.backdoor_breadth import BackdoorBreadth
from trustlab.experiments.base import ResultTable, get_experiment, reproduce


def _table(anomaly: dict[str, float], asr_after: float, lost: float, precision: float):
    rows = []
    for seed in (0, 1, 2):
        for attack, a in anomaly.items():
            rows.append({"attack": attack, "defense": "nc", "seed": seed, "anomaly": a,
                         "asr": 1.0, "clean_acc": 0.9})  # fmt: skip
        for defense in ("anp", "i-bau"):
            rows.append({"attack": "badnets", "defense": defense, "seed": seed, "asr": 1.0,
                         "clean_acc": 0.9, "clean_acc_after": 0.9 - lost,
                         "asr_after": asr_after})  # fmt: skip
        rows.append({"attack": "badnets", "defense": "abl", "seed": seed, "precision": precision})
    exp = BackdoorBreadth()
    return {c.claim: c for c in exp.check_claims(ResultTable(exp.keys, exp.metrics, rows))}


def test_claims_pass_and_fail_where_the_numbers_say() -> None:
    ok = _table({"badnets": 3.0, "wanet": 1.0, "iad": 1.2}, 0.02, 0.01, 0.9)
    assert all(c.verdict == "PASS" for c in ok.values())
    assert "mean ASR of the attacked models: badnets 100.0%" in ok["nc-evasion"].detail
    bad = _table({"badnets": 3.0, "wanet": 2.5, "iad": 1.2}, 0.5, 0.01, 0.2)
    assert {k: c.verdict for k, c in bad.items()} == {
        "nc-evasion": "FAIL", "anp-ibau-repair": "FAIL", "abl-isolation": "FAIL"
    }  # fmt: skip
    # accuracy lost beyond 5 points fails the repair even when ASR falls
    assert (
        _table({"badnets": 3.0, "wanet": 1.0, "iad": 1.0}, 0.0, 0.2, 0.9)["anp-ibau-repair"].verdict
        == "FAIL"
    )


def test_jobs_skip_abl_against_the_training_control_attacks() -> None:
    exp = get_experiment("backdoor-breadth")
    jobs = {(j["attack"], j["defense"]) for j in exp.jobs(exp.preset("quick"))}
    assert ("badnets", "abl") in jobs and ("wanet", "abl") not in jobs
    assert len(jobs) == 3 * 4 - 2


@pytest.mark.slow
def test_smoke_runs_every_cell(_isolated_home: Path) -> None:
    rep = reproduce("backdoor-breadth", "smoke", device="cpu", workers=1, progress=False)
    cells = {(r["attack"], r["defense"]): r for r in rep.table.rows}
    assert len(cells) == 12 and "anomaly" in cells["wanet", "nc"]
    assert "asr_after" in cells["badnets", "anp"] and "precision" in cells["badnets", "abl"]
    assert "precision" not in cells["iad", "abl"]  # does not apply: no poisoned data
    assert [c.claim for c in rep.claims] == ["nc-evasion", "anp-ibau-repair", "abl-isolation"]
    assert (rep.run.dir / "matrix.html").is_file()
