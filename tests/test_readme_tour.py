"""The README's command-line tour, walked in order on a fresh store at smoke size.

Every ``trustlab ...`` line of the "Command line" block runs through the CLI as written, with
small-size flags appended from :data:`SMALL` (a repeated option takes its last value), and must
exit 0. Lines that cannot run inside a test (``torchrun``, ``make``) are skipped; ``export
TRUSTLAB_HOME=...`` is what the test's fresh store stands for.
"""

from __future__ import annotations

import os
import re
import shlex
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from trustlab.cli import app

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"

#: flags appended to a tour command (keyed by its first words) so that it runs at smoke size.
#: shapes10 runs train on digits here: the tour's ids and their relations stay the same.
SMALL: dict[str, list[str]] = {
    "train --config examples/demo-shapes10.yaml": [
        *("--dataset", "digits", "--model", "mlp", "--epochs", "2"),
    ],
    "train --dataset shapes10": [
        *("--dataset", "digits", "--epochs", "1", "--model", "mlp"),
    ],
    "train --dataset digits --model cnn-small": ["--epochs", "3"],  # detect needs a fit model
    "train": ["--epochs", "1"],
    "backdoor": ["--dataset", "digits", "--model", "mlp", "--epochs", "1"],
    "evaluate": ["--n", "16", "--suite", "quick"],
    "transfer": ["--n", "32", "--steps", "2"],
    "advcam": ["--n", "2", "--steps", "2"],
    "detect": ["--n", "128", "--splits", "2"],
    "defend": ["--epochs", "1"],
    "mia": ["--shadows", "2", "--n", "32"],
    "audit-dp": ["--canaries", "32", "--base-size", "96"],
    "reproduce": ["--preset", "smoke", "--workers", "1"],
    "audit": ["--n", "32"],
    "bench": [
        "--preset",
        "smoke",
        "--workers",
        "1",
        "--attacks",
        "badnets",
        "--defenses",
        "spectral",
    ],
}
SKIP_PREFIXES = ("torchrun", "make", "python")


def tour_lines(text: str) -> list[str]:
    """The commands of the README's "Command line" block, comments stripped."""
    block = re.search(r"### Command line\n.*?```bash\n(.*?)```", text, re.S)
    assert block, "README.md has no ```bash block under '### Command line'"
    lines = []
    for raw in block.group(1).splitlines():
        line = raw.split(" # ")[0].strip()
        if line and not line.startswith("#"):
            lines.append(line)
    return lines


def small_flags(args: list[str]) -> list[str]:
    joined = " ".join(args)
    for prefix in sorted(SMALL, key=len, reverse=True):
        if joined == prefix or joined.startswith(prefix + " "):
            return SMALL[prefix]
    return []


def exit_ok(args: list[str], code: int, output: str) -> bool:
    """Exit 0, or for a reproduction exit 1 with its verdicts printed: a claim that FAILs at the
    smoke preset is a result (the command's exit status says so), not a broken command."""
    if code == 0:
        return True
    return args[0] == "reproduce" and code == 1 and "FAIL " in output and "error:" not in output


def test_the_tour_names_its_runs_in_order() -> None:
    """The ``# run N:`` comments count the runs the tour creates, from 1, without gaps."""
    text = README.read_text(encoding="utf-8")
    block = re.search(r"### Command line\n.*?```bash\n(.*?)```", text, re.S)
    assert block
    ids = [int(m) for m in re.findall(r"# run (\d+):", block.group(1))]
    assert ids == list(range(1, len(ids) + 1))


def shrink_jem(monkeypatch: pytest.MonkeyPatch) -> None:
    """``defend-privacy`` has no size flags: its recipes (10 + 50 epochs, 20 SGLD steps, as many
    synthetic samples as training images) are shrunk here instead."""
    from trustlab.defenses.privacy import jem
    from trustlab.registry import PRIVACY_DEFENSES

    class SmokeJEM(jem.JEMSettings):
        steps: int = 2
        buffer_size: int = 100
        synthetic_size: int | None = 64

    monkeypatch.setattr(jem, "FINETUNE", jem.FINETUNE.model_copy(update={"epochs": 1}))
    monkeypatch.setattr(jem, "RETRAIN", jem.RETRAIN.model_copy(update={"epochs": 1}))
    monkeypatch.setitem(PRIVACY_DEFENSES.get("jem").meta, "settings", SmokeJEM)


@pytest.mark.slow
def test_the_readme_tour_runs_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lines = tour_lines(README.read_text(encoding="utf-8"))
    shrink_jem(monkeypatch)
    home = tmp_path / "tour"
    monkeypatch.setenv("TRUSTLAB_HOME", str(home))
    monkeypatch.chdir(tmp_path)  # cam.png and friends land here
    (tmp_path / "examples").symlink_to(REPO / "examples")
    runner = CliRunner()
    ran, skipped, times = 0, [], []
    for line in lines:
        if line.startswith("export "):
            assert line.startswith("export TRUSTLAB_HOME="), line
            continue
        if line.startswith(SKIP_PREFIXES):
            skipped.append(line)
            continue
        assert line.startswith("trustlab "), f"a tour line that is not a trustlab command: {line}"
        args = [os.path.expandvars(a) for a in shlex.split(line)[1:]]
        args += small_flags(args)
        if args[0] in (
            "train", "backdoor", "defend", "mia", "defend-privacy", "reproduce", "audit",
            "audit-dp",
        ):  # fmt: skip
            args.append("--quiet")
        start = time.perf_counter()
        result = runner.invoke(app, args)
        times.append((time.perf_counter() - start, line))
        print(f"{times[-1][0]:6.1f} s  {line}", flush=True)
        assert exit_ok(args, result.exit_code, result.output), (
            f"`{line}` (run as trustlab {shlex.join(args)}) exited {result.exit_code}:\n"
            f"{result.output}\n{result.exception!r}"
        )
        ran += 1
    assert ran >= 20 and all(s.startswith(SKIP_PREFIXES) for s in skipped)
