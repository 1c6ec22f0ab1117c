"""The CLI and the catalogue: `trustlab list`, help texts filled from the registries, output
that is readable when it is not a terminal, and a root that imports no torch."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from trustlab.cli import app
from trustlab.registry import EVASION, REGISTRIES

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


def _flat(text: str) -> str:
    """Help text without the panel borders and whitespace that rich wraps it in."""
    return re.sub(r"[\s│╭╮╰╯─]", "", text)


def test_attack_help_lists_exactly_the_registered_evasion_attacks() -> None:
    out = invoke("attack", "--help")
    assert out.exit_code == 0, out.output
    flat = _flat(out.output)
    listed = re.search(r"--attack<str>([a-z0-9,+-]+)\.", flat)
    assert listed, out.output
    assert listed.group(1).split(",") == EVASION.names()


@pytest.mark.parametrize(
    ("args", "option", "kind", "where"),
    [
        (["evaluate"], "--suite", "suites", {}),
        (["detect"], "--detector", "detectors", {}),
        (["transfer"], "--attack", "evasion", {"transfer": True}),
        (["backdoor"], "--attack", "backdoors", {}),
        (["defend"], "--defense", "defenses", {}),
        (["mia"], "--attack", "privacy-attacks", {}),
        (["defend-privacy"], "--defense", "privacy-defenses", {}),
    ],
)
def test_choice_help_comes_from_the_registry(
    args: list[str], option: str, kind: str, where: dict
) -> None:
    out = invoke(*args, "--help")
    assert out.exit_code == 0, out.output
    names = REGISTRIES[kind].names(**where)
    assert names, kind
    assert f"{option}<str>{','.join(names)}." in _flat(out.output), out.output


def test_list_shows_every_registered_name() -> None:
    out = invoke("list")
    assert out.exit_code == 0, out.output
    for kind, reg in REGISTRIES.items():
        assert f"{kind} ({len(reg)})\n" in out.output
        for name in reg.names():
            assert re.search(rf"│ {re.escape(name)}\s+│", out.output), (kind, name)
    one = invoke("list", "detectors")
    assert one.exit_code == 0 and "evasion (" not in one.output


def test_list_json() -> None:
    out = invoke("list", "evasion", "--json")
    assert out.exit_code == 0, out.output
    cards = json.loads(out.output)
    assert [c["name"] for c in cards] == EVASION.names()
    assert all(c["paper"] and c["kind"] == "evasion attack" for c in cards)
    assert cards[EVASION.names().index("pgd")]["defaults"]["steps"] == 20
    every = json.loads(invoke("list", "--json").output)
    assert list(every) == list(REGISTRIES)
    bad = runner.invoke(app, ["list", "attacks"])
    assert bad.exit_code == 2 and "unknown kind 'attacks'" in bad.output


def test_unknown_names_are_the_registrys_errors(_isolated_home: Path) -> None:
    out = runner.invoke(app, ["attack", "1", "--attack", "pgdd", "--device", "cpu"])
    assert out.exit_code == 2 and "Did you mean 'pgd'?" in out.output, out.output


def _no_torch(*args: str) -> None:
    code = (
        "import sys\n"
        "from trustlab.cli import app\n"
        "from typer.testing import CliRunner\n"
        f"out = CliRunner().invoke(app, {list(args)!r})\n"
        "assert out.exit_code == 0, out.output\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, env=os.environ.copy())


@pytest.mark.parametrize("args", [["--help"], ["runs"], ["bench", "--help"]])
def test_root_help_and_runs_import_no_torch(args: list[str]) -> None:
    _no_torch(*args)


# -- output that is not a terminal -------------------------------------------------------------
def _fake_reproduction(rows: list[dict]):
    from trustlab.experiments.base import ClaimResult, Reproduction, ResultTable, get_experiment

    exp = get_experiment("meminf-jem")
    table = ResultTable(exp.keys, exp.metrics, rows)
    claims = [ClaimResult("c", "a claim", True, "detail")]
    return Reproduction("meminf-jem", exp.presets["smoke"], table, claims, None)


def test_reproduction_table_is_whole_and_nan_is_a_dash(monkeypatch: pytest.MonkeyPatch) -> None:
    """CliRunner's output is not a terminal: the table keeps every header and cell whole (no
    `mod…`), and a metric that does not apply to a row prints `—`, not `nan`."""
    import trustlab.experiments.base as base
    from trustlab.experiments.base import get_experiment

    exp = get_experiment("meminf-jem")
    full = {m: 0.123456 for m in exp.metrics}
    rows = [
        {"model": "undefended", "seed": 0, **full},
        {"model": "jem", "seed": 0, **{m: v for m, v in full.items() if "lira" not in m}},
        {"model": "dp-sgd", "seed": 0, **full, "epsilon": math.nan},
    ]
    monkeypatch.setattr(base, "reproduce", lambda *a, **k: _fake_reproduction(rows))
    out = invoke("reproduce", "meminf-jem", "--preset", "smoke", "--quiet")
    assert out.exit_code == 0, out.output
    assert "…" not in out.output and "nan" not in out.output.lower()
    header = next(line for line in out.output.splitlines() if "test_acc" in line)
    cells = [c.strip() for c in header.strip("┃│ ").split("┃")]
    assert cells == ["model", *exp.metrics, "seeds"], header
    jem = next(line for line in out.output.splitlines() if "│ jem" in line)
    assert jem.count("—") == 3  # lira_auc, lira_tpr_at_1fpr, lira_advantage
    assert " 12.35 │" in out.output  # a percent metric, whole (one seed: no interval)


def test_show_prints_nan_as_a_dash(_isolated_home: Path) -> None:
    from trustlab.results import RunStore

    run = RunStore().create_run("train", "t", {"model": "mlp"})
    run.log_metrics(1, {"loss": 0.5, "test_accuracy": math.nan})
    run.finish({"test_accuracy": 0.5})
    out = invoke("show", str(run.id))
    assert out.exit_code == 0, out.output
    assert "—" in out.output and not re.search(r"\bnan\b", out.output)


@pytest.mark.slow
def test_reproduce_smoke_to_a_file_is_readable(tmp_path: Path, _isolated_home: Path) -> None:
    """`trustlab reproduce advcam --preset smoke > out.txt`, as a shell runs it (the fastest
    smoke preset; meminf-jem's table is checked with made-up rows above)."""
    out_txt = tmp_path / "out.txt"
    env = {**os.environ, "TRUSTLAB_HOME": str(_isolated_home), "OMP_NUM_THREADS": "1"}
    env["COLUMNS"] = "80"  # a narrow terminal around the redirect changes nothing
    with out_txt.open("w") as f:
        cmd = [sys.executable, "-m", "trustlab", "reproduce", "advcam", "--preset", "smoke"]
        rc = subprocess.run([*cmd, "--device", "cpu"], stdout=f, env=env).returncode
    text = out_txt.read_text()
    assert rc in (0, 1), text
    from trustlab.experiments.base import get_experiment

    exp = get_experiment("advcam")
    assert f"{exp.title}: advcam (smoke, " in text  # the title on one line
    for word in (*exp.keys, *exp.metrics, "seeds"):
        assert re.search(rf"┃\s+{re.escape(word)}\s+┃", text), (word, text)
    assert "…" not in text and "nan ±" not in text


def test_root_help_groups_the_commands_by_area() -> None:
    from typer.testing import CliRunner

    from trustlab.cli import app

    out = CliRunner().invoke(app, ["--help"], terminal_width=120).output
    areas = ["Catalogue", "Training", "Evasion and detection", "Backdoors", "Privacy",
             "Reproductions and benchmarks", "Results store"]  # fmt: skip
    positions = [out.index(f"─ {a} ") for a in areas]
    assert positions == sorted(positions)
    evasion = out[positions[2] : positions[3]]
    assert all(c in evasion for c in ("attack", "evaluate", "advcam", "detect", "transfer"))


def test_flags_show_no_value_placeholder() -> None:
    from typer.testing import CliRunner

    from trustlab.cli import app

    out = CliRunner().invoke(app, ["train", "--help"], terminal_width=120).output
    line = next(ln for ln in out.splitlines() if "--dp " in ln)
    assert "<bool>" not in line and "DP-SGD" in line
    assert "<bool>" not in out  # no flag of train shows a type


def test_an_interrupted_command_does_not_promise_a_resume_it_cannot_do(monkeypatch) -> None:
    from typer.testing import CliRunner

    import trustlab.workflows.backdoor as wb
    from trustlab.cli import app
    from trustlab.cli.common import INTERRUPTED

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(wb, "run_backdoor", interrupted)
    out = CliRunner().invoke(app, ["backdoor", "--attack", "badnets"], terminal_width=200)
    assert out.exit_code == 130
    text = " ".join(out.output.split())
    assert " ".join(INTERRUPTED.split()) in text and "training run or a reproduction" in text
