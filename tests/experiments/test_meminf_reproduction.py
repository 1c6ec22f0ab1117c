"""`trustlab reproduce meminf-jem --preset smoke`: the undefended target under the threshold
attacks and LiRA, the JEM-defended and the DP-SGD models under the threshold attacks."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from trustlab.cli import app
from trustlab.experiments.base import ResultTable
from trustlab.experiments.meminf import MembershipInferenceJEM
from trustlab.results import RunStore


@pytest.mark.slow
def test_reproduce_meminf_jem_smoke(_isolated_home: Path) -> None:
    out = CliRunner().invoke(
        app,
        ["reproduce", "meminf-jem", "--preset", "smoke", "--device", "cpu", "--quiet"],
        catch_exceptions=False,
    )
    marks = re.findall(r"(PASS|FAIL|INCONCLUSIVE) ", out.output)
    assert len(marks) == 4, out.output
    assert out.exit_code == (0 if marks == ["PASS"] * 4 else 1)
    (run,) = RunStore(_isolated_home).list()
    rows = json.loads((run.dir / "table.json").read_text())["rows"]
    assert [r["model"] for r in rows] == ["undefended", "jem", "dp-sgd"]
    for r in rows:
        assert 0 <= r["test_acc"] <= 1 and 0 <= r["train_acc"] <= 1
        assert r["advantage"] == max(r["loss_advantage"], r["confidence_advantage"])
        assert 0 <= r["loss_auc"] <= 1 and 0 <= r["loss_tpr_at_01fpr"] <= r["loss_tpr_at_1fpr"]
        assert 0 <= r["label-only_auc"] <= 1  # the label-only attack scores every row
    assert "lira_auc" in rows[0] and "lira_auc" not in rows[1]
    assert 0 <= rows[0]["rmia_auc"] <= 1 and "rmia_auc" not in rows[1]
    assert 0 < rows[2]["epsilon"] <= 8 + 1e-6 and rows[2]["delta"] == 1e-5
    # the shadows are cached in the run's work folder (RMIA reads LiRA's: no more of them)
    assert len(list((run.dir / "work" / "shadows").rglob("*.safetensors"))) == 4


def _table(per_seed: list[dict[str, tuple[float, float]]]) -> ResultTable:
    """A table by hand: per seed, ``{model: (advantage, test_acc)}``."""
    exp = MembershipInferenceJEM()
    rows = []
    for seed, models in enumerate(per_seed):
        for model, (adv, acc) in models.items():
            row = {"model": model, "seed": seed, "advantage": adv, "test_acc": acc}
            row["label-only_auc"] = 0.55
            if model == "undefended":
                row.update(lira_tpr_at_1fpr=0.10, loss_tpr_at_1fpr=0.02 + 0.03 * seed,
                           lira_auc=0.7, loss_auc=0.6, rmia_auc=0.72,
                           rmia_tpr_at_1fpr=0.12 - 0.03 * seed)  # fmt: skip
            if model == "dp-sgd":
                row.update(epsilon=7.9, delta=1e-5)
            rows.append(row)
    return ResultTable(exp.keys, exp.metrics, rows)


def test_jem_claim_judges_the_cut_and_the_accuracy_loss_per_seed_with_their_interval() -> None:
    exp = MembershipInferenceJEM()
    # cut 80% and 30%: the mean (55%) is above 50% but the interval straddles it; losses 2, 4 pts
    straddle = _table([
        {"undefended": (0.40, 0.95), "jem": (0.08, 0.93), "dp-sgd": (0.30, 0.90)},
        {"undefended": (0.40, 0.95), "jem": (0.28, 0.91), "dp-sgd": (0.30, 0.90)},
    ])  # fmt: skip
    lira, jem, dp, _ = exp.check_claims(straddle)
    assert (
        jem.verdict == "INCONCLUSIVE"
        and "80%/30%" in jem.detail
        and "2.0 pts/4.0 pts" in (jem.detail)
    )
    # LiRA gains +8 and +5 points: PASS; DP-SGD cuts 0.10 on both seeds at epsilon 7.9: PASS
    assert lira.verdict == "PASS" and dp.verdict == "PASS" and "7.90/7.90" in dp.detail
    clear = _table([
        {"undefended": (0.40, 0.95), "jem": (0.10, 0.93), "dp-sgd": (0.30, 0.90)},
        {"undefended": (0.40, 0.95), "jem": (0.12, 0.91), "dp-sgd": (0.30, 0.90)},
        {"undefended": (0.50, 0.95), "jem": (0.10, 0.92), "dp-sgd": (0.30, 0.90)},
    ])  # fmt: skip
    assert exp.check_claims(clear)[1].verdict == "PASS"
    # the cut holds but every seed loses more than 10 points: FAIL, whatever the cut
    lossy = _table([
        {"undefended": (0.40, 0.95), "jem": (0.10, 0.80), "dp-sgd": (0.30, 0.90)},
        {"undefended": (0.40, 0.95), "jem": (0.12, 0.70), "dp-sgd": (0.30, 0.90)},
    ])  # fmt: skip
    assert exp.check_claims(lossy)[1].verdict == "FAIL"


def test_dp_claim_needs_every_seeds_epsilon_within_the_bound() -> None:
    exp = MembershipInferenceJEM()
    table = _table([
        {"undefended": (0.40, 0.95), "jem": (0.10, 0.93), "dp-sgd": (0.30, 0.90)},
        {"undefended": (0.40, 0.95), "jem": (0.12, 0.91), "dp-sgd": (0.30, 0.90)},
    ])  # fmt: skip
    table.rows[-1]["epsilon"] = 8.04
    dp = exp.check_claims(table)[2]
    assert dp.verdict == "FAIL" and "largest 8.04" in dp.detail


def test_rmia_claim_is_the_tpr_gain_over_lira_on_the_same_shadows() -> None:
    exp = MembershipInferenceJEM()
    models = {"undefended": (0.4, 0.95), "jem": (0.2, 0.9), "dp-sgd": (0.3, 0.9)}
    # RMIA - LiRA: +2 and -1 points: the interval straddles 0
    *_, rmia = exp.check_claims(_table([models, models]))
    assert rmia.verdict == "INCONCLUSIVE" and "+2.0 pts/-1.0 pts" in rmia.detail
    assert "label-only AUC undefended 0.550" in rmia.detail
    *_, rmia = exp.check_claims(_table([models]))
    assert rmia.verdict == "PASS"  # one seed: +2 points, judged on the value
