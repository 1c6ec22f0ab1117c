"""Collaborative learning: the ``collab`` group (``collab run``)."""

from __future__ import annotations

import json
import math
from typing import Annotated

import typer

from trustlab.cli.common import NOT_APPLICABLE as NA
from trustlab.cli.common import (
    DataRootOpt,
    DeviceOpt,
    QuietOpt,
    SeedOpt,
    app,
    command,
    fmt,
    stdout,
    warnings_shown,
)
from trustlab.errors import InputError
from trustlab.utils.progress import show_progress

AREA = "Privacy"  # FDPDDL is differentially private collaborative learning

collab_app = typer.Typer(
    help="Fair and differentially private decentralised learning (FDPDDL, Lyu et al. TDSC "
    "2020): parties with DP-SGD, DPGAN benchmarks, credibility and tokens.",
    no_args_is_help=True,
)
app.add_typer(collab_app, name="collab", rich_help_panel=AREA)


def _behaviours(values: list[str]) -> dict[int, str]:
    out: dict[int, str] = {}
    for v in values:
        party, sep, behaviour = v.partition(":")
        if not sep or not party.strip().isdigit():
            raise InputError(
                f"--party-behaviour {v!r}: write PARTY:BEHAVIOUR, e.g. 3:zero (a free-rider) or "
                "2:crash."
            )
        if int(party) in out:
            raise InputError(
                f"--party-behaviour names party {int(party)} twice ({out[int(party)]} and "
                f"{behaviour.strip()}); give each party one behaviour."
            )
        out[int(party)] = behaviour.strip()
    return out


def _print_parties(rows: list[dict], title: str) -> None:
    from rich.table import Table

    table = Table(title=title)
    for key in rows[0]:
        table.add_column(key.replace("_", " "), justify="left" if key in TEXT else "right")
    for r in rows:
        table.add_row(*(NA if _missing(v) else fmt(v) for v in r.values()))
    stdout().print(table)


TEXT = ("behaviour", "fate")


def _missing(v: object) -> bool:
    return isinstance(v, float) and math.isnan(v)


@command("run", parent=collab_app)
def collab_run_cmd(
    parties: Annotated[int, typer.Option(help="number of parties.")] = 4,
    setting: Annotated[
        str, typer.Option(help="balanced, imbalanced-size or imbalanced-class.")
    ] = "balanced",
    dataset: Annotated[str, typer.Option(help="an image dataset.")] = "digits",
    data_root: DataRootOpt = None,
    model: Annotated[str, typer.Option(help="the classifier every party trains.")] = "mlp",
    samples: Annotated[
        int | None, typer.Option(help="training samples dealt out in all (default: all).")
    ] = None,
    sharing: Annotated[
        float, typer.Option(help="sharing level: the fraction of its update a party releases.")
    ] = 0.1,
    rounds: Annotated[int, typer.Option(help="rounds of stage 2.")] = 100,
    pretrain_epochs: Annotated[
        int, typer.Option(help="local epochs before collaborating (the standalone model).")
    ] = 10,
    local_epochs: Annotated[int, typer.Option(help="local epochs per round.")] = 5,
    batch_size: Annotated[int, typer.Option(help="expected DP-SGD batch size.")] = 10,
    lr: Annotated[float, typer.Option(help="SGD learning rate.")] = 0.15,
    noise_multiplier: Annotated[
        float, typer.Option(help="DP-SGD noise std / max-grad-norm of the local training.")
    ] = 1.0,
    max_grad_norm: Annotated[float, typer.Option(help="DP-SGD per-sample clipping norm.")] = 1.0,
    update_clip: Annotated[
        float | None,
        typer.Option(help="bound on every coordinate of a released update (0: no bound)."),
    ] = 0.001,
    dpgan_epsilon: Annotated[float, typer.Option(help="each party's DPGAN epsilon.")] = 4.0,
    dpgan_epochs: Annotated[int, typer.Option(help="each party's DPGAN epochs.")] = 60,
    dpgan_batch_size: Annotated[int, typer.Option(help="each party's DPGAN batch size.")] = 32,
    ties: Annotated[
        str,
        typer.Option(
            help="a tied benchmark vote: skip (counts for nobody) or highest (the authors' code)."
        ),
    ] = "skip",
    benchmark: Annotated[
        int | None,
        typer.Option(help="samples a party publishes per benchmark (default: N_i * sharing)."),
    ] = None,
    party_behaviour: Annotated[
        list[str] | None,
        typer.Option(
            help="PARTY:BEHAVIOUR (honest, zero, random, mislabel, crash), repeatable: "
            "free-riders and faulty parties."
        ),
    ] = None,
    crash_round: Annotated[int, typer.Option(help="the round a crash party stops at.")] = 1,
    timeout: Annotated[
        float, typer.Option(help="seconds to wait for a party's release before dropping it.")
    ] = 300.0,
    backend: Annotated[
        str,
        typer.Option(
            help="in-process or processes (one per party); under torchrun each process is one "
            "party, whatever this says."
        ),
    ] = "in-process",
    exchange: Annotated[
        str,
        typer.Option(
            help="how processes move releases: store (survives a dying party) or collective "
            "(all_gather over gloo / nccl)."
        ),
    ] = "store",
    device: DeviceOpt = "auto",
    seed: SeedOpt = 0,
    quiet: QuietOpt = False,
) -> None:
    """Run FDPDDL; stores a collab run (per-party files, a table, a PNG) and prints the table.

    Stage 1: every party pre-trains with DP-SGD, trains a DPGAN and publishes samples that the
    others label; a majority vote gives each party's credibility in the others' eyes, and tokens.
    Stage 2: each round, parties release the largest coordinates of their DP-SGD update and
    download from credible parties in proportion to credibility, paying tokens. Start it under
    torchrun (`torchrun --nproc_per_node 4 -m trustlab collab run --parties 4 ...`) for one
    process per party.
    """
    from trustlab.workflows.collab import run_collab

    settings = {
        "parties": parties, "setting": setting, "dataset": dataset, "data_root": data_root,
        "model": model, "samples": samples, "sharing": sharing, "rounds": rounds,
        "pretrain_epochs": pretrain_epochs, "local_epochs": local_epochs,
        "batch_size": batch_size, "lr": lr,
        "dp": {"noise_multiplier": noise_multiplier, "max_grad_norm": max_grad_norm},
        "update_clip": update_clip or None,
        "dpgan": {"epochs": dpgan_epochs, "batch_size": dpgan_batch_size, "epsilon": dpgan_epsilon},
        "ties": ties,
        "benchmark": benchmark, "behaviours": _behaviours(party_behaviour or []),
        "crash_round": crash_round, "timeout": timeout, "exchange": exchange,
    }  # fmt: skip
    with warnings_shown():
        run, result = run_collab(
            settings, backend=backend, device=device, seed=seed, progress=show_progress(not quiet)
        )
    if run is None or result is None:
        return  # a torchrun rank other than 0: rank 0 prints
    _print_parties(result.rows(), f"FDPDDL, {setting}: run {run.id}")
    typer.echo(json.dumps({"run": run.id, "dir": str(run.dir), **result.summary()}))
