"""Where the parties run: all in one process, or one process per party over torch.distributed.

Both backends drive the same :func:`~trustlab.collab.protocol.party_protocol` generators, so for
one seed they compute the same numbers (every party computes with one thread in both, as
floating-point sums depend on the thread count).

- :func:`run_in_process`: every party in this process, advanced phase by phase in lock step.
  A party whose behaviour is ``"crash"`` stops where its process would die; the others continue.
- :func:`run_party`: this process is one party of a multi-process run. Releases travel through
  a key-value store of torch.distributed (``torch.distributed.TCPStore``), serialised with
  safetensors (never pickle): a party writes its release once under ``(phase, party)`` and reads
  the others' releases, waiting at most ``timeout`` seconds for each phase. A store, unlike a
  collective (gloo, nccl), lets the others go on when one party dies: whoever is missing when the
  phase's time is up is recorded as dropped. Under ``torchrun`` the store is the one torchrun's
  agent hosts for the job (``MASTER_ADDR:MASTER_PORT``), so parties on several machines meet
  through torchrun's rendezvous flags; elsewhere rank 0 hosts it.
- :func:`run_processes`: starts one process per party on this machine (the store hosted by the
  launching process, so any party may die) and collects their results.
- :class:`CollectiveExchange` (``settings.exchange="collective"``): the same releases through
  ``all_gather`` over a gloo (CPU) or nccl (CUDA) process group built on the job's store; a
  party that dies stops the others instead of being dropped.
"""

from __future__ import annotations

import datetime
import json
import multiprocessing as mp
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from trustlab.collab.parties import PartyCrashed
from trustlab.collab.protocol import Inbox, PartyResult, Release, party_protocol
from trustlab.collab.settings import CollabSettings, load_data, make_party
from trustlab.data.datasets import ArrayDataset
from trustlab.errors import InputError
from trustlab.utils.device import single_threaded
from trustlab.utils.io import write_json_atomic

PREFIX = "trustlab-collab"


def encode(release: Release) -> bytes:
    """A release as safetensors bytes (contiguous CPU tensors)."""
    from safetensors.torch import save

    return save({k: v.detach().cpu().contiguous() for k, v in release.items()})


def decode(data: bytes) -> Release:
    from safetensors.torch import load

    return load(data)


def write_party_file(out: str | Path | None, result: PartyResult) -> None:
    """Party ``i`` writes its own metrics: ``out/parties/party-i.json``."""
    if out is None:
        return
    path = Path(out) / "parties" / f"party-{result.index}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, result.to_dict())


def run_in_process(
    settings: CollabSettings,
    seed: int = 0,
    device: torch.device | str = "cpu",
    out: str | Path | None = None,
    on_phase: Callable[[int], None] | None = None,
    data: tuple[ArrayDataset, ArrayDataset] | None = None,
) -> dict[int, PartyResult]:
    """All parties in this process; returns every party's result that finished. ``data``:
    the settings' (train, test) splits when the caller already loaded them."""
    with single_threaded(device):
        data = data if data is not None else load_data(settings)
        parties = [make_party(settings, i, seed, device, data) for i in range(settings.parties)]
        num_classes = data[0].num_classes
        gens = {p.index: party_protocol(p, settings, num_classes, seed) for p in parties}
        results: dict[int, PartyResult] = {}
        outbox: dict[int, Release] = {}

        def advance(i: int, inbox: Inbox | None) -> None:
            try:
                outbox[i] = next(gens[i]) if inbox is None else gens[i].send(inbox)
            except StopIteration as stop:
                results[i] = stop.value
            except PartyCrashed:
                pass  # this party's process would have died here

        try:
            for i in list(gens):
                advance(i, None)
            phase = 0
            while outbox:
                inbox = dict(sorted(outbox.items()))
                outbox = {}
                for i in inbox:
                    advance(i, inbox)
                phase += 1
                if on_phase is not None:
                    on_phase(phase)
        finally:
            for p in parties:
                p.close()
    for r in results.values():
        write_party_file(out, r)
    return results


