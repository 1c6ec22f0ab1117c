"""`run_mia`: membership inference against a stored training run, recorded as a store run."""

from __future__ import annotations

import json

import pytest
import torch

from trustlab.errors import InputError
from trustlab.registry import PRIVACY_ATTACKS
from trustlab.results import RunStore
from trustlab.workflows.mia import run_mia
from trustlab.workflows.train import run_training


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    store = RunStore(tmp_path_factory.mktemp("store"))
    cfg = {"dataset": "digits", "model": "mlp", "epochs": 2, "batch_size": 128, "device": "cpu"}
    run, _ = run_training(cfg, store=store, progress=False)
    assert run is not None
    return store, run


def _mia(store, run, tmp_path, **kw):
    kw = {"n": 40, "device": "cpu", "progress": False, "cache": tmp_path, **kw}
    return run_mia(run.id, store=store, **kw)


@pytest.mark.slow
def test_lira_run_is_recorded_with_scores_and_a_roc(trained, tmp_path) -> None:
    store, target = trained
    run, result = _mia(store, target, tmp_path, attack="lira", shadows=2)
    assert run.kind == "mia" and run.status == "finished"
    assert run.config["target"] == target.id and run.config["shadows"] == 2
    s = run.summary
    for key in ("auc", "tpr_at_1fpr", "tpr_at_01fpr", "advantage", "loss_auc", "loss_advantage"):
        assert 0 <= s[key] <= 1, key
    assert s["members"] == s["nonmembers"] == 40
    assert s["shadows"] == 2 and s["shadows_trained"] == 2 and s["fix_variance"] is True
    assert 0 <= s["member_accuracy"] <= 1 and 0 <= s["nonmember_accuracy"] <= 1
    assert result.scores.shape == (80,) and int(result.is_member.sum()) == 40
    assert {a["name"] for a in run.artifacts()} == {"roc.png", "scores.json"}
    doc = json.loads((run.dir / "scores.json").read_text())
    assert doc["members"]["split"] == "train" and doc["nonmembers"]["split"] == "test"
    assert len(doc["members"]["index"]) == len(doc["nonmembers"]["score"]) == 40
    assert set(doc["roc_legend"]) == {"lira", "loss"}
    assert (run.dir / "roc.png").read_bytes()[:4] == b"\x89PNG"
    # the same call again trains no shadow and gives the same scores
    again, second = _mia(store, target, tmp_path, attack="lira", shadows=2)
    assert again.summary["shadows_trained"] == 0 and again.id != run.id
    assert torch.equal(second.scores, result.scores)
    off, _ = _mia(store, target, tmp_path, attack="lira", shadows=2, offline=True)
    assert off.summary["shadows_trained"] == 0 and 0 <= off.summary["auc"] <= 1


@pytest.mark.parametrize("attack", ["loss", "confidence", "shokri"])
def test_other_attacks_run_through_the_same_entry_point(trained, tmp_path, attack) -> None:
    store, target = trained
    run, result = _mia(store, target, tmp_path, attack=attack, shadows=1)
    assert run.status == "finished" and 0 <= run.summary["auc"] <= 1
    assert ("loss_auc" in run.summary) == (attack != "loss")
    assert result.baseline is None if attack == "loss" else result.baseline is not None
    if attack == "shokri":
        assert run.summary["shadows_trained"] == 1


def test_bad_input_is_refused_before_anything_is_stored(trained, tmp_path) -> None:
    store, target = trained
    before = len(store.list())
    cases = [
        ({"attack": "lirra"}, "unknown privacy attack 'lirra'. Did you mean 'lira'"),
        ({"attack": "lira", "shadows": 1}, "shadows must be an integer >= 2"),
        ({"attack": "loss", "offline": True}, "--offline is LiRA's"),
        ({"attack": "lira", "queries": 3}, "queries must be 1"),
        ({"attack": "loss", "n": 10**6}, "--n must be an integer >= 1 and <= 360"),
    ]
    for kw, match in cases:
        with pytest.raises(InputError, match=match):
            _mia(store, target, tmp_path, **kw)
    with pytest.raises(InputError, match="no run 999"):
        run_mia(999, store=store)
    other = store.create_run("detect", "not-a-train-run", {})
    other.finish()
    with pytest.raises(InputError, match="a 'detect' run"):
        run_mia(other.id, store=store, attack="loss")
    empty = store.create_run("train", "no-model", {"dataset": "digits"})
    with pytest.raises(InputError, match="is running; finish it first"):
        run_mia(empty.id, store=store, attack="loss")
    empty.finish()
    with pytest.raises(InputError, match="has no model.safetensors"):
        run_mia(empty.id, store=store, attack="loss")
    assert len(store.list()) == before + 2  # only the two runs this test made itself
    assert set(PRIVACY_ATTACKS.names()) == {
        *("lira", "shokri", "rmia", "loss", "confidence", "entropy"),
        *("label-only", "label-only-hsj", "label-only-augment"),
    }


def test_every_registered_privacy_attack_has_a_card_mia_can_use() -> None:
    for card in PRIVACY_ATTACKS:
        assert card.paper and card.threat, card.name
        assert isinstance(card.meta["shadows"], bool) and callable(card.meta["audit"])
        if card.meta["shadows"]:
            assert card.meta["min_shadows"] >= 1
    assert PRIVACY_ATTACKS.names(shadows=True) == ["shokri", "lira", "rmia"]
    assert PRIVACY_ATTACKS.names(shadows=False) == [
        *("loss", "confidence", "entropy"),
        *("label-only", "label-only-hsj", "label-only-augment"),
    ]


