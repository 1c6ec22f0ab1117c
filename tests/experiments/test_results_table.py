"""The stored reproductions as one results table (trustlab.experiments.results and the
``reproductions`` command), on hand-made runs in a fresh store."""

from __future__ import annotations

from typer.testing import CliRunner

from trustlab.cli import app
from trustlab.experiments.results import reproduction_results, results_markdown
from trustlab.results import RunStore


def _store_run(store: RunStore, experiment: str, preset: str, verdict: str, wall: float) -> int:
    config = {"experiment": experiment, "preset": {"name": preset, "dataset": "digits",
              "model": "mlp", "seeds": 3}, "seed": 0}  # fmt: skip
    run = store.create_run("reproduce", f"{experiment}-{preset}", config, seed=0)
    detail = f"gain +1.00 (95% interval [+0.50, +1.50] over 3 seeds; per seed {verdict} | x)"
    claims = {"gain": {"passed": verdict == "PASS", "verdict": verdict, "detail": detail}}
    run.finish({"passed": verdict == "PASS", "claims": claims, "wall_s": wall, "workers": 2})
    return run.id


def test_newest_run_per_experiment_and_preset_in_order() -> None:
    store = RunStore()
    _store_run(store, "sce", "quick", "FAIL", 61.0)
    newer = _store_run(store, "sce", "quick", "INCONCLUSIVE", 725.4)
    _store_run(store, "apl", "real", "PASS", 1500.0)
    _store_run(store, "apl", "quick", "PASS", 30.0)
    latest = reproduction_results(store)
    assert [(r.experiment, r.preset) for r in latest] == [
        ("apl", "quick"),
        ("apl", "real"),
        ("sce", "quick"),
    ]
    sce = latest[2]
    assert sce.run_id == newer and sce.claims[0].verdict == "INCONCLUSIVE"
    assert sce.wall == "12m05s" and sce.seeds == 3 and not sce.passed
    assert len(reproduction_results(store, latest=False)) == 4
    assert [r.preset for r in reproduction_results(store, presets=("real",))] == ["real"]
    text = results_markdown(latest)
    lines = text.splitlines()
    assert lines[0].startswith("| experiment | preset | seeds | claim | verdict")
    assert len(lines) == 2 + 3  # header, rule, one row per claim
    assert "| `sce` | `quick` (digits, mlp) | 3 | gain | **INCONCLUSIVE** |" in text
    assert "per seed INCONCLUSIVE \\| x" in text  # a | inside a detail cannot split the row


def test_reproductions_command() -> None:
    runner = CliRunner()
    out = runner.invoke(app, ["reproductions"])
    assert out.exit_code == 0 and "no finished reproductions" in out.output
    _store_run(RunStore(), "md", "quick", "FAIL", 9.0)
    out = runner.invoke(app, ["reproductions"])
    assert out.exit_code == 0 and "md quick (digits, mlp, 3 seed(s)): 9s" in out.output
    assert "FAIL gain: gain +1.00 (95% interval [+0.50, +1.50]" in out.output
    out = runner.invoke(app, ["reproductions", "--markdown", "--preset", "quick,real"])
    assert out.exit_code == 0 and out.output.startswith("| experiment |")
    assert "[+0.50, +1.50]" in out.output  # brackets are text, not markup


def test_rejudge_checks_todays_claims_on_the_stored_table() -> None:
    import json

    from trustlab.experiments.base import get_experiment

    store = RunStore()
    exp = get_experiment("advtrojan")
    config = {"experiment": "advtrojan", "preset": {"name": "quick", "dataset": "digits",
              "model": "cnn-small", "seeds": 1}, "seed": 0}  # fmt: skip
    run = store.create_run("reproduce", "advtrojan-quick", config, seed=0)
    row = {"model": "advtrojan", "seed": 0, "clean_acc": 0.9, "robust_acc": 0.8,
           "asr_trigger": 0.0, "asr_perturbation": 0.0, "asr_both": 0.92, "n_asr": 50}  # fmt: skip
    (run.dir / "table.json").write_text(json.dumps({"keys": exp.keys, "rows": [row]}))
    stale = {"claims": {"both-fires-alone-not": {"passed": True, "verdict": "PASS", "detail": "x"}}}
    run.finish(stale)
    (kept,) = reproduction_results(store)
    assert kept.claims[0].verdict == "PASS" and not kept.rejudged
    (again,) = reproduction_results(store, rejudge=True)
    # 46 of 50: today's claim judges the rate with its test examples' interval
    assert again.rejudged and again.claims[0].verdict == "INCONCLUSIVE"
    assert "over 50 test examples" in again.claims[0].detail
    assert ", re-judged" in results_markdown([again])


def test_rejudging_an_older_run_leaves_out_the_claims_it_did_not_measure() -> None:
    """A meminf-jem run stored before its RMIA claim existed: its table has no RMIA metrics."""
    import json

    from trustlab.experiments.base import get_experiment

    store = RunStore()
    exp = get_experiment("meminf-jem")
    config = {"experiment": "meminf-jem", "preset": {"name": "quick", "dataset": "digits",
              "model": "cnn-small", "seeds": 1}, "seed": 0}  # fmt: skip
    run = store.create_run("reproduce", "meminf-jem-quick", config, seed=0)
    rows = [
        {"model": "undefended", "seed": 0, "advantage": 0.4, "test_acc": 0.9,
         "lira_tpr_at_1fpr": 0.1, "loss_tpr_at_1fpr": 0.02, "lira_auc": 0.7, "loss_auc": 0.6},
        {"model": "jem", "seed": 0, "advantage": 0.1, "test_acc": 0.85},
        {"model": "dp-sgd", "seed": 0, "advantage": 0.2, "test_acc": 0.8, "epsilon": 7.9,
         "delta": 1e-5},
    ]  # fmt: skip
    (run.dir / "table.json").write_text(json.dumps({"keys": exp.keys, "rows": rows}))
    run.finish({"claims": {}})
    (again,) = reproduction_results(store, rejudge=True)
    names = [c.claim for c in again.claims]
    assert names == ["lira-beats-threshold", "jem-defense", "dp-sgd"]  # no rmia-beats-lira


def test_a_reproduction_without_claims_is_a_measurement_not_a_fail() -> None:
    store = RunStore()
    config = {"experiment": "bench-backdoor", "preset": {"name": "quick", "dataset": "shapes10",
              "model": "resnet8", "seeds": 1}, "seed": 0}  # fmt: skip
    run = store.create_run("reproduce", "bench-backdoor-quick", config, seed=0)
    run.finish({"passed": True, "claims": {}, "wall_s": 1448.0, "workers": 2})
    text = results_markdown(reproduction_results(store))
    assert "| `bench-backdoor` | `quick` (shapes10, resnet8) | 1 | — | — | no claims" in text
    assert "FAIL" not in text