class StoreExchange:
    """Releases through a torch.distributed store: one key per ``(phase, party)``.

    Args:
        store: a ``torch.distributed.Store`` every party reaches.
        rank: this party.
        world_size: number of parties.
        timeout: seconds to wait for the others in each phase.
        prefix: namespace of this run's keys; default ``"trustlab-collab"``.

    Example::

        store = torch.distributed.TCPStore("10.0.0.1", 29500, is_master=False)
        inbox = StoreExchange(store, rank=1, world_size=4, timeout=300).exchange(0, release)
    """

    def __init__(
        self, store: Any, rank: int, world_size: int, timeout: float, prefix: str = PREFIX
    ) -> None:
        self.store = store
        self.rank = rank
        self.world_size = world_size
        self.timeout = timeout
        self.prefix = prefix
        self.gone: set[int] = set()
        self.bytes_sent = 0

    def key(self, phase: int, party: int) -> str:
        return f"{self.prefix}/{phase}/{party}"

    def status(self, phase: int, party: int) -> str:
        return f"{self.prefix}/{phase}/{party}/status"

    def decide(self, phase: int, party: int, verdict: str) -> str:
        """The one verdict on ``party`` in ``phase`` that every party reads: the first
        ``compare_set`` on the status key wins, whoever made it (``"posted"`` or
        ``"dropped"``)."""
        return bytes(self.store.compare_set(self.status(phase, party), "", verdict)).decode()

    def exchange(self, phase: int, release: Release) -> Inbox:
        """Post this party's release and gather the others' (``{party: release}``).

        A party is dropped in a phase when another party times out waiting for it and records
        the verdict before it does; the verdict is one key set once (``compare_set``), so every
        party sees the same set of releases. A party that finds itself dropped stops
        (:class:`PartyDropped`)."""
        payload = encode(release)
        self.bytes_sent += len(payload)
        self.store.set(self.key(phase, self.rank), payload)
        if self.decide(phase, self.rank, "posted") != "posted":
            raise PartyDropped(
                f"party {self.rank} was dropped in phase {phase}: its release came after "
                f"another party's {self.timeout:g} s timeout."
            )
        inbox: Inbox = {self.rank: decode(payload)}
        waiting = [j for j in range(self.world_size) if j != self.rank and j not in self.gone]
        deadline = time.monotonic() + self.timeout
        while waiting:
            ready = [j for j in waiting if self.store.check([self.status(phase, j)])]
            late = time.monotonic() > deadline
            for j in list(waiting):
                if j in ready:
                    verdict = bytes(self.store.get(self.status(phase, j))).decode()
                elif late:
                    verdict = self.decide(phase, j, "dropped")
                else:
                    continue
                waiting.remove(j)
                if verdict == "posted":
                    inbox[j] = decode(self.store.get(self.key(phase, j)))
                else:
                    self.gone.add(j)  # dropped: the protocol records the phase
            if waiting:
                time.sleep(0.01)
        return dict(sorted(inbox.items()))


class PartyDropped(RuntimeError):
    """This party's release arrived after the others had counted it as dropped."""


class CollectiveExchange:
    """Releases through torch.distributed collectives: ``all_gather`` over a gloo (CPU) or
    nccl (CUDA) process group built on the job's store.

    Every party sends its encoded release as a byte tensor padded to the largest one (sizes
    gathered first). Faster than the store for many or large releases, but a collective needs
    every party: one that dies makes the others fail (after the group's timeout) instead of
    dropping it. Use :class:`StoreExchange` (the default) where parties may die.

    Args:
        store: the job's ``torch.distributed.Store`` (the process group is built on it).
        rank: this party.
        world_size: number of parties.
        timeout: seconds a collective may wait.
        device: where the byte tensors travel: CPU (gloo) or a CUDA device (nccl).

    Example::

        ex = CollectiveExchange(store, rank=1, world_size=4, timeout=300)
        inbox = ex.exchange(0, release)
    """

    def __init__(
        self,
        store: Any,
        rank: int,
        world_size: int,
        timeout: float,
        device: torch.device | str = "cpu",
    ) -> None:
        import torch.distributed as dist

        self.device = torch.device(device)
        self.backend = "nccl" if self.device.type == "cuda" else "gloo"
        self.rank = rank
        self.world_size = world_size
        self.bytes_sent = 0
        self.prefix = job_prefix()
        if not dist.is_initialized():
            dist.init_process_group(
                self.backend,
                store=dist.PrefixStore(f"{self.prefix}/pg", store),
                rank=rank,
                world_size=world_size,
                timeout=datetime.timedelta(seconds=timeout),
            )

    def exchange(self, phase: int, release: Release) -> Inbox:
        import torch.distributed as dist

        payload = encode(release)
        self.bytes_sent += len(payload)
        size = torch.tensor([len(payload)], dtype=torch.int64, device=self.device)
        sizes = [torch.zeros_like(size) for _ in range(self.world_size)]
        dist.all_gather(sizes, size)
        longest = int(max(int(t) for t in sizes))
        mine = torch.zeros(longest, dtype=torch.uint8, device=self.device)
        mine[: len(payload)] = torch.frombuffer(bytearray(payload), dtype=torch.uint8)
        gathered = [torch.empty_like(mine) for _ in range(self.world_size)]
        dist.all_gather(gathered, mine)
        return {
            j: decode(gathered[j][: int(sizes[j])].cpu().numpy().tobytes())
            for j in range(self.world_size)
        }

    def close(self) -> None:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


