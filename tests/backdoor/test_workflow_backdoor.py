"""trustlab.workflows.backdoor.run_backdoor: a stored backdoor run, bad input refused first."""

from __future__ import annotations

from pathlib import Path

import pytest

from trustlab.attacks.backdoor.artifact import load_artifact
from trustlab.errors import InputError
from trustlab.results import RunStore
from trustlab.workflows.backdoor import run_backdoor


def test_run_backdoor_stores_the_artefact(_isolated_home: Path) -> None:
    run, art = run_backdoor(
        "pixel", dataset="digits", model="cnn-small", epochs=1, rate=0.05, target=2, device="cpu"
    )
    stored = RunStore().get(run.id)
    assert stored.kind == "backdoor" and stored.status == "finished"
    names = {a["name"] for a in stored.artifacts()}
    assert {"model.safetensors", "trigger.safetensors", "poison.safetensors", "backdoor.json",
            "examples.png"} <= names  # fmt: skip
    assert stored.config["attack"] == "pixel" and stored.config["seed"] == 0
    back = load_artifact(stored.dir)
    assert back.config["dataset"] == "digits" and back.policy.state()["target"] == 2
    assert back.metrics == art.metrics


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"attack": "trojannn"}, "unknown backdoor attack"),
        ({"attack": "badnets", "target": 10}, "--target must be in"),
        ({"attack": "badnets", "model": "no-such-net"}, "model"),
    ],
)
def test_run_backdoor_refuses_bad_input_before_storing(
    _isolated_home: Path, kw: dict, match: str
) -> None:
    with pytest.raises(InputError, match=match):
        run_backdoor(**{"dataset": "digits", "device": "cpu", **kw})
    assert RunStore().list() == []
