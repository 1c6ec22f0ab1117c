"""Benchmarks: versioned definitions whose hash covers every field; the registry; the CLI list;
the sandbox's check of a child's result."""

from __future__ import annotations

import dataclasses

import pytest
from typer.testing import CliRunner

from trustlab.cli import app
from trustlab.errors import InputError
from trustlab.platform.benchmarks import (
    BENCHMARKS,
    Metric,
    benchmark_from_dict,
    defense_protocol,
    get_benchmark,
)
from trustlab.platform.sandbox import check_result

NAMES = ["backdoor-quick", "robustness-quick", "privacy-quick"]


def test_registered_benchmarks():
    assert BENCHMARKS.names() == NAMES
    for name in NAMES:
        b = get_benchmark(name)
        assert b.name == name and len(b.hash) == 64 and b.primary in {m.name for m in b.metrics}
        assert get_benchmark(name).hash == b.hash  # stable
        assert benchmark_from_dict(b.to_dict()) == b
    with pytest.raises(InputError, match="Did you mean 'backdoor-quick'"):
        get_benchmark("backdoor-quik")


@pytest.mark.parametrize(
    "field, value",
    [
        ("version", "2"),
        ("description", "other words"),
        ("data", {"dataset": "shapes10", "rate": 0.1, "target": 0}),
        ("model", {"arch": "resnet8", "train": {"epochs": 6, "lr": 0.05, "batch_size": 64}}),
        ("attacks", ("badnets",)),
        ("seeds", (0, 1)),
        ("budget", {"defense_epochs": 3, "timeout_s": 600, "memory_mb": 4096}),
        ("metrics", (Metric("der", "DER", False),)),
        ("primary", "asr_after"),
        ("takes", "model"),
    ],
)
def test_hash_changes_with_every_field(field, value):
    b = get_benchmark("backdoor-quick")
    assert dataclasses.replace(b, **{field: value}).hash != b.hash


def test_nested_change_changes_the_hash():
    b = get_benchmark("backdoor-quick")
    model = {**b.model, "train": {**b.model["train"], "lr": 0.1}}
    assert dataclasses.replace(b, model=model).hash != b.hash


def test_scaled_is_another_version():
    b = get_benchmark("backdoor-quick")
    s = b.scaled(seeds=(0,), budget={"defense_epochs": 1})
    assert s.version.startswith("1+scaled.") and s.version != b.version and s.hash != b.hash
    assert s.budget["timeout_s"] == b.budget["timeout_s"]  # mappings merged key by key
    assert s.seeds == (0,) and b.seeds == (0, 1, 2)  # the registered one is untouched
    assert b.scaled(seeds=(0,)).hash == b.scaled(seeds=(0,)).hash
    with pytest.raises(InputError):
        b.scaled(name="other")


def test_defense_protocols():
    class Rep:
        def repair(self, model, clean): ...

    class Det:
        def fit(self, x): ...
        def score(self, x): ...

    class Flt:
        def flag(self, d): ...

    assert [defense_protocol(c) for c in (Rep, Det, Flt)] == [
        "repairer", "input-detector", "dataset-filter"
    ]  # fmt: skip
    from trustlab.defenses.backdoor import FinePruning

    assert defense_protocol(FinePruning) == "case"  # the catalogue's own

    class OwnCase:  # a submission never gets the case (it holds the attack's ground truth)
        @classmethod
        def run_case(cls, case): ...

    with pytest.raises(InputError, match="catalogue's own defenses"):
        defense_protocol(OwnCase)
    with pytest.raises(InputError, match="no backdoor-defense protocol"):
        defense_protocol(object)


def test_check_result():
    b = get_benchmark("backdoor-quick")
    good = {"scores": {"der": {"mean": 0.5, "lo": 0.4, "hi": 0.6, "values": [0.5]}},
            "primary": "der"}  # fmt: skip
    assert check_result(good, b) == ""
    assert check_result([], b) == "not an object"
    assert "unknown metric" in check_result({"scores": {"x": {}}, "primary": "x"}, b)
    bad = {"scores": {"der": {"mean": "high", "lo": 0, "hi": 1, "values": []}}, "primary": "der"}
    assert "mean, lo and hi" in check_result(bad, b)
    assert "primary" in check_result({**good, "primary": "auroc"}, b)


def test_cli_benchmarks_lists_them():
    out = CliRunner().invoke(app, ["benchmarks"])
    assert out.exit_code == 0, out.output
    for name in NAMES:
        assert name in out.output and get_benchmark(name).short_hash in out.output


def test_cli_submit_needs_one_submission():
    out = CliRunner().invoke(app, ["submit", "--benchmark", "backdoor-quick"])
    assert out.exit_code == 2 and "give a submission: --defense" in out.output


TINY = dict(
    seeds=(0,),
    attacks=("badnets",),
    data={"train_size": 300, "test_size": 100},
    model={"train": {"epochs": 1, "lr": 0.05, "batch_size": 64}},
    budget={"defense_epochs": 1},
)


def test_backdoor_protocols_are_scored_in_process():
    """Each protocol's scores, and what a submission may not see (evaluated here directly:
    the test's own code, so no sandbox)."""
    import torch

    from trustlab.platform.benchmarks import MalformedSubmission

    bench = get_benchmark("backdoor-quick").scaled(**TINY)
    seen = {}

    class Inspect:
        def inspect(self, model, clean):
            return [0, 3]

    class Filter:
        def __init__(self, model):
            self.model = model

        def flag(self, dataset):
            seen["mask"] = hasattr(dataset, "poison_mask")
            return torch.arange(5)

    class Detect:
        def __init__(self, model):
            self.model = model

        def fit(self, x):
            return self

        def score(self, x):
            with torch.no_grad():
                return -self.model(x).softmax(-1).amax(-1)

    class BadInspect:
        def inspect(self, model, clean):
            return [42]

    r = bench.evaluate(Inspect)
    assert r["primary"] == "detected" and r["scores"]["detected"]["mean"] == 1.0
    assert r["scores"]["false_flags"]["mean"] == 1.0 and not r["higher_is_better"]["false_flags"]
    r = bench.evaluate(Filter)
    assert seen["mask"] is False  # the poison mask is the benchmark's, not the defense's
    assert {"precision", "recall", "auroc", "der", "asr_after"} <= set(r["scores"])
    r = bench.evaluate(Detect)
    assert r["primary"] == "auroc" and set(r["scores"]) == {"auroc", "tpr_at_5fpr"}
    with pytest.raises(MalformedSubmission, match="classes are 0 to 9"):
        bench.evaluate(BadInspect)
