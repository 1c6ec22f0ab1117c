"""An FDPDDL run stored in the results store: what ``trustlab collab run`` calls.

The run (kind ``collab``) holds the settings, one metrics row per round (every party's accuracy
and mean received credibility, the tokens), every party's own file ``parties/party-<i>.json``
(written by the party itself), the table of parties (``parties.json``) and a PNG of accuracy and
credibility over the rounds (``rounds.png``).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from trustlab.collab.runner import (
    BACKENDS,
    CollabResult,
    run_fdpddl,
    run_torchrun_party,
    unknown_backend,
)
from trustlab.collab.settings import CollabSettings, check_run, load_data
from trustlab.errors import InputError
from trustlab.results import Run, RunStore, recording_outcome
from trustlab.utils.device import resolve_device
from trustlab.utils.io import write_json_atomic
from trustlab.utils.validate import check_int

__all__ = ["KIND", "record_collab", "run_collab", "under_torchrun"]

#: the kind of the runs it records
KIND = "collab"


def under_torchrun() -> bool:
    """Whether this process is one of several started by ``torchrun``."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ


def record_collab(run: Run, result: CollabResult) -> None:
    """Write a finished :class:`~trustlab.collab.runner.CollabResult` into ``run``."""
    acc = result.accuracy_history()
    cred = result.credibility_history()
    n = result.settings.parties
    for t in range(result.settings.rounds):
        row: dict[str, float] = {}
        for i in range(n):
            if t < len(acc.get(i, [])):
                row[f"party{i}_accuracy"] = acc[i][t]
            others = [float(cred[t, k, i]) for k in range(n) if k != i]
            finite = [v for v in others if not math.isnan(v)]
            if finite:
                row[f"party{i}_credibility"] = sum(finite) / len(finite)
        if row:
            run.log_metrics(t + 1, row)
    rows = result.rows()
    write_json_atomic(run.artifact_path("parties.json"), rows)
    run.add_artifact("parties.json")
    if result.settings.rounds > 0:
        result.plot(run.artifact_path("rounds.png"))
        run.add_artifact("rounds.png", kind="image")
    summary: dict[str, Any] = dict(result.summary())
    for r in rows:
        i = r["party"]
        for key in ("final_accuracy", "pretrain_accuracy", "epsilon", "tokens"):
            summary[f"party{i}_{key}"] = r[key]
    run.finish(summary)


def run_collab(
    settings: CollabSettings | dict[str, Any],
    *,
    backend: str = "in-process",
    store: RunStore | None = None,
    device: str = "auto",
    seed: int = 0,
    name: str | None = None,
    progress: bool = False,
) -> tuple[Run | None, CollabResult | None]:
    """Run FDPDDL and store it as a run of kind ``collab``.

    Under ``torchrun`` (``WORLD_SIZE > 1``) this process runs its own party; rank 0 records the
    run and returns it, the other ranks return ``(None, None)``.

    Args:
        settings: :class:`~trustlab.collab.settings.CollabSettings` or a dict of its fields.
        backend: ``"in-process"`` or ``"processes"`` (ignored under torchrun).
        store: the results store (default ``$TRUSTLAB_HOME``).
        device: ``auto`` (default: CUDA when available), ``cpu`` or ``cuda``.
        seed: seeds the whole run.
        name: the run's name (default ``fdpddl-<setting>``).
        progress: a progress bar over the protocol's phases (in-process, on a terminal only).

    Example:
        >>> run, result = run_collab({"parties": 3, "rounds": 2})  # doctest: +SKIP
        >>> run.summary["mean_final_accuracy"] > 0.5  # doctest: +SKIP
        True
    """
    s = settings if isinstance(settings, CollabSettings) else CollabSettings.parse(settings)
    seed = check_int("seed", seed, 0, 2**63 - 1)
    if backend not in BACKENDS:
        raise InputError(unknown_backend(backend))
    dev = resolve_device(device)
    data = load_data(s)  # once for the checks and every party of this process
    check_run(s, seed, data)  # a missing dataset, non-image data, a bad split: before the run
    torchrun = under_torchrun()
    kv = None
    if torchrun:  # rank 0 records the run and tells the others where it is
        from trustlab.collab.backends import job_prefix, store_from_env

        kv = store_from_env(s.timeout)
        if kv[2] != s.parties:
            raise InputError(
                f"torchrun started {kv[2]} processes for {s.parties} parties; pass "
                "--nproc_per_node (times --nnodes) = --parties."
            )
        if kv[1] != 0:
            try:
                where = kv[0].get(f"{job_prefix()}/run-dir").decode()  # waits up to the timeout
            except Exception as exc:  # noqa: BLE001 - the store's timeout error
                raise InputError(
                    f"rank 0 did not create the run within {s.timeout:g} s ({exc}); see rank "
                    "0's error."
                ) from None
            run_torchrun_party(s, seed, dev, out=where, kv=kv, data=data)
            return None, None
    store = store or RunStore()
    config = {**s.model_dump(mode="json"), "backend": "torchrun" if torchrun else backend}
    run = store.create_run(KIND, name or f"fdpddl-{s.setting}", config, seed=seed)
    if kv is not None:
        from trustlab.collab.backends import job_prefix

        kv[0].set(f"{job_prefix()}/run-dir", str(run.dir))
    with recording_outcome(run):
        if kv is not None:
            result = run_torchrun_party(s, seed, dev, out=run.dir, kv=kv, data=data)
        else:
            result = run_fdpddl(
                s, seed, backend, dev, out=run.dir, progress=progress, data=data  # type: ignore[arg-type]
            )  # fmt: skip
        assert result is not None
        if not result.parties:
            raise InputError("no party finished the run (see each party's exit code).")
        record_collab(run, result)
    return run, result


def party_file(run: Run, index: int) -> Path:
    """Where party ``index`` wrote its own metrics in ``run``."""
    return Path(run.dir) / "parties" / f"party-{index}.json"
