"""FDPDDL runs at tiny sizes: free-riders, tokens conserved, the in-process and per-process
backends computing the same numbers, a party that dies, per-party files, the stored run and
`trustlab collab run` (in-process and under torchrun).

Every run deals 200-600 digits to 2-3 parties for 1-2 rounds of 1 epoch; the DPGANs run one
epoch at a fixed noise multiplier (a target epsilon makes Opacus search for the noise, seconds per
party), except through the CLI, which always targets an epsilon."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from trustlab.collab import fdpddl as fd
from trustlab.collab.runner import CollabResult, run_fdpddl
from trustlab.collab.settings import CollabSettings, check_run
from trustlab.errors import InputError
from trustlab.results import RunStore

TINY = {
    "parties": 3,
    "samples": 300,
    "rounds": 2,
    "pretrain_epochs": 1,
    "local_epochs": 1,
    "batch_size": 32,
    "dpgan": {"epochs": 1, "noise_multiplier": 1.0},
    "benchmark": 10,
}


# the digits MLP every party trains: 256-256-256-10 with biases
NUM_PARAMS = 256 * 256 + 256 + 256 * 256 + 256 + 256 * 10 + 10  # 134154


def initial_sum(result: CollabResult) -> int:
    """n * floor(|theta| s (n - 1)) for one sharing level s (the sum of the initial tokens)."""
    s = result.settings
    (level,) = set(s.sharing_levels())
    return s.parties * int(NUM_PARAMS * level * (s.parties - 1) + 1e-9)


def tokens_of(result: CollabResult) -> list[list[list[int]]]:
    """Every finished party's tokens after every round (``[party][round][holder]``)."""
    return [[h["tokens"] for h in p.history] for p in result.parties.values()]


@pytest.fixture(scope="module")
def mislabel(tmp_path_factory: pytest.TempPathFactory) -> tuple[CollabResult, Path]:
    out = tmp_path_factory.mktemp("mislabel")
    return run_fdpddl({**TINY, "behaviours": {2: "mislabel"}}, out=out), out


@pytest.fixture(scope="module")
def zero() -> CollabResult:
    return run_fdpddl({**TINY, "behaviours": {2: "zero"}})


@pytest.fixture(scope="module")
def moving(tmp_path_factory: pytest.TempPathFactory) -> tuple[CollabResult, Path]:
    """Honest parties whose credibility is uneven enough for tokens to change hands."""
    out = tmp_path_factory.mktemp("moving")
    settings = {**TINY, "samples": 600, "pretrain_epochs": 2, "benchmark": 20}
    return run_fdpddl(settings, out=out), out


# -- free-riders ---------------------------------------------------------------------------------
def test_mislabelling_free_rider_is_expelled_in_stage_1(mislabel) -> None:
    result, _ = mislabel
    led = result.ledger
    assert led.expelled == {2: "labels 0"} and led.dropped == {}
    assert led.active.tolist() == [True, True, False]
    # its column (and row) is out of the credibility; the two others trust each other fully
    assert led.credibility.tolist() == [[0, 1, 0], [1, 0, 0], [0, 0, 0]]
    # it never trades: nobody downloads from it and it downloads from nobody
    p2 = result.parties[2]
    assert p2.tokens_earned == 0 and p2.tokens_spent == 0
    assert int(led.tokens[2]) == int(fd.initial_tokens(NUM_PARAMS, [0.1] * 3)[2])
    assert [h["active"] for h in p2.history] == [[True, True, False]] * 2
    rows = {r["party"]: r for r in result.rows()}
    assert rows[2]["fate"] == "expelled (labels 0)" and rows[0]["fate"] == "collaborating"
    assert result.summary()["expelled"] == [2]


def test_zero_free_rider_earns_no_more_than_honest_parties(zero) -> None:
    """At these sizes the zero party is not expelled: credibility measures agreement with the
    majority label of DPGAN samples, and a party that never trains labels with the common
    public initialisation, like the barely trained honest parties. It earns what they earn
    (the credibility is uniform, so the downloads are symmetric)."""
    earned = {i: p.tokens_earned for i, p in zero.parties.items()}
    assert 2 in zero.ledger.expelled or earned[2] <= min(earned[0], earned[1])


