"""A results store for the leaderboard's tests (tests/platform and the browser test): a real
smoke reproduction, a real backdoor-bench smoke run and submission records written through
RunStore in the platform's record format (finished and failed)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from trustlab.platform.benchmarks import get_benchmark
from trustlab.results import Run, RunStore

ROBUST = {"robust_accuracy": True, "clean_accuracy": True}
PRIVACY = {"advantage": False, "auc": False, "test_accuracy": True}
BACKDOOR = {"der": True, "asr_after": False, "auroc": True}


def add_submission(
    store: RunStore,
    benchmark: str,
    label: str,
    scores: dict[str, tuple[float, float | None, float | None]] | None = None,
    *,
    primary: str = "",
    higher: dict[str, bool] | None = None,
    failure: tuple[str, str] | None = None,
    kind: str = "defense",
    cache_key: str | None = None,
    earlier: bool = False,
) -> Run:
    """A submission record: finished with ``scores`` (``metric: (mean, lo, hi)``, three seeds),
    or failed with ``failure`` = ``(kind of failure, reason)``; scored on the benchmark's
    current definition, or with ``earlier`` on an earlier one."""
    bench = get_benchmark(benchmark)
    version, hash_ = ("0", "0123456789abcdef" * 4) if earlier else (bench.version, bench.hash)
    config = {
        "benchmark": benchmark,
        "benchmark_version": version,
        "benchmark_hash": hash_,
        "submission": {"kind": kind, "ref": f"my_module:{label}", "label": label,
                       "source_hash": "ab" * 32},
        "cache_key": cache_key or f"{benchmark}-{label}-{version}",
    }  # fmt: skip
    run = store.create_run("submission", f"{benchmark}/{label}", config)
    if failure is not None:
        why, reason = failure
        trace = f"Traceback (most recent call last):\n  ...\n{reason}"
        run.set_summary({"failure": why, "reason": reason, "traceback": trace})
        run.fail(reason)
        return run
    assert scores is not None
    run.finish(
        {
            "scores": {
                m: {"mean": mean, "lo": lo, "hi": hi, "values": [mean] * 3}
                for m, (mean, lo, hi) in scores.items()
            },  # fmt: skip
            "primary": primary or next(iter(scores)),
            "higher_is_better": {m: (higher or {}).get(m, True) for m in scores},
            "wall_s": 42.5,
        }
    )
    return run


def add_submissions(store: RunStore) -> None:
    """Robustness (three ranked, one failed), privacy (lower is better) and backdoor
    (repairers ranked by DER, a detector by AUROC) submissions."""
    add_submission(store, "robustness-quick", "plain",
                   {"robust_accuracy": (0.02, 0.01, 0.04), "clean_accuracy": (0.93, 0.9, 0.95)},
                   higher=ROBUST, kind="model")  # fmt: skip
    add_submission(store, "robustness-quick", "trades",
                   {"robust_accuracy": (0.455, 0.39, 0.52), "clean_accuracy": (0.78, 0.72, 0.83)},
                   higher=ROBUST, kind="model")  # fmt: skip
    add_submission(store, "robustness-quick", "Madry-AT",
                   {"robust_accuracy": (0.4125, 0.35, 0.48), "clean_accuracy": (0.81, 0.75, 0.86)},
                   higher=ROBUST, kind="model")  # fmt: skip
    add_submission(store, "robustness-quick", "slow-one", failure=("timeout", "took longer than "
                   "the benchmark's limit of 300 s"), kind="model")  # fmt: skip
    add_submission(store, "privacy-quick", "jem",
                   {"advantage": (0.031, 0.01, 0.05), "auc": (0.52, 0.5, 0.54),
                    "test_accuracy": (0.71, 0.69, 0.73)}, higher=PRIVACY)  # fmt: skip
    add_submission(store, "privacy-quick", "undefended",
                   {"advantage": (0.2, 0.17, 0.23), "auc": (0.61, 0.58, 0.64),
                    "test_accuracy": (0.75, 0.73, 0.77)}, higher=PRIVACY, earlier=True)  # fmt: skip
    add_submission(store, "privacy-quick", "broken", failure=("raised",
                   "ValueError: the defense raised"))  # fmt: skip
    add_submission(store, "backdoor-quick", "prune-it",
                   {"der": (0.61, None, None), "asr_after": (0.2, None, None)},
                   higher=BACKDOOR)  # fmt: skip
    add_submission(store, "backdoor-quick", "strip-like", {"auroc": (0.88, 0.8, 0.95)},
                   higher=BACKDOOR)  # fmt: skip


def reproduce_smoke(store: RunStore) -> None:
    """``trustlab reproduce sce --preset smoke`` (2 epochs instead of 30: the same machinery,
    seconds of CPU) and ``trustlab bench backdoor --preset smoke --attacks badnets --defenses
    strip,spectral`` (about 5 s), single-threaded, into ``store``."""
    from trustlab.experiments.base import get_experiment, reproduce
    from trustlab.experiments.bench_backdoor import bench_options

    cls = type(get_experiment("sce"))
    smoke = cls.presets["smoke"]
    short = dataclasses.replace(smoke, train={**smoke.train, "epochs": 2, "eval_every": 2})
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(cls.presets, "smoke", short)
        reproduce("sce", "smoke", store=store, device="cpu", workers=1, progress=False)
    reproduce("bench-backdoor", "smoke", store=store, device="cpu", workers=1, progress=False,
              options=bench_options("badnets", "strip,spectral"))  # fmt: skip


def filled_store(root: Path) -> RunStore:
    """A store with the smoke runs and the submissions above."""
    store = RunStore(root)
    reproduce_smoke(store)
    add_submissions(store)
    return store


def stored_scores(store: RunStore, benchmark: str) -> dict[str, dict[str, Any]]:
    """``{label: summary scores}`` of the finished submissions to ``benchmark``."""
    return {
        r.config["submission"]["label"]: r.summary["scores"]
        for r in store.list(kind="submission", status="finished")
        if r.config["benchmark"] == benchmark
    }
