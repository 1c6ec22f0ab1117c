"""trustlab.workflows.defend.run_defend: a stored defense run, bad input refused first."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from trustlab.errors import InputError
from trustlab.registry import DEFENSES
from trustlab.results import RunStore
from trustlab.workflows.backdoor import run_backdoor
from trustlab.workflows.defend import artifact_dir, run_defend


@pytest.fixture
def backdoor_run(_isolated_home: Path):
    run, _ = run_backdoor(
        "badnets", dataset="digits", model="cnn-small", epochs=1, device="cpu", seed=1
    )
    return run


def test_run_defend_stores_the_result(backdoor_run) -> None:
    run, out = run_defend(backdoor_run.id, "nc", epochs=1, device="cpu")
    stored = RunStore().get(run.id)
    assert stored.kind == "defend" and stored.status == "finished"
    assert stored.config == {
        "artefact": str(backdoor_run.dir), "defense": "nc", "epochs": 1, "seed": 0,
    }  # fmt: skip
    doc = json.loads((stored.dir / "defense.json").read_text())
    assert doc["defense"] == "nc" and doc["metrics"] == out and len(doc["report"]["norms"]) == 10
    assert (stored.dir / "triggers.png").is_file()
    # a folder works as well as a run id; spectral writes no triggers.png
    run2, out2 = run_defend(str(backdoor_run.dir), "spectral", device="cpu")
    assert "recall" in out2 and not (run2.dir / "triggers.png").exists()


def test_run_defend_refuses_bad_input_before_storing(backdoor_run, tmp_path: Path) -> None:
    runs = len(RunStore().list())
    with pytest.raises(InputError, match="unknown backdoor defense"):
        run_defend(backdoor_run.id, "magic")
    for name in DEFENSES.names(trains=False):  # strip, spectral, ac
        with pytest.raises(InputError, match="takes no --epochs"):
            run_defend(backdoor_run.id, name, epochs=3)
    with pytest.raises(InputError, match="--epochs must be >= 1"):
        run_defend(backdoor_run.id, "nc", epochs=0)
    with pytest.raises(InputError, match="backdoor artefact"):
        run_defend(str(tmp_path / "nowhere"), "nc")
    with pytest.raises(InputError, match="backdoor artefact"):
        artifact_dir(str(tmp_path))
    assert len(RunStore().list()) == runs


def test_a_capped_neural_cleanse_starts_lambda_at_init_cost(backdoor_run, monkeypatch) -> None:
    """The authors' lambda stays 0 for its first epochs; a budgeted scan (--epochs N) must not
    spend them all there, so it starts at init_cost."""
    import trustlab.workflows.defend as defend

    seen = {}

    def fake(defense, art, train, test, settings, options, **kw):
        seen[defense] = dict(options)
        return {"asr": 0.0}

    monkeypatch.setattr(defend, "run_defense", fake)
    run_defend(backdoor_run.id, "nc", epochs=3, device="cpu")
    assert seen["nc"] == {"epochs": 3, "reset_cost_to_zero": False}
    run_defend(backdoor_run.id, "nc", device="cpu")
    assert seen["nc"] == {}  # no cap: the authors' schedule with its early stop


def test_options_reach_the_attack_and_the_defense(backdoor_run, _isolated_home: Path) -> None:
    from typer.testing import CliRunner

    from trustlab.cli import app

    run, art = run_backdoor(
        "blend", dataset="digits", model="cnn-small", epochs=1, device="cpu",
        options={"alpha": 0.3},
    )  # fmt: skip
    assert art.trigger.alpha == 0.3 and run.config["options"] == {"alpha": 0.3}
    drun, out = run_defend(backdoor_run.id, "strip", device="cpu", options={"overlays": 4})
    assert drun.config["options"] == {"overlays": 4} and "auroc" in out
    runs = len(RunStore().list())
    with pytest.raises(InputError, match="alpha"):  # an unknown parameter names the allowed
        run_backdoor("blend", dataset="digits", model="cnn-small", options={"alfa": 0.3})
    with pytest.raises(InputError, match="overlays"):
        run_defend(backdoor_run.id, "strip", options={"overlay": 4})
    out = CliRunner().invoke(app, ["defend", str(backdoor_run.id), "--options", "{overlays: 4}"])
    assert out.exit_code == 2 and "--options is not JSON" in out.output
    out = CliRunner().invoke(app, ["backdoor", "--attack", "blend", "--options", "[0.3]"])
    assert out.exit_code == 2 and "--options must be a JSON object" in out.output
    assert len(RunStore().list()) == runs
