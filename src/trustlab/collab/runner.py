"""Run FDPDDL and read the outcome: :func:`run_fdpddl` and :class:`CollabResult`.

``run_fdpddl(settings, backend="in-process")`` runs every party in this process;
``backend="processes"`` starts one process per party on this machine (exchanging releases over
torch.distributed's store); :func:`run_torchrun_party` is what each process of a ``torchrun`` job
runs. The result gathers every party's report (each party ends with everyone's numbers), the
agreed ledger (credibility, tokens, expulsions, drops) and the per-round histories.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from trustlab.collab.protocol import Ledger, PartyResult
from trustlab.collab.settings import CollabSettings, check_run, load_data
from trustlab.data.datasets import ArrayDataset
from trustlab.errors import InputError

BACKENDS = ("in-process", "processes")


def unknown_backend(backend: str) -> str:
    """The message for a backend that is not one of :data:`BACKENDS`."""
    if backend == "torchrun":
        return (
            "torchrun is not a --backend: start the command under torchrun instead "
            "(torchrun --nproc_per_node <parties> -m trustlab collab run --parties <parties> ...)."
        )
    return f"unknown backend {backend!r}; use in-process or processes (or start under torchrun)."


@dataclass
class CollabResult:
    """The outcome of one FDPDDL run.

    Attributes:
        settings: the run's :class:`~trustlab.collab.settings.CollabSettings`.
        seed: its seed.
        backend: ``"in-process"``, ``"processes"`` or ``"torchrun"``.
        parties: the results of the parties that finished, by index.
        exit_codes: each party process's exit code (process backends; non-zero: it died).
        shard_sizes: training samples per party.
        seconds: wall-clock time.

    Example::

        result = run_fdpddl({"parties": 4, "setting": "imbalanced-size"})
        result.rows()            # one row per party: accuracies, epsilons, tokens, fate
        result.ledger.expelled   # {party: the phase it was expelled in}
        result.plot("rounds.png")
    """

    settings: CollabSettings
    seed: int
    backend: str
    parties: dict[int, PartyResult]
    shard_sizes: list[int]
    seconds: float
    exit_codes: dict[int, int] = field(default_factory=dict)

    @property
    def ledger(self) -> Ledger:
        """The ledger every finished party agreed on (the lowest index's copy)."""
        if not self.parties:
            raise InputError("no party finished the run; nothing to report.")
        return self.parties[min(self.parties)].ledger

    def reports(self) -> dict[int, dict[str, Any]]:
        """Every party's final report (accuracies, epsilons, tokens), by index."""
        return self.parties[min(self.parties)].reports if self.parties else {}

    def credibility_history(self) -> torch.Tensor:
        """``(rounds, n, n)``: row ``i`` from party ``i``'s own history (NaN where it stopped)."""
        n, r = self.settings.parties, self.settings.rounds
        out = torch.full((r, n, n), math.nan, dtype=torch.float64)
        for i, p in self.parties.items():
            for t, h in enumerate(p.history):
                out[t, i] = torch.tensor(h["credibility"], dtype=torch.float64)
        return out

    def rows(self) -> list[dict[str, Any]]:
        """One row per party: shard, behaviour, accuracies, epsilons, tokens, fate."""
        reps, led = self.reports(), self.ledger
        out = []
        for i in range(self.settings.parties):
            rep = reps.get(i, {})
            fate = "collaborating"
            if i in led.expelled:
                fate = f"expelled ({led.expelled[i]})"
            if i in led.dropped:
                fate = f"dropped ({led.dropped[i]})"
            out.append(
                {
                    "party": i,
                    "samples": self.shard_sizes[i],
                    "behaviour": self.settings.behaviours.get(i, "honest"),
                    "pretrain_accuracy": rep.get("standalone_pretrain_accuracy", math.nan),
                    "final_accuracy": rep.get("final_accuracy", math.nan),
                    "dpsgd_epsilon": rep.get("dpsgd_epsilon", math.nan),
                    "dpgan_epsilon": rep.get("dpgan_epsilon", math.nan),
                    "epsilon": rep.get("dpsgd_epsilon", math.nan)
                    + rep.get("dpgan_epsilon", math.nan),
                    "tokens_earned": rep.get("tokens_earned", math.nan),
                    "tokens_spent": rep.get("tokens_spent", math.nan),
                    "tokens": int(led.tokens[i]) if led.tokens is not None else math.nan,
                    "fate": fate,
                }
            )
        return out

    def accuracy_history(self) -> dict[int, list[float]]:
        """Each party's test accuracy after every round (from its report)."""
        return {i: list(r.get("accuracy", [])) for i, r in self.reports().items()}

    def plot(self, path: str | Path) -> Path:
        """A PNG of every party's accuracy and mean received credibility over the rounds."""
        from trustlab.results.plots import rounds_png

        cred = self.credibility_history()
        n = self.settings.parties
        off = ~torch.eye(n, dtype=torch.bool)
        received = {}
        for j in range(n):
            col = cred[:, :, j][:, off[:, j]]  # (rounds, n-1): what the others give j
            received[f"party {j}"] = torch.nanmean(col, dim=1).tolist()
        acc = {f"party {i}": a for i, a in self.accuracy_history().items()}
        return rounds_png(
            path,
            {"test accuracy": acc, "credibility received (mean of the others)": received},
            title=f"FDPDDL, {self.settings.setting}, {n} parties",
        )

    def summary(self) -> dict[str, Any]:
        rows = self.rows()
        finals = [r["final_accuracy"] for r in rows if not math.isnan(r["final_accuracy"])]
        return {
            "setting": self.settings.setting,
            "parties": self.settings.parties,
            "backend": self.backend,
            "mean_final_accuracy": sum(finals) / len(finals) if finals else math.nan,
            "expelled": sorted(self.ledger.expelled),
            "dropped": {str(k): v for k, v in sorted(self.ledger.dropped.items())},
            "tokens_total": int(self.ledger.tokens.sum()) if self.ledger.tokens is not None else 0,
            "seconds": self.seconds,
        }


def run_fdpddl(
    settings: CollabSettings | dict[str, Any],
    seed: int = 0,
    backend: Literal["in-process", "processes"] = "in-process",
    device: torch.device | str = "cpu",
    out: str | Path | None = None,
    progress: bool = False,
    data: tuple[ArrayDataset, ArrayDataset] | None = None,
) -> CollabResult:
    """Run FDPDDL with ``settings`` (a :class:`CollabSettings` or a dict of its fields).

    Args:
        settings: the run's settings.
        seed: seeds the split, the initialisation, every DP-SGD and DPGAN draw.
        backend: ``"in-process"`` (default) or ``"processes"`` (one process per party).
        device: where the parties compute.
        out: a folder where every party writes ``parties/party-<i>.json``; default None.
        progress: a progress bar over the protocol's phases (in-process, on a terminal only).
        data: the settings' (train, test) splits when the caller already loaded them (default:
            loaded here).

    Example:
        >>> res = run_fdpddl({"parties": 3, "rounds": 1, "pretrain_epochs": 1,
        ...                   "local_epochs": 1, "samples": 300, "batch_size": 32,
        ...                   "dpgan": {"epochs": 1, "epsilon": 4.0}})  # doctest: +SKIP
        >>> len(res.rows())  # doctest: +SKIP
        3
    """
    from trustlab.collab.backends import run_in_process, run_processes

    s = settings if isinstance(settings, CollabSettings) else CollabSettings.parse(settings)
    if backend not in BACKENDS:
        raise InputError(unknown_backend(backend))
    data = data if data is not None else load_data(s)
    sizes = check_run(s, seed, data)  # the data, its images and the split, before any work
    start = time.perf_counter()
    codes: dict[int, int] = {}
    if backend == "in-process":
        from trustlab.utils.progress import progress_bar

        phases = 2 + 2 * s.rounds + 1  # stage 1's two, two per round, the report
        with progress_bar("FDPDDL phases", phases, progress, eta=True) as bar:
            parties = run_in_process(
                s, seed, device, out, on_phase=lambda _: bar.advance(), data=data
            )
    else:
        parties, codes = run_processes(s, seed, device, out)
    return CollabResult(s, seed, backend, parties, sizes, time.perf_counter() - start, codes)


def run_torchrun_party(
    settings: CollabSettings | dict[str, Any],
    seed: int = 0,
    device: torch.device | str = "cpu",
    out: str | Path | None = None,
    kv: tuple[Any, int, int] | None = None,
    data: tuple[ArrayDataset, ArrayDataset] | None = None,
) -> CollabResult | None:
    """This process's party of a ``torchrun`` job (``--nproc_per_node`` = parties). Returns the
    run's result on rank 0 (every party's result that arrived), None on the other ranks.

    ``kv``: ``(store, rank, world_size)`` from :func:`~trustlab.collab.backends.store_from_env`
    when the caller already joined the job's store; ``data`` the settings' splits when the
    caller already loaded them.
    """
    from trustlab.collab.backends import collect_results, run_party, store_from_env

    s = settings if isinstance(settings, CollabSettings) else CollabSettings.parse(settings)
    store, rank, world = kv if kv is not None else store_from_env(s.timeout)
    if world != s.parties:
        raise InputError(
            f"torchrun started {world} processes for {s.parties} parties; pass "
            f"--nproc_per_node (times --nnodes) = --parties."
        )
    if isinstance(device, str) and device.startswith("cuda") and torch.cuda.is_available():
        import os

        device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    start = time.perf_counter()
    data = data if data is not None else load_data(s)
    result = run_party(s, rank, store, seed, device, out, data)
    if rank != 0 or result is None:
        return None
    parties = {0: result, **collect_results(store, range(1, world), s.timeout)}
    return CollabResult(
        s, seed, "torchrun", parties, check_run(s, seed, data), time.perf_counter() - start
    )


__all__ = ["BACKENDS", "CollabResult", "run_fdpddl", "run_torchrun_party", "unknown_backend"]
