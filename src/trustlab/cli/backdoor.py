"""Backdoors: ``backdoor`` (train a backdoored model, store its artefact) and ``defend``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from trustlab.cli.common import DataRootOpt, DeviceOpt, QuietOpt, SeedOpt, command
from trustlab.errors import InputError
from trustlab.utils.progress import show_progress


@command("backdoor")
def backdoor_cmd(
    attack: Annotated[str, typer.Option(help="{backdoors}.")],
    dataset: Annotated[str, typer.Option(help="training data: {datasets}.")] = "shapes10",
    model: Annotated[str, typer.Option(help="architecture: {models}.")] = "resnet8",
    rate: Annotated[
        float,
        typer.Option(
            help="fraction of the training set poisoned (clean-label: of the target class; "
            "blind: unused)."
        ),
    ] = 0.1,
    target: Annotated[int, typer.Option(help="the target class.")] = 0,
    epochs: Annotated[int, typer.Option(help="training epochs.")] = 5,
    lr: Annotated[float, typer.Option(help="peak learning rate.")] = 0.05,
    batch_size: Annotated[int, typer.Option(help="batch size.")] = 64,
    data_root: DataRootOpt = None,
    name: Annotated[str | None, typer.Option(help="a name for the stored run.")] = None,
    quiet: QuietOpt = False,
    device: DeviceOpt = "auto",
    seed: SeedOpt = 0,
) -> None:
    """Train a backdoored model and store its artefact as a run.

    The run holds the weights, trigger, poison indices, config, metrics and a PNG of clean vs
    triggered examples.
    """
    import torch

    from trustlab.attacks.backdoor.artifact import ATTACKS, save_artifact, train_backdoor
    from trustlab.attacks.evasion.grid import save_grid
    from trustlab.data import load_dataset
    from trustlab.models.spec import ModelSpec
    from trustlab.results import RunStore, recording_outcome
    from trustlab.train import TrainSettings
    from trustlab.train.trainer import check_model_fits
    from trustlab.utils.device import resolve_device

    if attack not in ATTACKS:
        raise InputError(f"unknown backdoor attack {attack!r}; use one of {', '.join(ATTACKS)}.")
    dev = resolve_device(device)
    s = seed
    train = load_dataset(dataset, "train", root=data_root)
    test = load_dataset(dataset, "test", root=data_root)
    if not 0 <= target < train.num_classes:
        raise InputError(f"--target must be in [0, {train.num_classes}), got {target}.")
    torch.manual_seed(s)
    net = ModelSpec.for_data(model, train).build()
    check_model_fits(net, train, test)
    settings = TrainSettings(epochs=epochs, lr=lr, batch_size=batch_size, seed=s)
    config = {
        "attack": attack, "dataset": dataset, "model": model, "rate": rate, "target": target,
        "epochs": epochs, "lr": lr, "batch_size": batch_size, "seed": s,
    }  # fmt: skip
    run = RunStore().create_run("backdoor", name or f"{attack}-{dataset}", config, seed=s)
    with recording_outcome(run):
        art = train_backdoor(
            attack, train, test, net, settings, rate, target, s, dev, show_progress(not quiet)
        )
        art.config.update(config)
        save_artifact(run.dir, art)
        for f in (
            "model.safetensors",
            "trigger.safetensors",
            "poison.safetensors",
            "backdoor.json",
        ):
            run.add_artifact(f)
        k = min(8, len(test))
        x = test.x[:k].to(dev)
        save_grid(run.artifact_path("examples.png"), x, art.trigger(x))
        run.add_artifact("examples.png")
        run.finish(art.metrics)
    typer.echo(json.dumps({"run": run.id, "dir": str(run.dir), **art.metrics}))


def _artifact_dir(ref: str) -> Path:
    """The folder of a backdoor artefact: a run id or a folder holding backdoor.json."""
    from trustlab.results import RunStore

    if ref.isdigit():
        return RunStore().get(int(ref)).dir
    folder = Path(ref).expanduser()
    if not (folder / "backdoor.json").is_file():
        raise InputError(
            f"{ref} is neither a run id nor a folder with a backdoor artefact (backdoor.json); "
            "make one with `trustlab backdoor`."
        )
    return folder


@command("defend")
def defend_cmd(
    artefact: Annotated[str, typer.Argument(help="a backdoor run id or artefact folder.")],
    defense: Annotated[str, typer.Option(help="{defenses}.")] = "nc",
    epochs: Annotated[
        int | None,
        typer.Option(
            help="Neural Cleanse's epochs (default 5), or the training epochs of a defense "
            "that trains (default 10, lr 0.05)."
        ),
    ] = None,
    data_root: DataRootOpt = None,
    quiet: QuietOpt = False,
    device: DeviceOpt = "auto",
    seed: SeedOpt = 0,
) -> None:
    """Run a backdoor defense against an attack artefact and store the result.

    Prints the defense's numbers as JSON; the run also holds defense.json (and, for Neural
    Cleanse, a PNG of the recovered triggers and masks).
    """
    from trustlab.attacks.backdoor.artifact import load_artifact
    from trustlab.data import load_dataset
    from trustlab.defenses.backdoor.evaluate import DEFENSES, run_defense
    from trustlab.results import RunStore, recording_outcome
    from trustlab.utils.device import resolve_device
    from trustlab.utils.io import write_json_atomic

    if defense not in DEFENSES:
        raise InputError(f"unknown defense {defense!r}; use one of {', '.join(DEFENSES)}.")
    if epochs is not None and epochs < 1:
        raise InputError(f"--epochs must be >= 1, got {epochs}.")
    if epochs is not None and defense in ("strip", "spectral", "ac"):
        raise InputError(f"{defense} trains nothing; it takes no --epochs.")
    folder = _artifact_dir(artefact)
    dev = resolve_device(device)
    art = load_artifact(folder, device=dev)
    dataset = art.config.get("dataset")
    if not dataset:
        raise InputError(f"the artefact in {folder} does not name its dataset.")
    train = load_dataset(dataset, "train", root=data_root)
    test = load_dataset(dataset, "test", root=data_root)
    s = seed
    options: dict[str, Any] = {}
    settings = None
    if epochs is not None and defense == "nc":
        options = {"epochs": epochs}
    elif epochs is not None:  # fine-pruning's fine-tuning, the adversarial filter's training
        from trustlab.train import TrainSettings

        settings = TrainSettings(epochs=epochs, lr=0.05, batch_size=64, seed=s)
    config = {"artefact": str(folder), "defense": defense, "epochs": epochs, "seed": s}
    run = RunStore().create_run("defend", f"{defense}-{folder.name}", config, seed=s)
    keep: dict[str, Any] = {}
    with recording_outcome(run):
        out = run_defense(
            defense, art, train, test, settings, options, seed=s,
            progress=show_progress(not quiet), keep=keep,
        )  # fmt: skip
        report = keep.get("report")
        doc = {"defense": defense, "metrics": out}
        if report is not None and hasattr(report, "to_dict"):
            doc["report"] = report.to_dict()
        write_json_atomic(run.artifact_path("defense.json"), doc)
        run.add_artifact("defense.json")
        if defense == "nc" and report is not None:
            from trustlab.attacks.evasion.grid import save_rows

            # row 1: each class's mask; row 2: mask x pattern (what NC pastes)
            m = report.masks[:, None]
            save_rows(run.artifact_path("triggers.png"), [m, m * report.patterns])
            run.add_artifact("triggers.png")
        run.finish(out)
    typer.echo(json.dumps({"run": run.id, "dir": str(run.dir), **out}))
