"""Submissions: scored in the sandbox, cached, and every failure recorded without harm to the
store. The benchmark is a scaled-down ``backdoor-quick`` (its own version and hash)."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from trustlab.errors import InputError
from trustlab.platform.benchmarks import get_benchmark
from trustlab.platform.submissions import KIND, cache_key, find_cached, source_hash, submit
from trustlab.results import RunStore

TINY = dict(
    seeds=(0,),
    attacks=("badnets",),
    data={"train_size": 300, "test_size": 100},
    model={"train": {"epochs": 1, "lr": 0.05, "batch_size": 64}},
    budget={"defense_epochs": 1},
)

GOOD = """
class Keep:
    '''A repairer that changes nothing.'''

    def repair(self, model, clean):
        return model
"""

BAD = {
    "raises": """
class Broken:
    def repair(self, model, clean):
        raise ValueError("boom: this defense is broken")
""",
    "wrong-type": """
class WrongType:
    def repair(self, model, clean):
        return "not a model"
""",
    "slow": """
import time
time.sleep(120)

class Slow:
    def repair(self, model, clean):
        return model
""",
    "memory": """
import torch

class Hog:
    def repair(self, model, clean):
        big = torch.ones(3 << 30)  # 12 GB of floats, far above the limit
        return model
""",
}
EXPECT = {
    "raises": ("raised", "ValueError: boom"),
    "wrong-type": ("malformed", "must be a torch.nn.Module, got str"),
    "slow": ("timeout", "time limit of 4 s"),
    "memory": ("memory", "out of memory"),
}
NAMES = {"raises": "Broken", "wrong-type": "WrongType", "slow": "Slow", "memory": "Hog"}


def _write(folder: Path, name: str, text: str) -> Path:
    path = folder / f"{name.replace('-', '_')}.py"
    path.write_text(textwrap.dedent(text))
    return path


@pytest.fixture(scope="module")
def bench():
    return get_benchmark("backdoor-quick").scaled(**TINY)


@pytest.fixture(scope="module")
def scored(tmp_path_factory, bench):
    """A store holding one finished submission (the good defense)."""
    folder = tmp_path_factory.mktemp("submissions")
    store = RunStore(folder / "store")
    ref = f"{_write(folder, 'good', GOOD)}:Keep"
    res = submit(ref, bench, kind="defense", label="keep", store=store, timeout=300)
    return store, ref, res, folder


def test_good_defense_is_scored_and_recorded(scored, bench):
    store, ref, res, _ = scored
    assert res.ok and not res.cached, res.reason
    run = store.get(res.run.id)
    assert run.kind == KIND and run.status == "finished" and run.name == "backdoor-quick/keep"
    assert run.config == {
        "benchmark": "backdoor-quick",
        "benchmark_version": bench.version,
        "benchmark_hash": bench.hash,
        "submission": {
            "kind": "defense",
            "ref": ref,
            "label": "keep",
            "source_hash": source_hash(ref, kind="defense"),
        },  # fmt: skip
        "cache_key": cache_key(source_hash(ref, kind="defense"), bench),
    }
    s = run.summary
    assert set(s) == {"scores", "primary", "higher_is_better", "wall_s"}
    assert s["primary"] == "der"
    assert set(s["scores"]) == {"der", "asr_after", "clean_acc_after"}
    assert s["higher_is_better"] == {"der": True, "asr_after": False, "clean_acc_after": True}
    for score in s["scores"].values():
        assert set(score) == {"mean", "lo", "hi", "values"} and len(score["values"]) == 1
    # a repairer that changes nothing leaves the attacked model as it was: DER is 1/2
    assert s["scores"]["der"]["mean"] == pytest.approx(0.5)
    details = json.loads((run.dir / "evaluation.json").read_text())["details"]
    assert details["protocol"] == "repairer" and details["cells"][0]["attack"] == "badnets"
    assert s["scores"]["asr_after"]["mean"] == pytest.approx(details["cells"][0]["asr"])


def test_second_submit_is_a_cache_hit(scored, bench, monkeypatch):
    store, ref, first, _ = scored

    def no_sandbox(*a, **k):
        raise AssertionError("a cached submission must not be evaluated again")

    monkeypatch.setattr("trustlab.platform.submissions.run_sandboxed", no_sandbox)
    again = submit(ref, bench, kind="defense", label="other label", store=store)
    assert again.cached and again.ok and again.run.id == first.run.id
    assert again.scores == first.scores
    assert len(store.list(kind=KIND)) >= 1


@pytest.mark.parametrize("case", list(BAD))
def test_failures_are_recorded_and_store_intact(scored, bench, case):
    store, _, good, folder = scored
    before = {r.id: (r.status, r.summary, r.config) for r in store.list()}
    ref = f"{_write(folder, case, BAD[case])}:{NAMES[case]}"
    timeout = 4 if case == "slow" else 300
    res = submit(ref, bench, kind="defense", store=store, timeout=timeout, memory_mb=2048)
    failure, words = EXPECT[case]
    assert not res.ok and not res.cached
    assert res.failure == failure, (res.failure, res.reason)
    assert words in res.reason
    run = store.get(res.run.id)
    assert run.status == "failed" and run.error == res.reason
    assert run.summary == {"failure": failure, "reason": res.reason, "traceback": res.traceback}
    if case in ("raises", "wrong-type"):
        assert "Traceback" in res.traceback and "repair" in res.traceback
    store.check()
    after = {r.id: (r.status, r.summary, r.config) for r in store.list()}
    assert {k: after[k] for k in before} == before  # the other entries are unchanged
    assert after[good.run.id][0] == "finished"
    # a failure is not cached: submitting it again evaluates it again
    assert find_cached(store, run.config["cache_key"]) is None


def test_kind_must_match_the_benchmark(tmp_path):
    weights = tmp_path / "w.safetensors"
    weights.write_bytes(b"x")
    with pytest.raises(InputError, match="takes a defense"):
        submit(str(weights), "backdoor-quick", kind="model", store=RunStore(tmp_path / "s"))
    with pytest.raises(InputError, match="does not exist"):
        submit("missing.py:X", "backdoor-quick", kind="defense", store=RunStore(tmp_path / "s"))
    assert not (tmp_path / "s").exists()  # nothing recorded


def test_source_hash_reads_bytes_only(tmp_path):
    path = _write(tmp_path, "never_run", "raise SystemExit('imported!')\nclass A: pass\n")
    h1 = source_hash(f"{path}:A", kind="defense")
    assert h1 != source_hash(f"{path}:B", kind="defense")  # the object's name counts
    path.write_text(path.read_text() + "# changed\n")
    assert source_hash(f"{path}:A", kind="defense") != h1
    assert len(source_hash("trustlab.defenses.backdoor.strip:STRIP", kind="defense")) == 64
