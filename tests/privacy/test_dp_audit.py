"""Empirical DP auditing: the Clopper-Pearson and one-run bounds (trustlab.metrics.dp_audit), the
canary retraining (trustlab.workflows.dp_audit) and `trustlab audit-dp`."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats
from typer.testing import CliRunner

import trustlab.cli.dp_audit  # noqa: F401  (registers audit-dp until cli/__init__ imports it)
from trustlab.cli import app
from trustlab.errors import InputError
from trustlab.metrics.dp_audit import (
    clopper_pearson,
    cp_audit,
    epsilon_lower_bound,
    one_run_audit,
    one_run_epsilon,
    one_run_p_value,
)
from trustlab.results import RunStore


# -- the bounds ----------------------------------------------------------------------------------
def test_clopper_pearson_is_the_beta_quantile_and_inverts_the_binomial() -> None:
    k, n = np.array([0, 3, 17, 50]), 50
    hi = clopper_pearson(k, n, 0.975)
    lo = clopper_pearson(k, n, 0.975, side="lower")
    want_hi = np.where(k < n, stats.beta.ppf(0.975, k + 1, n - k), 1.0)
    want_lo = np.where(k > 0, stats.beta.ppf(0.025, np.maximum(k, 1), n - k + 1), 0.0)
    np.testing.assert_allclose(hi, want_hi, rtol=1e-12)
    np.testing.assert_allclose(lo, want_lo, rtol=1e-12)
    # the exact definition: P[Bin(n, hi) <= k] = 2.5% (k < n)
    np.testing.assert_allclose(stats.binom.cdf(k[:3], n, hi[:3]), 0.025, rtol=1e-6)
    assert float(clopper_pearson(0, 100, 0.95)) == pytest.approx(1 - 0.05 ** (1 / 100))
    with pytest.raises(InputError):
        clopper_pearson(5, 4)


def test_bounds_are_zero_at_chance() -> None:
    same = torch.linspace(0, 1, 100)
    for strategy in ("bonferroni", "max", "split"):
        assert cp_audit(same, same, delta=1e-5, threshold=strategy).epsilon == 0.0
    # an attack that is right on half its guesses cannot reject any epsilon >= 0
    assert float(one_run_epsilon(200, 100, 50, delta=1e-5)) == 0.0
    scores = torch.arange(200, dtype=torch.float64)
    alternating = torch.arange(200) % 2 == 0  # every guess set is half right
    assert one_run_audit(scores, alternating, delta=1e-5).epsilon == 0.0
    assert float(epsilon_lower_bound(30, 30, 30, 30, delta=0.0)) == 0.0


def test_bounds_grow_with_separation() -> None:
    g = torch.Generator().manual_seed(0)
    noise_in, noise_out = torch.randn(300, generator=g), torch.randn(300, generator=g)
    member = torch.cat([torch.ones(300, dtype=torch.bool), torch.zeros(300, dtype=torch.bool)])
    cp, one = [], []
    for gap in (0.0, 1.0, 2.0, 4.0):
        cp.append(cp_audit(noise_in + gap, noise_out, delta=1e-5).epsilon)
        one.append(
            one_run_audit(torch.cat([noise_in + gap, noise_out]), member, delta=1e-5).epsilon
        )
    assert cp == sorted(cp) and one == sorted(one)
    assert cp[0] == 0.0 and cp[-1] > 2 and one[-1] > 2


def test_no_bound_exceeds_what_the_counts_allow() -> None:
    # perfect separation of n + n trials: at most log(1 / FNR_hi) with FNR_hi at 0 errors
    n, conf = 100, 0.95
    ceiling = math.log((1 - clopper_pearson(0, n, 1 - 0.05 / 2)) / clopper_pearson(0, n, 0.975))
    perfect = cp_audit(torch.ones(n), torch.zeros(n), confidence=conf, threshold="max")
    assert perfect.epsilon == pytest.approx(ceiling)
    assert cp_audit(torch.ones(n), torch.zeros(n)).epsilon <= ceiling  # Bonferroni: lower
    # one run, every one of r guesses right: the bound solves q^r = 1 - confidence
    for r in (10, 100, 1000):
        q = 0.05 ** (1 / r)
        top = math.log(q / (1 - q))
        assert float(one_run_epsilon(1000, r, r)) == pytest.approx(top, abs=1e-6)
        assert float(one_run_epsilon(1000, r, r, delta=1e-5)) <= top + 1e-9
    # with delta the p-value only grows, so the bound only shrinks
    assert float(one_run_p_value(500, 100, 90, 2.0, 1e-4)) >= float(
        one_run_p_value(500, 100, 90, 2.0, 0.0)
    )
    # group privacy: a canary set of k is worth at most the single-canary bound / k (delta 0)
    single = cp_audit(torch.ones(n), torch.zeros(n), delta=0.0).epsilon
    assert cp_audit(torch.ones(n), torch.zeros(n), delta=0.0, group=4).epsilon == pytest.approx(
        single / 4, rel=1e-6
    )


def test_one_run_p_value_matches_the_papers_loop() -> None:
    def reference(m: int, r: int, v: int, eps: float, delta: float) -> float:
        q = 1 / (1 + math.exp(-eps))
        tail = stats.binom.sf(v - 1, r, q)
        best, total = 0.0, 0.0
        for i in range(1, v + 1):
            total += stats.binom.pmf(v - i, r, q)
            best = max(best, total / i)
        return min(tail + best * delta * 2 * m, 1.0)

    rng = np.random.default_rng(0)
    for _ in range(25):
        m = int(rng.integers(10, 400))
        r = int(rng.integers(1, m + 1))
        v = int(rng.integers(0, r + 1))
        eps, delta = float(rng.uniform(0, 4)), float(rng.choice([0.0, 1e-5, 1e-3]))
        assert float(one_run_p_value(m, r, v, eps, delta)) == pytest.approx(
            reference(m, r, v, eps, delta), rel=1e-9, abs=1e-15
        )


def test_bad_input_is_one_clear_error() -> None:
    with pytest.raises(InputError, match="confidence"):
        cp_audit([1.0], [0.0], confidence=1.5)
    with pytest.raises(InputError, match="threshold"):
        cp_audit([1.0, 2.0], [0.0, 1.0], threshold="best")
    with pytest.raises(InputError, match="k_pos"):
        one_run_audit([1.0, 2.0], [True, False], k_pos=1)
    with pytest.raises(InputError, match="one entry per canary"):
        one_run_audit([1.0, 2.0], [True])
    with pytest.raises(InputError, match="NaN"):
        cp_audit([float("nan")], [0.0])


# -- the retraining audit ------------------------------------------------------------------------
# an overfitting recipe: Adam on 64 base digits + 64 canaries, 30 epochs (memorises the canaries)
RECIPE = dict(dataset="digits", model="mlp", epochs=30, optimizer="adam", lr=0.01, batch_size=32,
              weight_decay=0.0, schedule="constant")  # fmt: skip
AUDIT = dict(canaries=96, base_size=64, progress=False)


def test_audit_of_an_overfit_non_private_model_is_large() -> None:
    from trustlab.workflows.dp_audit import audit_dp

    run, result = audit_dp(RECIPE, **AUDIT)
    assert result.epsilon_lb > 1, result.summary
    assert result.summary["epsilon"] is None and result.privacy is None
    assert run.kind == "dp-audit" and run.summary["epsilon_lb"] == result.epsilon_lb
    doc = json.loads((run.dir / "scores.json").read_text())
    assert len(doc["score"]) == 96 and sum(doc["is_in"]) == result.summary["included"]
    assert all(a != b for a, b in zip(doc["original_label"], doc["canary_label"], strict=True))
    # same seed, same numbers
    _, again = audit_dp(RECIPE, **AUDIT)
    assert again.epsilon_lb == result.epsilon_lb
    assert torch.equal(again.scores, result.scores)


def test_audit_of_a_strongly_private_model_is_near_zero() -> None:
    from trustlab.workflows.dp_audit import audit_dp

    _, result = audit_dp({**RECIPE, "epochs": 5, "dp": {"noise_multiplier": 20.0}}, **AUDIT)
    assert result.epsilon_lb < 0.5, result.summary
    assert result.epsilon_lb <= result.privacy["epsilon"]
    assert result.summary["delta"] == 1e-5 and result.summary["noise_multiplier"] == 20.0


def test_cli_audits_a_stored_dp_run(_isolated_home: Path) -> None:
    train = CliRunner().invoke(
        app,
        ["train", "--dataset", "digits", "--model", "mlp", "--epochs", "1", "--dp",
         "--noise-multiplier", "8", "--quiet"],
    )  # fmt: skip
    assert train.exit_code == 0, train.output
    out = CliRunner().invoke(
        app, ["audit-dp", "1", "--canaries", "32", "--base-size", "32", "--quiet"]
    )
    assert out.exit_code == 0, out.output
    doc = json.loads(out.output.strip().splitlines()[-1])
    assert doc["method"] == "one-run" and 0 <= doc["epsilon_lb"] <= doc["epsilon"]
    assert doc["noise_multiplier"] == 8.0 and doc["run_epsilon"] > 0
    assert doc["one_run_epsilon_max"] == pytest.approx(2.32, abs=0.01)  # 32 canaries' ceiling
    for flags, says in [
        (["--method", "cp", "--k-pos", "3"], "one-run guesses"),
        (["--k-pos", "3"], "give both --k-pos and --k-neg"),
        (["--k-pos", "3", "--k-neg", "400"], "between 1 and the 256 canaries"),
        (["--confidence", "1.5"], "--confidence must be in (0, 1)"),
        (["--delta", "2"], "--delta must be in [0, 1)"),
        (["--base-size", "0"], "--base-size must be an integer >= 1"),
    ]:
        bad = CliRunner().invoke(app, ["audit-dp", "1", *flags])
        assert bad.exit_code == 2 and says in bad.output, (flags, bad.output)
    kinds = sorted(r.kind for r in RunStore(_isolated_home).list())
    assert kinds == ["dp-audit", "train"]  # the refused audits stored nothing
    few = CliRunner().invoke(app, ["audit-dp", "1", "--canaries", "4", "--base-size", "32", "-q"])
    assert few.exit_code == 0 and "4 canaries cannot show a one-run bound above 0.00" in few.output


def test_cp_over_trials_trains_with_and_without_the_canary_set() -> None:
    from trustlab.workflows.dp_audit import audit_dp

    tiny = {**RECIPE, "epochs": 2}
    _, result = audit_dp(tiny, canaries=1, method="cp", trials=3, base_size=16, progress=False)
    assert result.summary["trainings"] == 6 and result.scores.shape == (6,)
    assert result.is_in.tolist() == [True] * 3 + [False] * 3
    # 3 + 3 trials cannot reject anything at 95%: even a perfect split leaves FPR_hi, FNR_hi > 0.7
    assert result.epsilon_lb == 0.0 and set(result.bounds) == {"cp"}
    with pytest.raises(InputError, match="--method cp"):
        audit_dp(tiny, canaries=1, trials=3)
