"""FDPDDL's backends: stage-2 rounds per second, and the bytes each party sends per round.

Runs :func:`trustlab.collab.runner.run_fdpddl` on the same tiny settings (``--dataset`` digits,
``100 * parties`` samples, 1 DPGAN epoch at epsilon 4, 1 local epoch a round) with the
``in-process`` backend (every party in this process), the ``processes`` backend (one process
per party, releases over torch.distributed's TCPStore) and the same with
``exchange="collective"`` (``processes-collective``: ``all_gather`` over gloo on CPU, nccl on
CUDA), for each ``--parties`` count. Each backend runs twice per repeat, with ``--rounds`` R and
with 0 rounds; the difference of the two wall-clock times is the time of the R stage-2 rounds
(stage 1, the process start-up and the final report cancel out), and both are reported. The
backends alternate, and the median of ``--repeats`` is kept, so that background load hits them
alike. ``ratio`` is processes / in-process rounds per second (``ratio_collective`` the same for
the collectives); the parties compute with one thread each, so it cannot honestly exceed
``min(parties, CPU cores)``: a larger one, or a negative round time, is the machine's load, and
asks for more ``--rounds`` or ``--repeats``. ``rounds_per_s_direct`` / ``ratio*_direct`` time
the rounds as the parties saw them instead (the median over parties of the summed per-round
``seconds`` of their histories, waits included): no subtraction, so less noise.
``backends_agree``: every backend ended with the
same parameters and the same bytes per round, as they must for one seed.

Bytes per party and round (the rounds it released in) are compared with the protocol's minimum:
its top ``shared_size`` coordinates as (int32 index, float32 value) pairs, its ``m`` fresh DPGAN
samples as float32 and one label (one byte; fewer than 256 classes) for every published sample.
``tensor_bytes`` are the tensors a party's releases hold (``history[t]["bytes_sent"]``: the
labels travel as int16, padded to the largest benchmark); ``wire_bytes`` what its process put on
the store (safetensors, with headers), the R-round run's total minus the 0-round run's, per
round (it includes the final report's one float64 accuracy per round). Prints one JSON object.

    python benchmarks/collab.py --quick
    python benchmarks/collab.py --parties 4 8 --rounds 20 --repeats 5
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
from typing import Any

import torch

from trustlab.collab import fdpddl
from trustlab.collab.runner import CollabResult, run_fdpddl
from trustlab.collab.settings import CollabSettings, load_data
from trustlab.models.spec import ModelSpec
from trustlab.utils.device import resolve_device

#: name -> (run_fdpddl's backend, the settings' exchange)
BACKENDS = {
    "in-process": ("in-process", "store"),
    "processes": ("processes", "store"),
    "processes-collective": ("processes", "collective"),
}
LABEL_BYTES = 1  # a class index below 256
MINIMUM = (
    "shared_size * (4 + 4) + m * C*H*W * 4 + (sum over publishing parties of m_j) * 1, "
    "shared_size = floor(num_params * sharing), m = max(1, floor(shard * sharing))"
)


def settings_for(
    parties: int, rounds: int, args: argparse.Namespace, exchange: str = "store"
) -> CollabSettings:
    return CollabSettings.parse(
        {
            "exchange": exchange,
            "parties": parties,
            "dataset": args.dataset,
            "model": args.model,
            "samples": args.samples_per_party * parties,
            "rounds": rounds,
            "pretrain_epochs": args.pretrain_epochs,
            "local_epochs": 1,
            "batch_size": 10,
            "dpgan": {"epochs": 1, "epsilon": 4.0},
            "timeout": 600.0,
        }
    )


def num_params(settings: CollabSettings) -> tuple[int, tuple[int, ...]]:
    """The parameter count of every party's model (as ``make_party`` builds it), and the
    input shape."""
    train, _ = load_data(settings)
    spec = ModelSpec.for_data(settings.model, train)
    model = ModelSpec(**{**spec.to_dict(), "group_norm": True}).build()
    return sum(p.numel() for p in model.parameters() if p.requires_grad), tuple(train.input_shape)


def minimum_bytes(settings: CollabSettings, shard_sizes: list[int]) -> list[int]:
    """Each party's minimum bytes for one round in which every party publishes (see MINIMUM)."""
    params, shape = num_params(settings)
    sharing = torch.tensor(settings.sharing_levels(), dtype=torch.float64)
    keep = fdpddl.shared_size(params, sharing).tolist()
    bench = [
        settings.benchmark or max(1, math.floor(size * s))
        for size, s in zip(shard_sizes, sharing.tolist(), strict=True)
    ]
    pixels = math.prod(shape)
    labels = sum(bench) * LABEL_BYTES
    return [k * (4 + 4) + m * pixels * 4 + labels for k, m in zip(keep, bench, strict=True)]


def released_rounds(result: CollabResult, party: int) -> list[int]:
    return [h["bytes_sent"] for h in result.parties[party].history if h["bytes_sent"] > 0]


