"""Shadow models per minute: a vectorised ensemble against training them one by one.

For each case (cnn-small on digits, resnet8 on shapes10) the same 16 shadows, each on its
balanced half of a population, are trained by ``train_shadows(..., cache=False)`` twice per round:
``vectorise=True`` (one batched model, :func:`trustlab.train.ensemble.train_ensemble`) and
``vectorise=False`` (one :class:`~trustlab.train.Trainer` run each). The two alternate for
``--repeats`` rounds so that background load hits both alike; the median of each is reported, and
``ratio`` is vectorised / one by one (the target for cnn-small on 2 cores: >= 3). A warm-up ensemble
of two shadows runs first (torch.func's one-time set-up is not counted). Prints one JSON object;
:func:`main` builds it, and further measurements add their own keys there.

    python benchmarks/shadows.py --epochs 2 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
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


def main() -> dict[str, Any]:
    """Run the benchmark and return its JSON object (one key per measurement)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shadows", type=int, default=16)
    ap.add_argument("--epochs", type=int, default=2, help="epochs per shadow")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--cases", nargs="*", default=list(CASES), choices=list(CASES))
    ap.add_argument("--device", default="cpu")
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
    result["vectorised"] = {
        name: measure_case(name, args.shadows, args.epochs, args.repeats, device)
        for name in args.cases
    }
    # further measurements (e.g. the Ray executor's overhead) add their keys to `result` here
    return result


if __name__ == "__main__":
    print(json.dumps(main(), indent=2))