@pytest.mark.xfail(
    strict=True,
    reason="protocol limitation at tiny sizes: a zero free-rider ties with the honest parties "
    "(credibility only measures benchmark labels, not the released update)",
)
def test_zero_free_rider_is_expelled_or_earns_strictly_fewest(zero) -> None:
    earned = {i: p.tokens_earned for i, p in zero.parties.items()}
    assert 2 in zero.ledger.expelled or earned[2] < min(earned[0], earned[1])


# -- tokens --------------------------------------------------------------------------------------
def test_tokens_conserved_every_round(mislabel, zero, moving) -> None:
    for result in (mislabel[0], zero, moving[0]):
        total = initial_sum(result)
        assert total == 3 * int(NUM_PARAMS * 0.1 * 2)  # 3 * floor(134150 * 0.1 * 2) = 80490
        for history in tokens_of(result):
            assert len(history) == 2
            assert all(sum(t) == total for t in history)
        assert int(result.ledger.tokens.sum()) == total
        assert result.summary()["tokens_total"] == total


def test_tokens_change_hands_and_every_party_agrees(moving) -> None:
    result, _ = moving
    initial = fd.initial_tokens(NUM_PARAMS, [0.1] * 3).tolist()
    histories = tokens_of(result)
    assert all(h == histories[0] for h in histories)  # every party keeps the same ledger
    assert any(t != initial for t in histories[0])  # not a run where nobody trades
    for i, p in result.parties.items():
        assert int(result.ledger.tokens[i]) == initial[i] - p.tokens_spent + p.tokens_earned
    spent = sum(p.tokens_spent for p in result.parties.values())
    assert spent == sum(p.tokens_earned for p in result.parties.values())


# -- per-party files -----------------------------------------------------------------------------
def test_each_party_writes_its_own_file(mislabel, moving) -> None:
    for result, out in (mislabel, moving):
        for i, party in result.parties.items():
            doc = json.loads((out / "parties" / f"party-{i}.json").read_text())
            assert doc["index"] == i
            assert doc["parameters_sha256"] == party.parameters_sha256
            assert doc["tokens_earned"] == party.tokens_earned
            assert len(doc["history"]) == result.settings.rounds
        assert sorted(p.name for p in (out / "parties").iterdir()) == [
            f"party-{i}.json" for i in range(3)
        ]


# -- backends ------------------------------------------------------------------------------------
def untimed(history: list[dict]) -> list[dict]:
    """A party's history without its wall-clock seconds (which no two runs share)."""
    return [{k: v for k, v in h.items() if k != "seconds"} for h in history]


def test_in_process_and_processes_compute_the_same_numbers(tmp_path: Path) -> None:
    settings = {**TINY, "parties": 2, "samples": 200, "benchmark": 8, "timeout": 60}
    a = run_fdpddl(settings, backend="in-process")
    b = run_fdpddl(settings, backend="processes", out=tmp_path)
    assert b.exit_codes == {0: 0, 1: 0} and a.exit_codes == {}
    assert sorted(a.parties) == sorted(b.parties) == [0, 1]
    for i in (0, 1):
        pa, pb = a.parties[i], b.parties[i]
        assert pa.parameters_sha256 == pb.parameters_sha256
        assert untimed(pa.history) == untimed(pb.history)
        assert pa.reports == pb.reports
        assert pb.wire_bytes is not None and pb.wire_bytes > 0 and pa.wire_bytes is None
        assert (tmp_path / "parties" / f"party-{i}.json").exists()  # written by its own process
    assert a.ledger.credibility.tolist() == b.ledger.credibility.tolist()
    assert a.ledger.tokens.tolist() == b.ledger.tokens.tolist()


CRASH = {**TINY, "rounds": 1, "behaviours": {1: "crash"}, "crash_round": 1, "timeout": 10}


@pytest.fixture(scope="module")
def crashed_in_process() -> CollabResult:
    return run_fdpddl(CRASH)


