"""The apl and sce reproductions at the smoke preset, end to end, and noisy training from the CLI.

The smoke preset (an MLP on digits, 30 epochs, clean and 60% symmetric noise) is too short for
CE to memorise the noise the way the papers' 50-120 epoch runs do, so its claims are checked and
reported, not required to pass: the test asserts what the command reports, and that the exit
code follows the claims (docs/noisy-labels.md has the quick-preset numbers).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from trustlab.cli import app
from trustlab.experiments.base import ResultTable, get_experiment, reproduce
from trustlab.results import RunStore

runner = CliRunner()


@pytest.mark.slow
def test_reproduce_apl_smoke_cli(_isolated_home: Path) -> None:
    out = runner.invoke(
        app,
        ["reproduce", "apl", "--preset", "smoke", "--device", "cpu", "--workers", "1", "--quiet"],
        catch_exceptions=False,
    )
    text = out.output
    assert "nce+rce" in text and "sym:0.6" in text
    claims = re.findall(r"(PASS|FAIL|INCONCLUSIVE) ", text)
    assert len(claims) == 2
    assert out.exit_code == (0 if claims == ["PASS", "PASS"] else 1)
    assert re.search(r"sym:0.6 nce\+rce \d+\.\d vs CE \d+\.\d", text)
    assert "not run at this preset: sym:0.4, asym:0.4" in text
    (run,) = RunStore(_isolated_home).list()
    assert run.kind == "reproduce" and run.status == "finished"
    assert run.summary["passed"] == (out.exit_code == 0)
    rows = json.loads((run.dir / "table.json").read_text())["rows"]
    assert len(rows) == 6 and all(0 <= r["last_acc"] <= 1 for r in rows)
    noisy = [r for r in rows if r["noise"] == "sym:0.6"]
    assert all(abs(r["noise_rate"] - 0.6) < 0.01 for r in noisy)
    # single-threaded jobs are deterministic: SCE beats CE at 60% noise even at smoke scale
    acc = {r["loss"]: r["last_acc"] for r in noisy}
    assert acc["sce"] > acc["ce"]
    assert run.config["loss_params"]["sce"]["alpha"] == 0.01  # digits -> the MNIST weights


@pytest.mark.slow
def test_sce_smoke_numbers_do_not_depend_on_workers(_isolated_home: Path) -> None:
    one = reproduce("sce", "smoke", device="cpu", workers=1, progress=False)
    two = reproduce("sce", "smoke", device="cpu", workers=2, progress=False)
    key = lambda r: (r["noise"], r["loss"], r["seed"])  # noqa: E731
    assert sorted(one.table.rows, key=key) == sorted(two.table.rows, key=key)
    assert [c.passed for c in one.claims] == [c.passed for c in two.claims]


def test_train_with_loss_and_noise(_isolated_home: Path) -> None:
    out = runner.invoke(
        app,
        [
            "train",
            "--dataset",
            "digits",
            "--model",
            "mlp",
            "--epochs",
            "1",
            "--lr",
            "0.01",
            "--loss",
            "sce",
            "--noise",
            "asym:0.4",
            "--quiet",
            "--device",
            "cpu",
        ],
        catch_exceptions=False,
    )
    assert out.exit_code == 0, out.output
    (run,) = RunStore(_isolated_home).list()
    noise = json.loads((run.dir / "noise.json").read_text())
    assert noise["kind"] == "asym" and run.summary["noise_rate"] == noise["rate"] > 0
    assert run.config["loss"] == "sce" and run.config["noise"] == "asym:0.4"


@pytest.mark.parametrize(
    ("args", "pattern"),
    [
        (["--loss", "nce+gce"], "unknown loss"),
        (["--noise", "sym:1.5"], "noise rate"),
        (["--noise", "asym:0.4", "--dataset", "fundus2"], "asymmetric"),
        (["--loss", "sce", "--label-smoothing", "0.1"], "label_smoothing"),
    ],
)
def test_noise_and_loss_errors(args: list[str], pattern: str, _isolated_home: Path) -> None:
    out = runner.invoke(app, ["train", "--quiet", "--device", "cpu", *args], catch_exceptions=False)
    assert out.exit_code == 2 and re.search(pattern, out.output), out.output
    assert not (_isolated_home / "trustlab.db").exists() or not RunStore(_isolated_home).list()


def test_full_preset_without_cifar_files_fails_before_storing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, _isolated_home: Path
) -> None:
    monkeypatch.setenv("TRUSTLAB_DATA", str(tmp_path / "no-data"))
    out = runner.invoke(
        app,
        ["reproduce", "apl", "--preset", "full", "--device", "cpu", "--quiet"],
        catch_exceptions=False,
    )
    assert out.exit_code == 2 and "cifar-10-batches-py" in out.output, out.output
    assert not (_isolated_home / "trustlab.db").exists() or not RunStore(_isolated_home).list()


def test_full_preset_job_on_cifar10_files(tmp_path: Path) -> None:
    """One job of the papers' CIFAR-10 protocol (cnn8, CIFAR-10 map and weights) on tiny files
    in the real format, shortened to one epoch: the full preset's plumbing without the hours."""
    import pickle
    from dataclasses import replace

    import numpy as np
    import torch

    from trustlab.experiments.base import get_experiment

    folder = tmp_path / "cifar10" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {
            b"data": rng.integers(0, 256, (20, 3072), dtype=np.uint8),
            b"labels": [j % 10 for j in range(20)],
        }
        (folder / name).write_bytes(pickle.dumps(batch, protocol=4))
    (folder / "batches.meta").write_bytes(
        pickle.dumps({b"label_names": [b"c%d" % k for k in range(10)]}, protocol=4)
    )
    exp = get_experiment("apl")
    full = exp.preset("full")
    assert (full.model, full.train["epochs"], full.train["clip_grad_norm"]) == ("cnn8", 120, 5.0)
    short = replace(
        full,
        train={**full.train, "epochs": 1, "eval_every": 1},
        options={**full.options, "data_root": str(tmp_path / "cifar10")},
    )
    exp.check(short)
    out = exp.run_job(short, {"noise": "asym:0.4", "loss": "nce+rce"}, 0, torch.device("cpu"))
    assert 0 <= out["last_acc"] <= 1 and out["noise_rate"] == pytest.approx(0.4 * 5 / 10)


