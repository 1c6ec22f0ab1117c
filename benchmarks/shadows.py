"""Shadow models per minute (vectorised ensemble, executors) and the Ray executor's overhead.

1. ``vectorised``: for each case (cnn-small on digits, resnet8 on shapes10) the same 16 shadows,
   each on its balanced half of a population, are trained by ``train_shadows(..., cache=False)``
   twice per round: ``vectorise=True`` (one batched model,
   :func:`trustlab.train.ensemble.train_ensemble`) and ``vectorise=False`` (one
   :class:`~trustlab.train.Trainer` run each). The two alternate for ``--repeats`` rounds so that
   background load hits both alike; the median of each is reported, and ``ratio`` is vectorised /
   one by one (the target for cnn-small on 2 cores: >= 3). A warm-up ensemble of two shadows runs
   first (torch.func's one-time set-up is not counted).
2. ``executors``: the cnn-small shadows trained one by one in this process (all threads), on the
   local pool (one single-threaded shadow per core) and on a local Ray with as many CPUs; shadows
   per minute and the ratios to in-process.
3. ``executor_overhead``: a smoke reproduction (default ``sce --preset smoke``, 4 jobs) with the
   local pool and on Ray, alternating; the median wall time of each, Ray / local (the overhead per
   reproduction once a cluster is up; 1.0 is none), the same counting Ray's start-up, and whether
   both gave the same table (they must).

Parts 2 and 3 need Ray (``pip install -e ".[ray]"``; without it they are reported as skipped).
Prints one JSON object; :func:`main` builds it.

    python benchmarks/shadows.py --epochs 2 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from typing import Any

import torch

from trustlab.attacks.privacy.shadows import ShadowRecipe, train_shadows
from trustlab.data import load_dataset
from trustlab.models.spec import ModelSpec
from trustlab.train import TrainSettings
from trustlab.utils.device import resolve_device

#: (model, dataset, population, settings): cnn-small as the meminf ``quick`` preset trains its
#: target and shadows (1,000 digits, batch 32, lr 0.05, no weight decay), resnet8 with the CIFAR
#: recipe's augmentation
CASES: dict[str, tuple[str, str, int, dict[str, Any]]] = {
    "cnn-small/digits": (
        "cnn-small", "digits", 1000, dict(lr=0.05, batch_size=32, weight_decay=0.0)
    ),
    "resnet8/shapes10": (
        "resnet8", "shapes10", 1000, dict(lr=0.05, batch_size=64, augment="crop-flip")
    ),
}  # fmt: skip


def shadows_per_minute(
    recipe: ShadowRecipe, population, shadows: int, vectorise: bool, device: torch.device
) -> float:
    start = time.perf_counter()
    out = train_shadows(
        recipe, population, shadows, cache=False, device=device, progress=False,
        vectorise=vectorise,
    )  # fmt: skip
    took = time.perf_counter() - start
    assert out.trained == shadows
    return 60 * shadows / took


def measure_case(
    name: str, shadows: int, epochs: int, repeats: int, device: torch.device
) -> dict[str, Any]:
    model, dataset, size, train = CASES[name]
    data = load_dataset(dataset, "train")
    population = data.subset(torch.arange(min(size, len(data))))
    settings = TrainSettings(epochs=epochs, **train)
    recipe = ShadowRecipe(ModelSpec.for_data(model, population), settings)
    warm = ShadowRecipe(recipe.spec, settings.model_copy(update={"epochs": 1}))
    shadows_per_minute(warm, population.subset(torch.arange(64)), 2, True, device)
    together, alone = [], []
    for _ in range(repeats):
        together.append(shadows_per_minute(recipe, population, shadows, True, device))
        alone.append(shadows_per_minute(recipe, population, shadows, False, device))
    v, a = statistics.median(together), statistics.median(alone)
    return {
        "model": model,
        "dataset": dataset,
        "population": len(population),
        "shadows": shadows,
        "settings": {"epochs": epochs, **train},
        "vectorised_per_minute": round(v, 2),
        "one_by_one_per_minute": round(a, 2),
        "ratio": round(v / a, 3),
        "vectorised_runs": [round(x, 2) for x in together],
        "one_by_one_runs": [round(x, 2) for x in alone],
    }


def executors_case(shadows: int, epochs: int, repeats: int, cpus: int) -> dict[str, Any]:
    """cnn-small's shadows one by one in this process, on the local pool and on a local Ray."""
    from trustlab.utils.executor import LocalExecutor, RayExecutor

    model, dataset, size, train = CASES["cnn-small/digits"]
    data = load_dataset(dataset, "train")
    population = data.subset(torch.arange(min(size, len(data))))
    settings = TrainSettings(epochs=epochs, **train)
    recipe = ShadowRecipe(ModelSpec.for_data(model, population), settings)

    def per_minute(executor: Any) -> float:
        start = time.perf_counter()
        out = train_shadows(
            recipe, population, shadows, cache=False, device="cpu", progress=False,
            vectorise=False, executor=executor,
        )  # fmt: skip
        assert out.trained == shadows
        return 60 * shadows / (time.perf_counter() - start)

    runs: dict[str, list[float]] = {"in_process": [], "local_pool": [], "ray": []}
    with RayExecutor(num_cpus=cpus) as ray_ex, LocalExecutor(cpus) as pool:
        ray_ex.start()
        for _ in range(repeats):
            runs["in_process"].append(per_minute(None))
            runs["local_pool"].append(per_minute(pool))
            runs["ray"].append(per_minute(ray_ex))
    med = {k: statistics.median(v) for k, v in runs.items()}
    return {
        "model": model, "dataset": dataset, "population": len(population), "shadows": shadows,
        "cpus": cpus, "settings": {"epochs": epochs, **train},
        **{f"{k}_per_minute": round(v, 2) for k, v in med.items()},
        "ratio_local_pool_vs_in_process": round(med["local_pool"] / med["in_process"], 3),
        "ratio_ray_vs_in_process": round(med["ray"] / med["in_process"], 3),
        "runs": {k: [round(x, 2) for x in v] for k, v in runs.items()},
    }  # fmt: skip