def test_a_crashing_party_in_process_leaves_the_others_finishing(crashed_in_process) -> None:
    result = crashed_in_process
    assert sorted(result.parties) == [0, 2]
    assert result.ledger.dropped == {1: "round 1"} and result.ledger.expelled == {}
    assert result.ledger.active.tolist() == [True, False, True]
    assert {r["party"]: r["fate"] for r in result.rows()}[1] == "dropped (round 1)"
    assert int(result.ledger.tokens.sum()) == 3 * int(NUM_PARAMS * 0.1 * 2)
    for p in result.parties.values():
        assert p.reports.keys() == {0, 2}  # the report phase has only the survivors


@pytest.mark.slow
def test_a_party_process_that_dies_leaves_the_others_finishing(
    tmp_path: Path, crashed_in_process
) -> None:
    result = run_fdpddl(CRASH, backend="processes", out=tmp_path)
    assert result.exit_codes[0] == 0 and result.exit_codes[2] == 0
    assert result.exit_codes[1] != 0
    assert sorted(result.parties) == [0, 2]
    assert result.ledger.dropped == {1: "round 1"}
    files = sorted(p.name for p in (tmp_path / "parties").iterdir())
    assert files == ["party-0.json", "party-2.json"]
    # the survivors compute what they compute in one process
    for i in (0, 2):
        ref = crashed_in_process.parties[i]
        assert result.parties[i].parameters_sha256 == ref.parameters_sha256
        assert untimed(result.parties[i].history) == untimed(ref.history)


def test_gloo_collectives_compute_the_same_numbers(tmp_path: Path) -> None:
    """The processes backend with exchange="collective" (all_gather over gloo) gives the
    in-process numbers, like the store."""
    settings = {**TINY, "parties": 2, "samples": 200, "benchmark": 8, "timeout": 60}
    a = run_fdpddl(settings, backend="in-process")
    b = run_fdpddl({**settings, "exchange": "collective"}, backend="processes")
    assert b.exit_codes == {0: 0, 1: 0}
    for i in (0, 1):
        assert a.parties[i].parameters_sha256 == b.parties[i].parameters_sha256
        assert untimed(a.parties[i].history) == untimed(b.parties[i].history)
        assert a.parties[i].reports == b.parties[i].reports


def test_run_fdpddl_refuses_bad_input() -> None:
    with pytest.raises(InputError, match="unknown backend"):
        run_fdpddl(TINY, backend="gloo")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="samples=100000"):
        run_fdpddl({**TINY, "samples": 100_000})
    with pytest.raises(InputError, match="'bogus'"):
        run_fdpddl({**TINY, "bogus": 1})
    assert CollabSettings.parse(TINY).parties == 3


# -- the stored run and the command line ---------------------------------------------------------
CLI_TINY = [
    "--samples", "200", "--rounds", "1", "--pretrain-epochs", "1", "--local-epochs", "1",
    "--batch-size", "32", "--dpgan-epochs", "1", "--benchmark", "8", "--device", "cpu",
]  # fmt: skip


def test_cli_collab_run_stores_a_run(_isolated_home: Path) -> None:
    from trustlab.cli import app

    out = CliRunner().invoke(app, ["collab", "run", "--parties", "2", *CLI_TINY, "--seed", "1"])
    assert out.exit_code == 0, out.output
    doc = json.loads(out.output.strip().splitlines()[-1])
    (run,) = RunStore(_isolated_home).list()
    assert run.kind == "collab" and run.status == "finished" and doc["run"] == run.id
    assert doc["backend"] == "in-process" and doc["tokens_total"] == 2 * int(NUM_PARAMS * 0.1)
    names = {a["name"] for a in run.artifacts()}
    assert {"parties.json", "rounds.png"} <= names
    assert (run.dir / "rounds.png").read_bytes()[:4] == b"\x89PNG"
    rows = json.loads((run.dir / "parties.json").read_text())
    assert [r["party"] for r in rows] == [0, 1] and rows[0]["samples"] == 100
    for i in (0, 1):
        party = json.loads((run.dir / "parties" / f"party-{i}.json").read_text())
        assert party["index"] == i
        assert run.summary[f"party{i}_final_accuracy"] == party["final_accuracy"]
    assert len(run.metrics()) == 1  # one row per round
    assert run.config["parties"] == 2 and run.config["backend"] == "in-process"
    assert run.config["dpgan"]["epsilon"] == 4.0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--setting", "nope"], "setting"),
        (["--parties", "3", "--party-behaviour", "9:zero"], "party 9"),
        (["--party-behaviour", "x"], "PARTY:BEHAVIOUR"),
        (["--party-behaviour", "1:lazy"], "unknown behaviour"),
        (["--backend", "gloo"], "unknown backend"),
        (["--sharing", "0"], "sharing"),
        (["--dataset", "moving-shapes"], "takes images"),
        (["--samples", "5"], "fewer than 10"),
        (["--model", "c3d-small"], "video model"),
        (["--backend", "torchrun"], "start the command under torchrun"),
        (["--party-behaviour", "1:zero", "--party-behaviour", "1:random"], "twice"),
    ],
)
def test_cli_collab_bad_input_exits_2_and_stores_nothing(
    _isolated_home: Path, args: list[str], message: str
) -> None:
    from trustlab.cli import app

    out = CliRunner().invoke(app, ["collab", "run", *CLI_TINY, *args])
    assert out.exit_code == 2, out.output
    errors = [line for line in out.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], out.output
    assert not _isolated_home.exists() or RunStore(_isolated_home).list() == []


