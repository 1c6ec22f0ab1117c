"""A stored backdoor run: train a backdoored model with a registered attack and store the
artefact (``trustlab backdoor``).

:func:`run_backdoor` checks everything a user can get wrong (the attack's name, the poisoning
rate, the training settings, the dataset, the target class, the model) *before* the run is
created, so bad input leaves nothing in the store; then it trains
(:func:`~trustlab.attacks.backdoor.artifact.train_backdoor`), writes the artefact into the
run's folder (:func:`~trustlab.attacks.backdoor.artifact.save_artifact`:
``model.safetensors``, ``trigger.safetensors``, ``poison.safetensors``, ``backdoor.json``) and
``examples.png`` (clean vs triggered test images), and finishes the run with the metrics.
"""

from __future__ import annotations

from typing import Any

import torch

from trustlab.attacks.backdoor.artifact import BackdoorArtifact, save_artifact, train_backdoor
from trustlab.attacks.backdoor.poison import poison_count
from trustlab.attacks.evasion.grid import save_grid
from trustlab.data import load_dataset
from trustlab.errors import InputError
from trustlab.models.spec import ModelSpec
from trustlab.registry import BACKDOORS
from trustlab.results import Run, RunStore, recording_outcome
from trustlab.train import TrainSettings
from trustlab.train.trainer import check_model_fits
from trustlab.utils.device import resolve_device
from trustlab.utils.validate import check_float, parse_config

__all__ = ["ARTIFACT_FILES", "run_backdoor"]

#: the files of a backdoor artefact, registered as the run's artefacts
ARTIFACT_FILES = ("model.safetensors", "trigger.safetensors", "poison.safetensors", "backdoor.json")


def _check_poison_count(card: Any, train: Any, rate: float, target: int) -> None:
    """Refuse, before the run is created, a ``rate`` that asks for more poisoned samples than
    the data-poisoning recipe's label policy allows (:func:`poison_count`, the count
    :func:`~trustlab.attacks.backdoor.poison.poison_dataset` takes)."""
    if card.meta.get("injector") != "data":  # the others choose their samples themselves
        return
    recipe = card.build()
    poison_count(train, recipe.policy(target, train.num_classes), rate, recipe.of)


def run_backdoor(
    attack: str,
    dataset: str = "shapes10",
    model: str = "resnet8",
    rate: float = 0.1,
    target: int = 0,
    epochs: int = 5,
    lr: float = 0.05,
    batch_size: int = 64,
    data_root: str | None = None,
    name: str | None = None,
    device: str = "auto",
    seed: int = 0,
    progress: bool = False,
    store: RunStore | None = None,
    options: dict[str, Any] | None = None,
) -> tuple[Run, BackdoorArtifact]:
    """Train a backdoored ``model`` on ``dataset`` with the registered ``attack``
    (:data:`~trustlab.registry.BACKDOORS`) and store it as a ``backdoor`` run; returns
    ``(run, artefact)``. ``options`` are the attack's parameters (its card's). See the
    module."""
    card = BACKDOORS.get(attack)  # unknown names fail here, before anything is stored
    attack = card.name
    card.validate(options or {})
    rate = check_float("--rate", rate, 0, 1, fix="It is a fraction, e.g. 0.1 for 10%.")
    settings = parse_config(
        TrainSettings, {"epochs": epochs, "lr": lr, "batch_size": batch_size, "seed": seed}
    )
    dev = resolve_device(device)
    train = load_dataset(dataset, "train", root=data_root)
    test = load_dataset(dataset, "test", root=data_root)
    if not 0 <= target < train.num_classes:
        raise InputError(f"--target must be in [0, {train.num_classes}), got {target}.")
    _check_poison_count(card, train, rate, target)
    torch.manual_seed(seed)
    net = ModelSpec.for_data(model, train).build()
    check_model_fits(net, train, test)
    config: dict[str, Any] = {
        "attack": attack, "dataset": dataset, "model": model, "rate": rate, "target": target,
        "epochs": epochs, "lr": lr, "batch_size": batch_size, "seed": seed,
        **({"options": dict(options)} if options else {}),
    }  # fmt: skip
    store = store or RunStore()
    run = store.create_run("backdoor", name or f"{attack}-{dataset}", config, seed=seed)
    with recording_outcome(run):
        art = train_backdoor(
            attack, train, test, net, settings, rate, target, seed, dev, progress, options
        )
        art.config.update(config)
        save_artifact(run.dir, art)
        for f in ARTIFACT_FILES:
            run.add_artifact(f)
        k = min(8, len(test))
        x = test.x[:k].to(dev)
        save_grid(
            run.artifact_path("examples.png"), x, art.trigger(x), labels=("clean", "triggered"),
            title=f"{card.name} backdoor, target class {target}",
        )  # fmt: skip
        run.add_artifact("examples.png")
        run.finish(art.metrics)
    return run, art