@pytest.mark.parametrize("attack", PRIVACY_ATTACKS.names(shadows=False))
def test_every_threshold_attack_runs_through_run_mia(trained, tmp_path, attack) -> None:
    store, target = trained
    short = {"iterations": 2} if attack == "label-only-hsj" else {}  # HopSkipJump: 2 of 64
    run, result = _mia(store, target, tmp_path, attack=attack, n=10, options=short)
    assert run.config["attack"] == attack and run.config["shadows"] == 0
    assert result.scores.shape == (20,) and result.scores.dtype == torch.float64
    # the card builds the same scores from the model and the audited examples
    assert 0 <= run.summary["auc"] <= 1


@pytest.mark.slow
@pytest.mark.parametrize("attack", PRIVACY_ATTACKS.names(shadows=True))
def test_every_shadow_attack_runs_through_run_mia(trained, tmp_path, attack) -> None:
    store, target = trained
    shadows = PRIVACY_ATTACKS.get(attack).meta["min_shadows"]
    run, result = _mia(store, target, tmp_path, attack=attack, n=10, shadows=shadows)
    assert run.config["shadows"] == shadows == run.summary["shadows"]
    assert result.scores.shape == (20,) and 0 <= run.summary["auc"] <= 1


def test_offline_and_shadow_counts_come_from_the_cards(trained, tmp_path) -> None:
    store, target = trained
    with pytest.raises(InputError, match="--offline is LiRA's one-sided test / RMIA's offline"):
        _mia(store, target, tmp_path, attack="confidence", offline=True)
    with pytest.raises(InputError, match="--shadows must be an integer >= 1, got 0"):
        _mia(store, target, tmp_path, attack="shokri", shadows=0)


def test_an_attack_takes_its_own_options_and_refuses_others(trained, tmp_path) -> None:
    from trustlab.attacks.privacy.audit import option_names

    store, target = trained
    assert option_names(PRIVACY_ATTACKS.get("loss")) == []
    assert {"gamma", "temperature", "offline_a"} <= set(option_names(PRIVACY_ATTACKS.get("rmia")))
    # the hook's own arguments (seed, device, progress) are not options
    assert "seed" not in option_names(PRIVACY_ATTACKS.get("label-only"))
    before = len(store.list())
    with pytest.raises(InputError, match="'loss' has no option 'k'; it takes no options"):
        _mia(store, target, tmp_path, attack="loss", options={"k": 1})
    with pytest.raises(InputError, match="has no option 'seed'; it takes: sigmas, samples"):
        _mia(store, target, tmp_path, attack="label-only", options={"seed": 1})
    assert len(store.list()) == before  # nothing recorded
    opts = {"sigmas": [0.2], "samples": 4}
    run, result = _mia(store, target, tmp_path, attack="label-only", n=10, options=opts)
    assert run.config["options"] == opts and run.summary["label_queries_per_example"] <= 5


@pytest.mark.parametrize(
    ("attack", "options", "match"),
    [
        ("rmia", {"temperature": None}, "option 'temperature': Input should be a valid number"),
        ("rmia", {"trim": "x"}, "option 'trim'.*got 'x'; its default is 0.2"),
        ("rmia", {"batch_size": 0}, "'rmia', options .*batch_size must be an integer >= 1"),
        ("rmia", {"trim": 0.6}, r"trim must lie in \[0, 0.5\)"),
        ("lira", {"fix_variance": "maybe"}, "option 'fix_variance': Input should be a valid bool"),
        ("shokri", {"lr": 0}, "lr must be > 0"),
        ("label-only", {"samples": -5}, "samples must be an integer >= 1"),
        ("label-only", {"sigmas": []}, "sigmas must be one or more"),
        ("label-only-hsj", {"gamma": 0}, "gamma must be > 0"),
        ("label-only-augment", {"d": 40}, "d must be an integer >= 0 and <= 15"),
    ],
)
def test_bad_option_values_are_refused_before_anything_is_stored(
    trained, tmp_path, attack, options, match
) -> None:
    store, target = trained
    before = len(store.list())
    with pytest.raises(InputError, match=match):
        _mia(store, target, tmp_path, attack=attack, shadows=2, options=options)
    assert len(store.list()) == before  # no failed run left behind
    assert not any(tmp_path.iterdir())  # and no shadow trained


def test_an_offline_option_without_offline_is_refused(trained, tmp_path) -> None:
    store, target = trained
    with pytest.raises(InputError, match="'offline_a' sets RMIA's offline .*add --offline"):
        _mia(store, target, tmp_path, attack="rmia", shadows=2, options={"offline_a": 0.3})


def test_option_values_are_converted_to_their_declared_types() -> None:
    from trustlab.attacks.privacy.audit import check_options

    out = check_options(PRIVACY_ATTACKS.get("rmia"), {"gamma": "2", "offline_a": "tune"})
    assert out == {"gamma": 2.0, "offline_a": "tune"} and isinstance(out["gamma"], float)
    assert check_options(PRIVACY_ATTACKS.get("lira"), {"fix_variance": True}) == {
        "fix_variance": True
    }


def test_executor_errors_come_before_the_run(trained, tmp_path) -> None:
    store, target = trained
    before = len(store.list())
    with pytest.raises(InputError, match="--attack loss trains none: drop --executor"):
        _mia(store, target, tmp_path, attack="loss", executor="local")
    pytest.importorskip("ray")
    from trustlab.utils.executor import RayExecutor

    with pytest.raises(InputError, match="127.0.0.1:1"):
        _mia(store, target, tmp_path, attack="lira", shadows=2,
             executor=RayExecutor(address="127.0.0.1:1"))  # fmt: skip
    assert len(store.list()) == before
