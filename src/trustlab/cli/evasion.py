"""Evasion: ``attack``, ``evaluate``, ``advcam``, ``detect`` and ``transfer``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from trustlab.cli.common import DataRootOpt, DeviceOpt, SeedOpt, command
from trustlab.errors import InputError

TargetArg = Annotated[str, typer.Argument(help="a run id or a model .safetensors file.")]
EpsOpt = Annotated[str, typer.Option(help="L-inf radius, e.g. 8/255.")]
DatasetOpt = Annotated[str | None, typer.Option(help="default: the run's dataset.")]
NOpt = Annotated[int, typer.Option(help="number of test points.")]


AREA = "Evasion and detection"


@command("attack", area=AREA)
def attack_cmd(
    target: TargetArg,
    attack: Annotated[str, typer.Option(help="{evasion}.")] = "pgd",
    eps: EpsOpt = "8/255",
    dataset: DatasetOpt = None,
    data_root: DataRootOpt = None,
    n: NOpt = 1000,
    png: Annotated[Path | None, typer.Option(help="write a grid of examples here.")] = None,
    device: DeviceOpt = "auto",
    seed: SeedOpt = 0,
) -> None:
    """Robust accuracy of a model under one attack (and an optional PNG of examples)."""
    from trustlab.attacks.evasion import evaluate_robustness
    from trustlab.attacks.evasion.suite import make_attack
    from trustlab.registry import EVASION
    from trustlab.workflows.targets import load_target

    seeded = "seed" in EVASION.get(attack).parameters()  # an unknown name: the registry's error
    model, data, dev = load_target(target, dataset, data_root, n, device)
    atk = make_attack(attack, model, eps, **({"seed": seed} if seeded else {}))
    rep = evaluate_robustness(model, data, {attack: atk}, device=dev)
    typer.echo(json.dumps({"attack": attack, "eps": eps, **rep.to_dict()}))
    if png is not None:
        from trustlab.attacks.evasion.grid import save_grid

        k = min(8, len(data))
        x, y = data.x[:k].to(dev), data.y[:k].to(dev)
        save_grid(png, x, atk(x, y))


@command("evaluate", area=AREA)
def evaluate_cmd(
    target: TargetArg,
    suite: Annotated[str, typer.Option(help="{suites}.")] = "quick",
    eps: EpsOpt = "8/255",
    dataset: DatasetOpt = None,
    data_root: DataRootOpt = None,
    n: NOpt = 1000,
    device: DeviceOpt = "auto",
    seed: SeedOpt = 0,
) -> None:
    """Worst-case robust accuracy over a suite of attacks (a cascade, as AutoAttack reports)."""
    from trustlab.attacks.evasion import evaluate_robustness
    from trustlab.attacks.evasion.suite import make_suite
    from trustlab.workflows.targets import load_target

    model, data, dev = load_target(target, dataset, data_root, n, device)
    rep = evaluate_robustness(model, data, make_suite(suite, model, eps), device=dev)
    typer.echo(json.dumps({"suite": suite, "eps": eps, **rep.to_dict()}))


@command("advcam", area=AREA)
def advcam_cmd(
    target: TargetArg,
    png: Annotated[Path, typer.Option(help="write the grid (original, camouflaged, difference).")],
    style: Annotated[
        str, typer.Option(help="a bundled photograph (chelsea, coffee, ...) or an image file.")
    ] = "chelsea",
    region: Annotated[
        float, typer.Option(help="side of the central region that may change.")
    ] = 0.6,
    steps: Annotated[int, typer.Option(help="Adam iterations.")] = 300,
    target_class: Annotated[
        int | None, typer.Option(help="targeted: the class to reach (default: untargeted).")
    ] = None,
    eot: Annotated[bool, typer.Option(help="expectation over physical transformations.")] = False,
    style_layers: Annotated[
        str | None, typer.Option(help="comma-separated layer names (default: the conv stages).")
    ] = None,
    content_layer: Annotated[str | None, typer.Option(help="default: the last stage.")] = None,
    dataset: DatasetOpt = None,
    data_root: DataRootOpt = None,
    n: Annotated[int, typer.Option(help="number of test images.")] = 8,
    device: DeviceOpt = "auto",
    seed: SeedOpt = 0,
) -> None:
    """Camouflage adversarial examples in a natural style (AdvCam) and write a PNG grid."""
    import torch

    from trustlab.attacks.evasion.advcam import AdvCam, style_image
    from trustlab.attacks.evasion.grid import save_grid
    from trustlab.experiments.camouflage import central_mask
    from trustlab.workflows.targets import load_target

    if not 0 < region <= 1:
        raise InputError(f"--region must be in (0, 1], got {region}.")
    model, data, dev = load_target(target, dataset, data_root, n, device)
    x, y = data.x.to(dev), data.y.to(dev)
    goal = None
    if target_class is not None:
        if not 0 <= target_class < data.num_classes:
            raise InputError(
                f"--target-class must be in [0, {data.num_classes}), got {target_class}."
            )
        goal = torch.full_like(y, target_class)
    atk = AdvCam(
        model, style_image(style), mask=central_mask(tuple(x.shape[-2:]), region), steps=steps,
        targeted=goal is not None, eot=eot, seed=seed, content_layer=content_layer,
        style_layers=[n for n in style_layers.split(",") if n] if style_layers else None,
    )  # fmt: skip
    adv = atk(x, y, goal)
    with torch.no_grad():
        pred = model(adv).argmax(1)
    hit = pred == goal if goal is not None else pred != y
    save_grid(png, x, adv)
    out = {
        "success": float(hit.float().mean()),
        "style_loss": float(atk.style_loss(adv).mean()),
        "style_loss_clean": float(atk.style_loss(x).mean()),
        "n": len(x),
        "png": str(png),
    }
    typer.echo(json.dumps(out))


@command("detect", area=AREA)
def detect_cmd(
    target: TargetArg,
    detector: Annotated[str, typer.Option(help="{detectors}.")] = "lid",
    attack: Annotated[str, typer.Option(help="the attack whose examples are detected.")] = "pgd",
    eps: EpsOpt = "8/255",
    transfer_attack: Annotated[
        str | None, typer.Option(help="test on this attack's examples (cross-attack transfer).")
    ] = None,
    classifier: Annotated[str, typer.Option(help="lr (logistic regression) or rf.")] = "lr",
    splits: Annotated[int, typer.Option(help="random 80/20 splits.")] = 3,
    dataset: DatasetOpt = None,
    data_root: DataRootOpt = None,
    n: Annotated[int, typer.Option(help="number of test points attacked.")] = 1000,
    device: DeviceOpt = "auto",
    seed: SeedOpt = 0,
) -> None:
    """Detection ROC-AUC of adversarial examples, per split and the mean.

    As the medical-imaging study measures it: successful attacks vs clean and noise-matched
    inputs. Attacks: {evasion}.
    """
    from trustlab.attacks.evasion.suite import make_attack
    from trustlab.defenses.detection import build_detection_set, evaluate_detector, make_detector
    from trustlab.registry import DETECTORS
    from trustlab.workflows.targets import load_target

    card = DETECTORS.get(detector)  # an unknown name: the registry's error
    model, data, dev = load_target(target, dataset, data_root, n, device)
    train = None
    if card.meta.get("needs_train"):  # KD+BU fits its densities on the training split
        from trustlab.data import load_dataset

        train = load_dataset(data.name, "train", root=data_root)
    det = make_detector(detector, model, train=train, classifier=classifier, seed=seed)
    x, y = data.x.to(dev), data.y.to(dev)
    sets = build_detection_set(model, x, y, make_attack(attack, model, eps), seed=seed)
    other = None
    if transfer_attack is not None:
        other_atk = make_attack(transfer_attack, model, eps)
        other = build_detection_set(model, x, y, other_atk, seed=seed)
    rep = evaluate_detector(det, sets, splits=splits, seed=seed, transfer_to=other)
    out = {"attack": attack, "eps": eps, "tested_on": transfer_attack or attack, **rep.to_dict()}
    typer.echo(json.dumps(out))


@command(
    "transfer",
    area=AREA,
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
)
def transfer_cmd(
    ctx: typer.Context,
    source: Annotated[str, typer.Option(help="run id or model file the attack is crafted on.")],
    targets: Annotated[
        list[str],
        typer.Option(help="run ids or model files to test on: --targets 4 5 6 (or 4,5,6)."),
    ],
    attack: Annotated[str, typer.Option(help="{evasion:transfer}.")] = "sgm",
    eps: EpsOpt = "8/255",
    steps: Annotated[int, typer.Option(help="attack iterations.")] = 10,
    gamma: Annotated[float, typer.Option(help="SGM's residual-gradient decay.")] = 0.2,
    dataset: Annotated[str | None, typer.Option(help="default: the source run's dataset.")] = None,
    data_root: DataRootOpt = None,
    n: NOpt = 1000,
    name: Annotated[str | None, typer.Option(help="a name for the stored run.")] = None,
    device: DeviceOpt = "auto",
    seed: SeedOpt = 0,
) -> None:
    """Craft adversarial examples on SOURCE and report their success rate on each target.

    A target's rate counts the points that the source and that target both classify correctly;
    the result is stored as a run (kind transfer).
    """
    from trustlab.workflows.transfer import run_transfer, transfer_output

    extra = [a for a in ctx.args if a.startswith("-")]
    if extra:
        raise InputError(f"unknown option {extra[0]!r}; see trustlab transfer --help.")
    refs = [r for t in [*targets, *ctx.args] for r in t.split(",") if r]
    run, report = run_transfer(
        source, refs, attack, eps, steps, gamma, dataset, data_root, n, name, device, seed
    )
    typer.echo(json.dumps(transfer_output(run, report)))
