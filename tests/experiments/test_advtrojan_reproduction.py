"""The advtrojan reproduction's claim, judged on hand-made tables (the training itself is covered
by tests/backdoor/test_advtrojan.py)."""

from __future__ import annotations

from trustlab.experiments.base import ResultTable, get_experiment


def _table(
    both: tuple[float, ...], trigger: tuple[float, ...], pert: tuple[float, ...], n: int = 10**6
) -> ResultTable:
    """AdvTrojan rows with the given per-seed ASRs, next to a PGD-AT reference."""
    exp = get_experiment("advtrojan")
    rows = []
    for seed, (b, tr, p) in enumerate(zip(both, trigger, pert, strict=True)):
        common = {"seed": seed, "clean_acc": 0.95, "robust_acc": 0.80, "n_asr": n}
        rows.append({"model": "pgd-at", **common, "asr_trigger": 0.01, "asr_perturbation": 0.15,
                     "asr_both": 0.16})  # fmt: skip
        rows.append({"model": "advtrojan", **common, "asr_trigger": tr, "asr_perturbation": p,
                     "asr_both": b})  # fmt: skip
    return ResultTable(exp.keys, exp.metrics, rows)


def test_claim_judges_each_rate_on_its_interval_over_seeds() -> None:
    exp = get_experiment("advtrojan")
    (ok,) = exp.check_claims(_table((0.97, 0.98, 0.99), (0.02, 0.03, 0.01), (0.10, 0.12, 0.11)))
    assert ok.verdict == "PASS" and ok.passed
    assert "AdvTrojan ASR both 98.0% (95% interval" in ok.detail and "over 3 seeds" in ok.detail
    assert "PGD-AT reference: C-Acc 95.0%" in ok.detail
    # both-ASR 99/97/80: the mean (92%) meets 90% but the interval reaches below it
    (unsure,) = exp.check_claims(_table((0.99, 0.97, 0.80), (0.02, 0.03, 0.01), (0.1, 0.1, 0.1)))
    assert unsure.verdict == "INCONCLUSIVE" and not unsure.passed
    assert "per seed 99.0%/97.0%/80.0%" in unsure.detail
    # the perturbation alone fires on every seed: FAIL whatever the other parts say
    (bad,) = exp.check_claims(_table((0.99, 0.97, 0.80), (0.02, 0.03, 0.01), (0.5, 0.6, 0.7)))
    assert bad.verdict == "FAIL"


def test_claim_on_one_seed_is_judged_on_its_test_examples() -> None:
    exp = get_experiment("advtrojan")
    # the thresholds themselves: the test set cannot tell which side they are on
    (at_edge,) = exp.check_claims(_table((0.90,), (0.20,), (0.20,), n=324))
    assert at_edge.verdict == "INCONCLUSIVE" and "over 324 test examples" in at_edge.detail
    # the quick preset's measured rates on digits' 324 non-target test images: clear of both
    (quick,) = exp.check_claims(_table((0.969,), (0.015,), (0.009,), n=324))
    assert quick.verdict == "PASS"
    # the same rates on 20 examples: 19/20 cannot show >= 90%
    (few,) = exp.check_claims(_table((0.95,), (0.0,), (0.0,), n=20))
    assert few.verdict == "INCONCLUSIVE"