# -- torchrun ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def torchrun_home(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    home = tmp_path_factory.mktemp("torchrun") / "store"
    env = {**os.environ, "TRUSTLAB_HOME": str(home), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "trustlab", "collab", "run", "--parties", "2", *CLI_TINY, "--timeout", "120"],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return home, proc.stdout


@pytest.mark.slow
def test_torchrun_stores_one_run_with_both_parties(torchrun_home) -> None:
    home, stdout = torchrun_home
    (run,) = RunStore(home).list()  # only rank 0 records the run
    assert run.kind == "collab" and run.status == "finished"
    assert run.config["backend"] == "torchrun"
    assert json.loads(stdout.strip().splitlines()[-1])["run"] == run.id
    rows = json.loads((run.dir / "parties.json").read_text())
    assert [r["party"] for r in rows] == [0, 1]
    assert all(r["fate"] == "collaborating" for r in rows)
    assert (run.dir / "parties" / "party-0.json").exists()


@pytest.mark.slow
def test_torchrun_each_party_writes_its_own_file(torchrun_home) -> None:
    home, _ = torchrun_home
    (run,) = RunStore(home).list()
    assert (run.dir / "parties" / "party-1.json").exists()


@pytest.mark.slow
def test_torchrun_with_the_wrong_process_count_stores_nothing(tmp_path: Path) -> None:
    home = tmp_path / "store"
    env = {**os.environ, "TRUSTLAB_HOME": str(home), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "trustlab", "collab", "run", "--parties", "3", *CLI_TINY],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode != 0
    assert "torchrun started 2 processes for 3 parties" in proc.stdout + proc.stderr
    assert not home.exists() or RunStore(home).list() == []


def test_cli_defaults_are_the_settings_defaults() -> None:
    """`trustlab collab run` states the library's defaults, flag by flag."""
    import inspect

    from trustlab.cli.collab import collab_run_cmd
    from trustlab.collab.settings import CollabSettings

    flags = {k: p.default for k, p in inspect.signature(collab_run_cmd).parameters.items()}
    s = CollabSettings()
    for key in ("parties", "setting", "dataset", "model", "samples", "sharing", "rounds",
                "pretrain_epochs", "local_epochs", "batch_size", "lr", "update_clip",
                "benchmark", "crash_round", "timeout", "ties", "exchange"):  # fmt: skip
        assert flags[key] == getattr(s, key), key
    assert flags["noise_multiplier"] == s.dp.noise_multiplier
    assert flags["max_grad_norm"] == s.dp.max_grad_norm
    assert flags["dpgan_epsilon"] == s.dpgan.epsilon
    assert flags["dpgan_epochs"] == s.dpgan.epochs
    assert flags["dpgan_batch_size"] == s.dpgan.batch_size


def test_non_image_data_and_two_parties() -> None:
    with pytest.raises(InputError):  # video clips (N, C, T, H, W): no DPGAN for them
        check_run(CollabSettings.parse({"dataset": "moving-shapes"}), 0)
    with pytest.warns(UserWarning, match="2 parties"):
        check_run(CollabSettings.parse({**TINY, "parties": 2}), 0)
