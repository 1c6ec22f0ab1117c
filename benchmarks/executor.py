"""The Ray executor's overhead against the local process pool on a smoke reproduction.

The same reproduction (default: ``sce --preset smoke`` on the CPU, 4 jobs) runs with the local
pool of ``--cpus`` workers and on a local Ray with ``--cpus`` CPUs, in alternating rounds in one
process (each into a temporary store); Ray is started once, and its start-up is reported on its
own. Prints one JSON object: the median wall time of each, the ratio Ray / local (the overhead
per reproduction once a cluster is up; lower is better, 1.0 is none), the ratio counting Ray's
start-up, and whether both gave the same table (they must).

    python benchmarks/executor.py --experiment sce --preset smoke --cpus 2 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--experiment", default="sce")
    ap.add_argument("--preset", default="smoke")
    ap.add_argument("--cpus", type=int, default=2, help="local workers and Ray CPUs")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    try:
        import ray
    except ImportError:
        sys.exit('benchmarks/executor.py needs Ray: pip install -e ".[ray]"')
    from trustlab.experiments.base import reproduce
    from trustlab.results import RunStore
    from trustlab.utils.executor import RayExecutor

    home = tempfile.mkdtemp(prefix="trustlab-bench-executor-")
    os.environ["TRUSTLAB_HOME"] = home  # the runs go to a throw-away store (and Ray's jobs too)
    store = RunStore(home)
    start = time.perf_counter()
    ex = RayExecutor(num_cpus=args.cpus)
    ex.start()
    ray_init_s = time.perf_counter() - start
    walls: dict[str, list[float]] = {"local": [], "ray": []}
    tables: dict[str, list] = {}
    common = {"device": "cpu", "progress": False, "store": store}
    try:
        for _ in range(args.repeats):
            for name in ("local", "ray"):
                t0 = time.perf_counter()
                if name == "local":
                    rep = reproduce(args.experiment, args.preset, workers=args.cpus, **common)
                else:
                    rep = reproduce(args.experiment, args.preset, executor=ex, **common)
                walls[name].append(time.perf_counter() - t0)
                tables.setdefault(name, rep.table.rows)
    finally:
        ex.close()
    assert not ray.is_initialized()
    local_s, ray_s = statistics.median(walls["local"]), statistics.median(walls["ray"])
    out = {
        "benchmark": "executor overhead: Ray vs the local pool",
        "reproduction": f"{args.experiment} --preset {args.preset} (cpu)",
        "cpus": args.cpus,
        "repeats": args.repeats,
        "local_s": round(local_s, 2),
        "ray_s": round(ray_s, 2),
        "ray_init_s": round(ray_init_s, 2),
        "ratio_ray_vs_local": round(ray_s / local_s, 3),
        "ratio_with_ray_start": round((ray_s + ray_init_s) / local_s, 3),
        "same_table": tables["local"] == tables["ray"],
        "local_runs_s": [round(w, 2) for w in walls["local"]],
        "ray_runs_s": [round(w, 2) for w in walls["ray"]],
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