def measure(parties: int, args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    full_s = settings_for(parties, args.rounds, args)
    times: dict[str, dict[str, list[float]]] = {
        b: {"full": [], "setup": [], "direct": []} for b in BACKENDS
    }
    last: dict[str, dict[str, CollabResult]] = {b: {} for b in BACKENDS}
    for _ in range(args.repeats):
        for name, (backend, exchange) in BACKENDS.items():
            for key, rounds in (("full", args.rounds), ("setup", 0)):
                s = settings_for(parties, rounds, args, exchange)
                res = run_fdpddl(s, seed=args.seed, backend=backend, device=device)  # type: ignore[arg-type]
                if len(res.parties) != parties:
                    raise RuntimeError(f"{name}: only parties {sorted(res.parties)} finished")
                times[name][key].append(res.seconds)
                last[name][key] = res
                if key == "full":  # the rounds as the parties timed them (waits included)
                    times[name]["direct"].append(
                        statistics.median(
                            sum(h["seconds"] for h in r.history) for r in res.parties.values()
                        )
                    )
    out: dict[str, Any] = {"parties": parties, "samples": full_s.samples}
    rates, direct = {}, {}
    for backend in BACKENDS:
        full, setup = (
            statistics.median(times[backend]["full"]),
            statistics.median(times[backend]["setup"]),
        )
        stage2 = full - setup
        rates[backend] = args.rounds / stage2 if stage2 > 0 else math.nan
        direct[backend] = args.rounds / statistics.median(times[backend]["direct"])
        out[backend] = {
            "rounds_per_s": round(rates[backend], 4) if stage2 > 0 else None,
            "rounds_per_s_direct": round(direct[backend], 4),
            "seconds_with_rounds": round(full, 3),
            "seconds_without_rounds": round(setup, 3),
            "seconds_per_round": round(stage2 / args.rounds, 3),
            "runs_with_rounds": [round(t, 3) for t in times[backend]["full"]],
            "runs_without_rounds": [round(t, 3) for t in times[backend]["setup"]],
        }
    for name in ("processes", "processes-collective"):
        ratio = rates[name] / rates["in-process"]
        key = "ratio" if name == "processes" else "ratio_collective"
        out[key] = None if math.isnan(ratio) else round(ratio, 4)
        out[key + "_direct"] = round(direct[name] / direct["in-process"], 4)
        if math.isnan(ratio):
            out["note"] = (
                "the rounds took less than the runs' noise; use more --rounds or --repeats"
            )

    proc, proc0 = last["processes"]["full"], last["processes"]["setup"]
    inproc = last["in-process"]["full"]
    minimum = minimum_bytes(full_s, proc.shard_sizes)
    per_party = []
    for i in range(parties):
        sent = released_rounds(proc, i)
        tensor = statistics.mean(sent) if sent else 0.0
        wire = None
        if proc.parties[i].wire_bytes is not None and proc0.parties[i].wire_bytes is not None:
            wire = (proc.parties[i].wire_bytes - proc0.parties[i].wire_bytes) / args.rounds
        per_party.append(
            {
                "party": i,
                "shard": proc.shard_sizes[i],
                "rounds_released": len(sent),
                "minimum_bytes": minimum[i],
                "tensor_bytes": round(tensor, 1),
                "wire_bytes": None if wire is None else round(wire, 1),
                "tensor_over_minimum": round(tensor / minimum[i], 4) if sent else None,
                "wire_over_minimum": None if wire is None else round(wire / minimum[i], 4),
            }
        )
    out["bytes_per_round"] = per_party
    out["backends_agree"] = all(
        inproc.parties[i].parameters_sha256 == other.parties[i].parameters_sha256
        and [h["bytes_sent"] for h in inproc.parties[i].history]
        == [h["bytes_sent"] for h in other.parties[i].history]
        for other in (proc, last["processes-collective"]["full"])
        for i in range(parties)
    )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parties", type=int, nargs="+", default=[4, 8])
    ap.add_argument("--rounds", type=int, default=30, help="stage-2 rounds of the timed run")
    ap.add_argument("--samples-per-party", type=int, default=100)
    ap.add_argument("--pretrain-epochs", type=int, default=1)
    ap.add_argument("--dataset", default="digits")
    ap.add_argument("--model", default="mlp")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--quick", action="store_true", help="1 repeat, no pre-training")
    args = ap.parse_args()
    if args.quick:
        args.repeats, args.pretrain_epochs = 1, 0
    if args.rounds < 1:
        ap.error("--rounds must be >= 1")
    device = resolve_device(args.device)
    results = [measure(n, args, device) for n in args.parties]
    print(
        json.dumps(
            {
                "benchmark": "collab",
                "dataset": args.dataset,
                "model": args.model,
                "rounds": args.rounds,
                "local_epochs": 1,
                "pretrain_epochs": args.pretrain_epochs,
                "dpgan": {"epochs": 1, "epsilon": 4.0},
                "repeats": args.repeats,
                "device": str(device),
                "cpus": torch.multiprocessing.cpu_count(),
                "torch": torch.__version__,
                "machine": platform.machine(),
                "ratio_is": "processes (store; ratio_collective: all_gather) / in-process "
                "stage-2 rounds per second",
                "minimum_bytes_formula": MINIMUM,
                "results": results,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