def executor_overhead(experiment: str, preset: str, cpus: int, repeats: int) -> dict[str, Any]:
    """A smoke reproduction on the local pool and on Ray (alternating; medians)."""
    from trustlab.experiments.base import reproduce
    from trustlab.results import RunStore
    from trustlab.utils.executor import RayExecutor

    home = tempfile.mkdtemp(prefix="trustlab-bench-executor-")
    os.environ["TRUSTLAB_HOME"] = home  # the runs go to a throw-away store (Ray's jobs too)
    store = RunStore(home)
    start = time.perf_counter()
    ex = RayExecutor(num_cpus=cpus)
    ex.start()
    ray_init_s = time.perf_counter() - start
    walls: dict[str, list[float]] = {"local": [], "ray": []}
    tables: dict[str, list] = {}
    common = {"device": "cpu", "progress": False, "store": store}
    try:
        for _ in range(repeats):
            for name in ("local", "ray"):
                t0 = time.perf_counter()
                if name == "local":
                    rep = reproduce(experiment, preset, workers=cpus, **common)
                else:
                    rep = reproduce(experiment, preset, executor=ex, **common)
                walls[name].append(time.perf_counter() - t0)
                tables.setdefault(name, rep.table.rows)
    finally:
        ex.close()
    local_s, ray_s = statistics.median(walls["local"]), statistics.median(walls["ray"])
    return {
        "reproduction": f"{experiment} --preset {preset} (cpu)",
        "cpus": cpus,
        "local_s": round(local_s, 2),
        "ray_s": round(ray_s, 2),
        "ray_init_s": round(ray_init_s, 2),
        "ratio_ray_vs_local": round(ray_s / local_s, 3),
        "ratio_with_ray_start": round((ray_s + ray_init_s) / local_s, 3),
        "same_table": tables["local"] == tables["ray"],
        "local_runs_s": [round(w, 2) for w in walls["local"]],
        "ray_runs_s": [round(w, 2) for w in walls["ray"]],
    }


def main() -> dict[str, Any]:
    """Run the benchmark and return its JSON object (one key per measurement)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shadows", type=int, default=16)
    ap.add_argument("--epochs", type=int, default=2, help="epochs per shadow")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--cases", nargs="*", default=list(CASES), choices=list(CASES))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--cpus", type=int, default=2, help="local workers and Ray CPUs")
    ap.add_argument("--experiment", default="sce", help="the reproduction for the overhead")
    ap.add_argument("--preset", default="smoke")
    ap.add_argument("--parts", nargs="*", default=["vectorised", "executors", "overhead"],
                    choices=["vectorised", "executors", "overhead"])  # fmt: skip
    args = ap.parse_args()
    device = resolve_device(args.device)
    result: dict[str, Any] = {
        "benchmark": "shadows",
        "device": str(device),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "machine": platform.machine(),
        "repeats": args.repeats,
    }
    if "vectorised" in args.parts:
        result["vectorised"] = {
            name: measure_case(name, args.shadows, args.epochs, args.repeats, device)
            for name in args.cases
        }
    try:
        import ray  # noqa: F401
    except ImportError:
        for part, key in (("executors", "executors"), ("overhead", "executor_overhead")):
            if part in args.parts:
                result[key] = {"skipped": 'needs Ray: pip install -e ".[ray]"'}
        return result
    if "executors" in args.parts:
        result["executors"] = executors_case(args.shadows, args.epochs, args.repeats, args.cpus)
    if "overhead" in args.parts:
        result["executor_overhead"] = executor_overhead(
            args.experiment, args.preset, args.cpus, args.repeats
        )
    return result


if __name__ == "__main__":
    print(json.dumps(main(), indent=2))
