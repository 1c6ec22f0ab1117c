"""The evasion commands store their results as runs (attack, evaluate, advcam, detect), and bad
input stores nothing."""

from __future__ import annotations

import json

import pytest

from trustlab.errors import InputError
from trustlab.results import RunStore
from trustlab.workflows.evasion import run_advcam, run_attack, run_detect, run_evaluate
from trustlab.workflows.train import run_training


@pytest.fixture(scope="module")
def target(tmp_path_factory):
    store = RunStore(tmp_path_factory.mktemp("store"))
    cfg = {"dataset": "digits", "model": "cnn-small", "epochs": 2, "device": "cpu"}
    run, _ = run_training(cfg, store=store, progress=False)
    return store, str(run.id)


def _stored(run, kind: str) -> dict:
    assert run.status == "finished" and run.kind == kind
    return json.loads((run.dir / f"{kind}.json").read_text())


def test_attack_is_stored_with_its_picture(target, tmp_path) -> None:
    store, ref = target
    png = tmp_path / "out" / "grid.png"
    run, out = run_attack(ref, "fgsm", n=40, png=png, device="cpu", store=store)
    assert _stored(run, "attack") == out and out["n"] == 40
    assert (run.dir / "examples.png").is_file() and png.read_bytes() == (
        run.dir / "examples.png"
    ).read_bytes()
    assert run.summary["robust_accuracy"] == out["robust_accuracy"]


def test_attack_options_reach_the_attack_and_are_recorded(target, monkeypatch) -> None:
    import trustlab.attacks.evasion.evaluate as ev

    store, ref = target
    shown = []
    real = ev.progress_bar
    monkeypatch.setattr(ev, "progress_bar", lambda *a, **k: shown.append(a) or real(*a, **k))
    opts = {"norm": "l2", "n_queries": 20}
    run, out = run_attack(
        ref, "square", eps=0.5, n=20, device="cpu", store=store, options=opts, progress=True
    )
    assert run.config["options"] == opts and 0 <= out["robust_accuracy"] <= out["clean_accuracy"]
    assert shown and shown[0][2] is True  # the cascade was asked for its bar
    before = len(store.list())
    with pytest.raises(InputError, match="unknown norm 'l3'"):
        run_attack(ref, "square", n=10, device="cpu", store=store, options={"norm": "l3"})
    assert len(store.list()) == before


def test_evaluate_and_detect_are_stored(target) -> None:
    store, ref = target
    run, out = run_evaluate(ref, "quick", n=30, device="cpu", store=store)
    assert _stored(run, "evaluate") == out and list(out["after_attack"]) == ["pgd", "md"]
    run, out = run_detect(ref, "lid", eps="16/255", n=120, splits=2, device="cpu", store=store)
    assert _stored(run, "detect") == out and len(out["auc"]) == 2
    assert run.summary["mean_auc"] == out["mean_auc"]


def test_advcam_is_stored(target) -> None:
    store, ref = target
    run, out = run_advcam(ref, steps=2, n=2, device="cpu", store=store)
    assert _stored(run, "advcam") == out and (run.dir / "examples.png").is_file()


@pytest.mark.parametrize(
    "call",
    [
        lambda ref, store: run_attack(ref, "no-such-attack", n=10, device="cpu", store=store),
        lambda ref, store: run_evaluate(ref, "no-such-suite", n=10, device="cpu", store=store),
        lambda ref, store: run_detect(ref, "no-such-detector", n=10, device="cpu", store=store),
        lambda ref, store: run_detect(ref, "lid", eps="1/1000", n=50, device="cpu", store=store),
        lambda ref, store: run_advcam(ref, region=2.0, device="cpu", store=store),
    ],
    ids=["attack", "suite", "detector", "weak-attack", "advcam-region"],
)
def test_bad_input_stores_nothing(target, call) -> None:
    store, ref = target
    before = len(store.list())
    with pytest.raises(InputError):
        call(ref, store)
    assert len(store.list()) == before