def run_party(
    settings: CollabSettings,
    rank: int,
    store: Any,
    seed: int = 0,
    device: torch.device | str = "cpu",
    out: str | Path | None = None,
    data: tuple[ArrayDataset, ArrayDataset] | None = None,
) -> PartyResult | None:
    """Run party ``rank`` in this process; ``None`` if it stopped (a ``"crash"`` party).
    ``data``: the settings' (train, test) splits when the caller already loaded them.
    ``settings.exchange`` picks the store (default) or collectives (gloo / nccl)."""
    exchange: StoreExchange | CollectiveExchange
    if settings.exchange == "collective":
        exchange = CollectiveExchange(store, rank, settings.parties, settings.timeout, device)
    else:
        exchange = StoreExchange(store, rank, settings.parties, settings.timeout, job_prefix())
    with single_threaded(device):
        data = data if data is not None else load_data(settings)
        party = make_party(settings, rank, seed, device, data)
        gen = party_protocol(party, settings, data[0].num_classes, seed)
        phase = 0
        try:
            release = next(gen)
            while True:
                inbox = exchange.exchange(phase, release)
                phase += 1
                release = gen.send(inbox)
        except StopIteration as stop:
            result: PartyResult = stop.value
        except PartyCrashed:
            os._exit(3)  # a party that dies: no clean-up, no goodbye to the others
        finally:
            party.close()
            if isinstance(exchange, CollectiveExchange):
                exchange.close()
    result.wire_bytes = exchange.bytes_sent
    store.set(f"{exchange.prefix}/result/{rank}", json.dumps(result.to_dict()).encode())
    write_party_file(out, result)
    return result


def job_prefix() -> str:
    """The namespace of this job's keys in the store: torchrun's run id and restart count
    when under torchrun (a restarted job never reads the keys of the attempt before)."""
    run_id = os.environ.get("TORCHELASTIC_RUN_ID")
    if run_id is None:
        return PREFIX
    return f"{PREFIX}/{run_id}/{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}"


def store_from_env(timeout: float) -> tuple[Any, int, int]:
    """The store, rank and world size of a ``torchrun`` job (``RANK``, ``WORLD_SIZE``,
    ``MASTER_ADDR``, ``MASTER_PORT``): torchrun's agent store when it hosts one, else a store
    hosted by rank 0."""
    import torch.distributed as dist

    try:
        rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        host, port = os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"])
    except KeyError as exc:
        raise InputError(
            f"{exc.args[0]} is not set: start the parties with torchrun (it sets RANK, "
            "WORLD_SIZE, MASTER_ADDR and MASTER_PORT), or use the in-process backend."
        ) from None
    agent = os.environ.get("TORCHELASTIC_USE_AGENT_STORE", "").lower() == "true"
    store = dist.TCPStore(
        host,
        port,
        world,
        is_master=(rank == 0 and not agent),
        timeout=datetime.timedelta(seconds=timeout),
        wait_for_workers=False,
    )
    return store, rank, world


def _child(
    settings_json: str, rank: int, host: str, port: int, seed: int, device: str, out: str | None
) -> None:
    import torch.distributed as dist

    settings = CollabSettings.model_validate_json(settings_json)
    store = dist.TCPStore(
        host, port, is_master=False, timeout=datetime.timedelta(seconds=settings.timeout)
    )
    run_party(settings, rank, store, seed, device, out)


def run_processes(
    settings: CollabSettings,
    seed: int = 0,
    device: torch.device | str = "cpu",
    out: str | Path | None = None,
) -> tuple[dict[int, PartyResult], dict[int, int]]:
    """One process per party on this machine; returns the finished parties' results and every
    process's exit code (non-zero: the party died)."""
    import torch.distributed as dist

    store = dist.TCPStore(
        "127.0.0.1",
        0,
        is_master=True,
        timeout=datetime.timedelta(seconds=settings.timeout),
        wait_for_workers=False,
    )
    ctx = mp.get_context("spawn")
    procs = [
        ctx.Process(
            target=_child,
            args=(
                settings.model_dump_json(),
                rank,
                "127.0.0.1",
                store.port,
                seed,
                str(device),
                None if out is None else str(out),
            ),
            daemon=True,
        )
        for rank in range(settings.parties)
    ]
    try:
        for p in procs:
            p.start()
        for p in procs:
            p.join()
    finally:
        for p in procs:  # an interrupted launcher leaves no party behind
            if p.is_alive():
                p.terminate()
                p.join(5)
    codes = {rank: int(p.exitcode or 0) for rank, p in enumerate(procs)}
    return collect_results(store, range(settings.parties), timeout=1.0), codes


def collect_results(store: Any, ranks: Any, timeout: float) -> dict[int, PartyResult]:
    """The results other parties posted to the store (waiting up to ``timeout`` seconds for
    those that are still finishing; a party that died posts none)."""
    out: dict[int, PartyResult] = {}
    waiting = list(ranks)
    deadline = time.monotonic() + timeout
    while waiting and time.monotonic() < deadline:
        for r in list(waiting):
            key = f"{job_prefix()}/result/{r}"
            if store.check([key]):
                out[r] = PartyResult.from_dict(json.loads(store.get(key)))
                waiting.remove(r)
        if waiting:
            time.sleep(0.05)
    return dict(sorted(out.items()))


__all__ = [
    "CollectiveExchange",
    "PartyDropped",
    "StoreExchange",
    "collect_results",
    "job_prefix",
    "decode",
    "encode",
    "run_in_process",
    "run_party",
    "run_processes",
    "store_from_env",
]
