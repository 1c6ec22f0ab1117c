"""The model benchmark (robustness) and the training-defense benchmark (privacy), scaled down,
and the ``trustlab submit`` command's output for a finished, a cached and a failed submission."""

from __future__ import annotations

import json
import textwrap

import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from trustlab.cli import app
from trustlab.errors import InputError
from trustlab.platform.benchmarks import get_benchmark
from trustlab.platform.sandbox import SandboxOutcome
from trustlab.platform.submissions import submit
from trustlab.results import RunStore

NET = """
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(256, 10)

    def forward(self, x):
        return self.fc(x.flatten(1))
"""

PRIVACY = """
import torch
import torch.nn.functional as F
from torch import nn


class OneEpoch:
    def train(self, dataset, seed):
        torch.manual_seed(seed)
        model = nn.Sequential(nn.Flatten(), nn.Linear(256, 10))
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        for i in range(0, len(dataset), 32):
            x, y = dataset.x[i : i + 32], dataset.y[i : i + 32]
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()
        return model


class NoModel:
    def train(self, dataset, seed):
        return {"weights": [1, 2, 3]}


class Release:
    def defend(self, model, private_train, test):
        return model  # the benchmark's undefended model, released as it is
"""


def test_robustness_model_is_scored(tmp_path):
    (tmp_path / "net.py").write_text(textwrap.dedent(NET))
    torch.manual_seed(0)
    from trustlab.utils.imports import load_object

    net = load_object(f"{tmp_path / 'net.py'}:Net", what="model class")()
    save_file(net.state_dict(), str(tmp_path / "net.safetensors"))
    bench = get_benchmark("robustness-quick").scaled(data={"size": 20})
    store = RunStore(tmp_path / "store")
    res = submit(str(tmp_path / "net.safetensors"), bench, kind="model",
                 arch=f"{tmp_path / 'net.py'}:Net", store=store)  # fmt: skip
    assert res.ok, (res.failure, res.reason, res.traceback)
    s = store.get(res.run.id).summary
    assert s["primary"] == "robust_accuracy"
    rob, clean = s["scores"]["robust_accuracy"], s["scores"]["clean_accuracy"]
    assert rob["mean"] <= clean["mean"] and rob["lo"] <= rob["mean"] <= rob["hi"]
    assert rob["values"] == [rob["mean"]]
    assert res.run.config["submission"]["kind"] == "model"
    details = json.loads((res.run.dir / "evaluation.json").read_text())["details"]
    assert details["report"]["n"] == 20 and details["sanity"]
    # a pickle is refused in this process from its bytes (a mistake of the command: nothing
    # is recorded)
    torch.save(net.state_dict(), tmp_path / "net.pt")
    with pytest.raises(InputError, match="torch.save file"):
        submit(str(tmp_path / "net.pt"), bench, kind="model",
               arch=f"{tmp_path / 'net.py'}:Net", store=store)  # fmt: skip
    assert [r.id for r in store.list()] == [res.run.id]


def test_privacy_training_defense(tmp_path):
    path = tmp_path / "priv.py"
    path.write_text(textwrap.dedent(PRIVACY))
    bench = get_benchmark("privacy-quick").scaled(
        data={"members": 40, "non_members": 40}, seeds=(0,),
        model={"train": {"epochs": 2, "lr": 0.05, "batch_size": 32}},
    )  # fmt: skip
    store = RunStore(tmp_path / "store")
    res = submit(f"{path}:OneEpoch", bench, kind="defense", store=store)
    assert res.ok, (res.failure, res.reason, res.traceback)
    scores = store.get(res.run.id).summary["scores"]
    assert set(scores) == {"advantage", "test_accuracy", "tpr_at_1fpr", "auc"}
    assert 0 <= scores["advantage"]["mean"] <= 1 and 0 <= scores["auc"]["mean"] <= 1
    assert res.run.summary["higher_is_better"]["advantage"] is False
    bad = submit(f"{path}:NoModel", bench, kind="defense", store=store)
    assert not bad.ok and bad.failure == "malformed" and "torch.nn.Module" in bad.reason
    # the privacy defenses' post-hoc protocol: defend() the model the benchmark trained
    post = submit(f"{path}:Release", bench, kind="defense", store=store)
    assert post.ok, (post.failure, post.reason, post.traceback)
    details = json.loads((post.run.dir / "evaluation.json").read_text())["details"]
    assert details["protocol"] == "defend" and len(details["attacks"]) == 2


def _fake_outcome(*args, **kwargs):
    return SandboxOutcome(
        True,
        result={"scores": {"der": {"mean": 0.75, "lo": 0.7, "hi": 0.8, "values": [0.7, 0.8]}},
                "primary": "der", "higher_is_better": {"der": True}, "details": {}},
        wall_s=1.5,
    )  # fmt: skip


def test_cli_submit_prints_scores_then_cache_hit(tmp_path, monkeypatch):
    path = tmp_path / "mine.py"
    path.write_text("class Mine:\n    def repair(self, model, clean):\n        return model\n")
    monkeypatch.setattr("trustlab.platform.submissions.run_sandboxed", _fake_outcome)
    args = ["submit", "--defense", f"{path}:Mine", "--benchmark", "backdoor-quick"]
    out = CliRunner().invoke(app, args)
    assert out.exit_code == 0, out.output
    assert "DER *" in out.output and "0.7500" in out.output and "[0.7000, 0.8000]" in out.output
    again = CliRunner().invoke(app, [*args, "--label", "x"])
    assert again.exit_code == 0 and "cached: evaluated before" in again.output
    runs = RunStore().list(kind="submission")
    assert len(runs) == 1 and runs[0].summary["scores"]["der"]["mean"] == 0.75


def test_cli_submit_failure_exits_1(tmp_path):
    path = tmp_path / "broken.py"
    path.write_text("raise RuntimeError('broken at import')\n\nclass X:\n    pass\n")
    out = CliRunner().invoke(
        app, ["submit", "--defense", f"{path}:X", "--benchmark", "backdoor-quick"]
    )
    assert out.exit_code == 1
    assert "failed (raised)" in out.output and "broken at import" in out.output
    (run,) = RunStore().list(kind="submission")
    assert run.status == "failed" and "broken at import" in run.error


@pytest.mark.parametrize(
    "args, message",
    [
        (["--model", "w.safetensors", "--benchmark", "backdoor-quick"], "takes a defense"),
        (["--defense", "m:X", "--model", "w", "--benchmark", "privacy-quick"], "not both"),
        (["--defense", "nosuchmodule_xyz:X", "--benchmark", "privacy-quick"], "no module"),
        (["--defense", "a.py:X", "--benchmark", "nope"], "unknown benchmark"),
    ],
)
def test_cli_submit_bad_input(tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "w.safetensors").write_bytes(b"0")
    out = CliRunner().invoke(app, ["submit", *args])
    assert out.exit_code == 2 and message in out.output, out.output
    assert RunStore().list() == []