@pytest.mark.parametrize(
    ("dataset", "pattern"),
    [("moving-shapes", "video model"), ("fundus2", "eta")],
)
def test_bad_dataset_override_fails_before_storing(
    dataset: str, pattern: str, _isolated_home: Path
) -> None:
    out = runner.invoke(
        app,
        [
            "reproduce",
            "sce",
            "--preset",
            "smoke",
            "--dataset",
            dataset,
            "--device",
            "cpu",
            "--quiet",
        ],
        catch_exceptions=False,
    )
    assert out.exit_code == 2 and re.search(pattern, out.output), out.output
    assert not (_isolated_home / "trustlab.db").exists() or not RunStore(_isolated_home).list()


def _noisy_table(accs: dict[tuple[str, str], tuple[float, ...]]) -> ResultTable:
    """A hand-made apl/sce table: ``{(noise, loss): last_acc per seed}``."""
    exp = get_experiment("apl")
    rows = [
        {"noise": noise, "loss": loss, "seed": seed, "last_acc": a, "best_acc": a,
         "noise_rate": 0.0}
        for (noise, loss), per_seed in accs.items()
        for seed, a in enumerate(per_seed)
    ]  # fmt: skip
    return ResultTable(exp.keys, exp.metrics, rows)


def test_claims_judge_the_paired_gaps_to_ce_with_their_interval() -> None:
    exp = get_experiment("apl")
    noisy = {(n, "ce"): (0.60, 0.60, 0.60) for n in ("sym:0.4", "sym:0.6", "asym:0.4")}
    clean = {("none", "ce"): (0.95, 0.95, 0.95)}
    # every gap to CE is 10-12 points on each seed, every clean gap within 1 point
    passing = {
        **noisy,
        **{(n, loss): (0.70, 0.71, 0.72) for n in ("sym:0.4", "sym:0.6", "asym:0.4")
           for loss in ("sce", "nce+rce")},
        ("none", "sce"): (0.94, 0.95, 0.96),
        ("none", "nce+rce"): (0.95, 0.96, 0.95),
        **clean,
    }  # fmt: skip
    beats, parity = exp.check_claims(_noisy_table(passing))
    assert beats.verdict == "PASS" and parity.verdict == "PASS"
    assert "over 3 seeds" in beats.detail and "not run at this preset" not in beats.detail
    # at sym:0.6 NCE+RCE gains +12/+8/-2 points: the mean (6) meets the 5-point margin but the
    # interval reaches below it; a clean gap of +1/+5/+3 (mean 3) sits on the 3-point band's edge
    straddling = {
        **passing,
        ("sym:0.6", "nce+rce"): (0.72, 0.68, 0.58),
        ("none", "nce+rce"): (0.96, 1.00, 0.98),
    }
    beats, parity = exp.check_claims(_noisy_table(straddling))
    assert beats.verdict == "INCONCLUSIVE" and not beats.passed
    assert (
        "sym:0.6 nce+rce" in beats.detail and "12.0 points/8.0 points/-2.0 points" in beats.detail
    )
    assert parity.verdict == "INCONCLUSIVE" and "needs within ±3.0" in parity.detail
    # SCE only 1 point above CE on every seed at asym:0.4; a loss 10 points below CE when clean
    failing = {
        **passing,
        ("asym:0.4", "sce"): (0.61, 0.61, 0.61),
        ("none", "sce"): (0.85, 0.85, 0.85),
    }
    beats, parity = exp.check_claims(_noisy_table(failing))
    assert beats.verdict == "FAIL" and parity.verdict == "FAIL"


def test_beats_ce_without_a_noisy_setting_fails_and_names_missing_settings() -> None:
    exp = get_experiment("sce")
    beats, _ = exp.check_claims(_noisy_table({("none", "ce"): (0.9,), ("none", "sce"): (0.9,)}))
    assert beats.verdict == "FAIL" and beats.detail == "no noisy setting in the table"
    one_seed = {("sym:0.6", "ce"): (0.5,), ("sym:0.6", "sce"): (0.6,), ("none", "ce"): (0.9,)}
    beats, parity = exp.check_claims(_noisy_table(one_seed))
    assert beats.verdict == "PASS" and "1 seed: no interval" in beats.detail
    assert "not run at this preset: sym:0.4, asym:0.4" in beats.detail
    assert parity.verdict == "PASS"  # no other loss ran without noise: nothing to compare
