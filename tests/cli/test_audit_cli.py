"""`trustlab audit`: a user's own nn.Module (a class in a .py file, weights in safetensors) is
audited and stored as a run with its scorecard; a pickle is refused with one error line."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from trustlab.cli import app
from trustlab.cli.audit import CHECK_NAMES
from trustlab.results import RunStore
from trustlab.workflows.audit import CHECKS

runner = CliRunner()

NET = textwrap.dedent(
    """
    import torch.nn.functional as F
    from torch import nn


    class TinyNet(nn.Module):
        def __init__(self, width: int = 4, classes: int = 10) -> None:
            super().__init__()
            self.conv = nn.Conv2d(1, width, 3, padding=1, stride=2)
            self.fc = nn.Linear(width * 8 * 8, classes)

        def forward(self, x):
            return self.fc(F.relu(self.conv(x)).flatten(1))
    """
)


def invoke(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


@pytest.fixture
def user_model(tmp_path: Path) -> tuple[Path, Path]:
    src = tmp_path / "my_net.py"
    src.write_text(NET)
    import importlib.util

    spec = importlib.util.spec_from_file_location("my_net_for_weights", src)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    torch.manual_seed(0)
    net = mod.TinyNet(width=6)
    weights = tmp_path / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(weights))
    return src, weights


def test_a_user_module_with_safetensors_weights_is_audited_and_stored(
    user_model, tmp_path: Path
) -> None:
    src, weights = user_model
    html = tmp_path / "out" / "card.html"
    out = invoke(
        "audit", str(weights), "--arch", f"{src}:TinyNet", "--arch-kwargs", '{"width": 6}',
        "--dataset", "digits", "--checks", "clean,robustness", "--n", "20", "--quiet",
        "--out", str(html),
    )  # fmt: skip
    assert out.exit_code == 0, out.output
    run = RunStore().list(kind="audit")[0]
    assert run.status == "finished" and run.config["arch"] == f"{src}:TinyNet"
    card = json.loads((run.dir / "scorecard.json").read_text())
    assert list(card["sections"]) == ["clean", "robustness"]
    assert card["summary"]["clean.accuracy"] == run.summary["clean.accuracy"]
    assert {a["name"] for a in run.artifacts()} == {"scorecard.json", "scorecard.html"}
    assert html.read_text() == (run.dir / "scorecard.html").read_text()
    assert "scorecard:" in out.output and "scorecard.html" in out.output
    assert "TinyNet" in card["model"]


def test_a_pickle_is_refused_with_exit_2(user_model, tmp_path: Path) -> None:
    src, weights = user_model
    from safetensors.torch import load_file

    pickled = tmp_path / "tiny.pt"
    torch.save(load_file(str(weights)), pickled)
    for extra in ([], ["--arch", f"{src}:TinyNet", "--arch-kwargs", '{"width": 6}']):
        out = invoke("audit", str(pickled), "--dataset", "digits", "--quiet", *extra)
        assert out.exit_code == 2, out.output
        assert out.output.count("error:") == 1 and "pickle" in out.output.lower()
    assert RunStore().list() == []  # nothing stored


def test_bad_input_is_one_error_before_any_run(user_model) -> None:
    src, weights = user_model
    arch = ["--arch", f"{src}:TinyNet", "--arch-kwargs", '{"width": 6}']
    cases = [
        (["--dataset", "digits", "--checks", "clean,nope"], "unknown check 'nope'"),
        (["--dataset", "digits", "--arch-kwargs", "[1]"], "JSON object"),
        (["--checks", "clean"], "pass --dataset"),
        (["--dataset", "digits", "--shadows", "2"], "needs the model's training recipe"),
        (["--dataset", "digits", "--eps", "2"], "--eps must be in (0, 1]"),
        (["--dataset", "digits", "--n", "0"], "n must be an integer >= 1"),
    ]
    for extra, message in cases:
        given = arch[:2] if "--arch-kwargs" in extra else arch
        out = invoke("audit", str(weights), *given, *extra, "--quiet")
        assert out.exit_code == 2, (extra, out.output)
        assert message in out.output.replace("\n", " "), out.output
    assert RunStore().list() == []


def test_the_help_lists_the_checks() -> None:
    assert ", ".join(CHECKS) == CHECK_NAMES
    out = invoke("audit", "--help")
    assert out.exit_code == 0 and "--arch" in out.output


def test_latest_audits_the_newest_training_run_with_its_training_split() -> None:
    from trustlab.workflows.train import run_training

    out = invoke("audit", "latest", "--quiet")
    assert out.exit_code == 2 and "holds none" in out.output
    run, _ = run_training(
        {"dataset": "digits", "model": "cnn-small", "epochs": 1, "batch_size": 128,
         "device": "cpu", "name": "tiny"},
        progress=False,
    )  # fmt: skip
    out = invoke("audit", "latest", "--checks", "clean,privacy", "--n", "40", "--quiet")
    assert out.exit_code == 0, out.output
    audit_run = RunStore().list(kind="audit")[0]
    assert audit_run.config["target"] == str(run.id)
    card = json.loads((audit_run.dir / "scorecard.json").read_text())
    assert card["dataset"] == "digits" and f"run {run.id} (tiny)" in card["model"]
    privacy = card["sections"]["privacy"]
    assert privacy["status"] == "ok" and privacy["budget"]["members"] == 40
    assert audit_run.summary["privacy.auc"] == privacy["metrics"]["auc"]


# -- --out: a folder gets scorecard.html; bad places refused up front; a copy never fails a run ---
def _audit_out(user_model, out: str, *extra: str):
    src, weights = user_model
    return invoke(
        "audit", str(weights), "--arch", f"{src}:TinyNet", "--arch-kwargs", '{"width": 6}',
        "--dataset", "digits", "--checks", "clean", "--n", "20", "--quiet", "--out", out, *extra,
    )  # fmt: skip


def test_out_folder_gets_the_scorecard_inside_it(user_model, tmp_path: Path) -> None:
    cdir = tmp_path / "cdir"
    cdir.mkdir()  # an existing folder
    out = _audit_out(user_model, str(cdir))
    assert out.exit_code == 0, out.output
    run = RunStore().list(kind="audit")[0]
    assert run.status == "finished" and run.summary["clean.accuracy"] >= 0
    stored = (run.dir / "scorecard.html").read_text()
    assert (cdir / "scorecard.html").read_text() == stored
    assert f"also written to: {cdir / 'scorecard.html'}" in out.output.replace("\n", "")
    new = tmp_path / "cards"  # a new folder, named with a trailing slash
    out = _audit_out(user_model, f"{new}/")
    assert out.exit_code == 0, out.output
    assert new.is_dir() and (new / "scorecard.html").is_file()
    plain = tmp_path / "page.html"  # a file name stays a file
    assert _audit_out(user_model, str(plain)).exit_code == 0 and plain.is_file()


def test_out_under_a_file_is_one_error_before_any_run(user_model, tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("x")
    for bad in (tmp_path / "afile" / "card.html", tmp_path / "afile" / "deeper" / "x.html"):
        out = _audit_out(user_model, str(bad))
        assert out.exit_code == 2, out.output
        assert out.output.count("error:") == 1 and "is a file, not a folder" in out.output
    assert RunStore().list() == []  # nothing stored


def test_a_copy_that_cannot_be_written_never_fails_the_audit(
    user_model, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import trustlab.results.html as html_mod

    real = html_mod.write_page
    copy = tmp_path / "copy.html"

    def refuse_the_copy(path, text):
        if Path(path) == copy:
            raise OSError(28, "No space left on device")
        return real(path, text)

    monkeypatch.setattr(html_mod, "write_page", refuse_the_copy)
    out = _audit_out(user_model, str(copy))
    assert out.exit_code == 0, out.output
    run = RunStore().list(kind="audit")[0]
    assert run.status == "finished" and "clean.accuracy" in run.summary
    assert (run.dir / "scorecard.html").is_file() and not copy.exists()
    text = out.output.replace("\n", "")
    assert "could not be written to" in text and "No space left" in text
    assert "also written to" not in text
