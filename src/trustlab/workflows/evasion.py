"""Stored evasion runs: one attack, a suite, AdvCam and adversarial-example detection on a model
(``trustlab attack``, ``evaluate``, ``advcam``, ``detect``).

Each function validates everything (the model reference, its data, the attack or detector by
its card) before it creates the run, then stores the result (``<kind>.json``, the numbers the
command prints) and a picture where there is one (``examples.png``: clean, adversarial,
difference), and finishes the run with the headline numbers as its summary, so that every result
can be listed (``trustlab runs``), shown and reported later.

- :func:`run_attack` (kind ``attack``): robust accuracy under one registered evasion attack;
- :func:`run_evaluate` (kind ``evaluate``): the worst case over a registered suite (a cascade);
- :func:`run_advcam` (kind ``advcam``): AdvCam's camouflaged examples and their success;
- :func:`run_detect` (kind ``detect``): detection ROC-AUC of a registered detector.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from trustlab.errors import InputError
from trustlab.registry import DETECTORS, EVASION, SUITES
from trustlab.results import Run, RunStore, recording_outcome
from trustlab.utils.io import write_json_atomic
from trustlab.workflows.targets import load_target

__all__ = ["SANITY_POINTS", "run_advcam", "run_attack", "run_detect", "run_evaluate"]

#: how many test points ``run_evaluate``'s sanity checks look at (AutoAttack: one batch)
SANITY_POINTS = 64


def _finish(
    run: Run, kind: str, out: dict[str, Any], summary: dict[str, Any], png: Path | None = None
) -> None:
    write_json_atomic(run.artifact_path(f"{kind}.json"), out)
    run.add_artifact(f"{kind}.json")
    if png is not None:
        run.add_artifact(png.name, kind="plot")
    run.finish(summary)


def _copy_png(src: Path, dest: str | Path | None) -> None:
    """The run's picture, also where the user asked for it (``--png``)."""
    if dest is not None:
        Path(dest).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dest)


def run_attack(
    target: str,
    attack: str = "pgd",
    eps: float | str = "8/255",
    dataset: str | None = None,
    data_root: str | None = None,
    n: int = 1000,
    png: str | Path | None = None,
    device: str = "auto",
    seed: int = 0,
    name: str | None = None,
    store: RunStore | None = None,
    progress: bool = False,
    options: Mapping[str, Any] | None = None,
) -> tuple[Run, dict[str, Any]]:
    """Robust accuracy of ``target`` (a run id or a model file) under the registered evasion
    attack ``attack`` at ``eps`` on ``n`` test points; stored as an ``attack`` run with
    ``attack.json`` and ``examples.png`` (copied to ``png`` if given). Returns ``(run, out)``,
    ``out`` being what ``attack.json`` holds. ``progress``: a bar over the batches (only on a
    terminal). ``options``: the attack's parameters besides ``eps`` (e.g. ``{"norm": "l2"}``
    for Square or FAB-T, ``{"steps": 50}``; ``trustlab list evasion`` shows them)."""
    from trustlab.attacks.evasion import evaluate_robustness
    from trustlab.attacks.evasion.grid import save_grid
    from trustlab.attacks.evasion.suite import make_attack

    seeded = "seed" in EVASION.get(attack).parameters()  # an unknown name: the registry's error
    model, data, dev = load_target(target, dataset, data_root, n, device, store=store)
    options = dict(options or {})
    atk = make_attack(attack, model, eps, **{**({"seed": seed} if seeded else {}), **options})
    config = {"target": str(target), "attack": attack, "eps": str(eps), "dataset": data.name,
              "n": len(data), "seed": seed}  # fmt: skip
    if options:
        config["options"] = options
    run = (store or RunStore()).create_run("attack", name or f"attack-{attack}", config, seed=seed)
    with recording_outcome(run):
        rep = evaluate_robustness(model, data, {attack: atk}, device=dev, progress=progress)
        out = {"attack": attack, "eps": eps, **rep.to_dict()}
        k = min(8, len(data))
        x, y = data.x[:k].to(dev), data.y[:k].to(dev)
        adv = atk(x, y)  # the picture's first k points, attacked again (the cascade keeps none)
        with torch.no_grad():
            preds = (model(x).argmax(1).cpu(), model(adv).argmax(1).cpu())
        picture = save_grid(
            run.artifact_path("examples.png"), x, adv, title=f"{attack}, eps {eps}",
            predictions=preds, classes=data.classes,
        )  # fmt: skip
        _copy_png(picture, png)
        summary = {"clean_accuracy": rep.clean_accuracy, "robust_accuracy": rep.robust_accuracy}
        _finish(run, "attack", out, summary, picture)
    return run, out


def run_evaluate(
    target: str,
    suite: str = "quick",
    eps: float | str = "8/255",
    dataset: str | None = None,
    data_root: str | None = None,
    n: int = 1000,
    device: str = "auto",
    seed: int = 0,
    name: str | None = None,
    store: RunStore | None = None,
    progress: bool = False,
) -> tuple[Run, dict[str, Any]]:
    """The worst-case robust accuracy of ``target`` over the registered suite ``suite`` (a
    cascade, as AutoAttack reports it); stored as an ``evaluate`` run with ``evaluate.json``.

    Before the attacks, AutoAttack-style sanity checks
    (:func:`trustlab.attacks.evasion.sanity.sanity_checks`) run on the first
    :data:`SANITY_POINTS` points; their findings (dicts with ``check``, ``ok``, ``message``,
    ``value``; ``ok`` false for a warning) are stored as ``"sanity"`` in ``evaluate.json`` and
    in the run's summary. ``progress``: a bar over each attack's batches (only on a terminal).
    """
    from trustlab.attacks.evasion import evaluate_robustness
    from trustlab.attacks.evasion.sanity import sanity_checks
    from trustlab.attacks.evasion.suite import make_suite

    SUITES.get(suite)  # an unknown name: the registry's error, before anything is loaded
    model, data, dev = load_target(target, dataset, data_root, n, device, store=store)
    attacks = make_suite(suite, model, eps)
    config = {"target": str(target), "suite": suite, "eps": str(eps), "dataset": data.name,
              "n": len(data), "seed": seed}  # fmt: skip
    run = (store or RunStore()).create_run("evaluate", name or f"evaluate-{suite}", config, seed)
    with recording_outcome(run):
        k = min(SANITY_POINTS, len(data))
        findings = sanity_checks(model, data.x[:k].to(dev), data.y[:k].to(dev))
        sanity = [f.to_dict() for f in findings]
        rep = evaluate_robustness(model, data, attacks, device=dev, progress=progress)
        out = {"suite": suite, "eps": eps, **rep.to_dict(), "sanity": sanity}
        summary = {"clean_accuracy": rep.clean_accuracy, "robust_accuracy": rep.robust_accuracy,
                   "sanity": sanity}  # fmt: skip
        _finish(run, "evaluate", out, summary)
    return run, out


def run_advcam(
    target: str,
    png: str | Path | None = None,
    style: str = "chelsea",
    region: float = 0.6,
    steps: int = 300,
    target_class: int | None = None,
    eot: bool = False,
    style_layers: str | None = None,
    content_layer: str | None = None,
    dataset: str | None = None,
    data_root: str | None = None,
    n: int = 8,
    device: str = "auto",
    seed: int = 0,
    name: str | None = None,
    store: RunStore | None = None,
) -> tuple[Run, dict[str, Any]]:
    """AdvCam on ``n`` test images of ``target``: camouflaged examples in the style of
    ``style`` inside the central ``region``; stored as an ``advcam`` run with ``advcam.json`` and
    ``examples.png`` (original, camouflaged, difference; copied to ``png`` if given)."""
    from trustlab.attacks.evasion.advcam import AdvCam, central_mask, style_image
    from trustlab.attacks.evasion.grid import save_grid

    central_mask((1, 1), region)  # refuses a region outside (0, 1] before loading anything
    model, data, dev = load_target(target, dataset, data_root, n, device, store=store)
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
        style_layers=[s for s in style_layers.split(",") if s] if style_layers else None,
    )  # fmt: skip
    config = {"target": str(target), "style": style, "region": region, "steps": steps,
              "target_class": target_class, "eot": eot, "dataset": data.name, "n": len(data),
              "seed": seed}  # fmt: skip
    run = (store or RunStore()).create_run("advcam", name or f"advcam-{style}", config, seed)
    with recording_outcome(run):
        adv = atk(x, y, goal)
        with torch.no_grad():
            pred = model(adv).argmax(1)
            before = model(x).argmax(1).cpu()
        hit = pred == goal if goal is not None else pred != y
        picture = save_grid(
            run.artifact_path("examples.png"), x, adv, labels=("original", "camouflaged"),
            title=f"AdvCam{' + EOT' if eot else ''}: style {style}, central region {region:g}",
            predictions=(before, pred.cpu()), classes=data.classes,
        )  # fmt: skip
        _copy_png(picture, png)
        out = {
            "success": float(hit.float().mean()),
            "style_loss": float(atk.style_loss(adv).mean()),
            "style_loss_clean": float(atk.style_loss(x).mean()),
            "n": len(x),
            "png": str(png) if png is not None else str(picture),
        }
        _finish(run, "advcam", out, {"success": out["success"]}, picture)
    return run, out


def run_detect(
    target: str,
    detector: str = "lid",
    attack: str = "pgd",
    eps: float | str = "8/255",
    transfer_attack: str | None = None,
    classifier: str = "lr",
    splits: int = 3,
    dataset: str | None = None,
    data_root: str | None = None,
    n: int = 1000,
    device: str = "auto",
    seed: int = 0,
    name: str | None = None,
    store: RunStore | None = None,
) -> tuple[Run, dict[str, Any]]:
    """Detection ROC-AUC of the registered ``detector`` against ``attack``'s successful
    examples (vs clean and noise-matched inputs, per random 80/20 split and the mean), optionally
    tested on ``transfer_attack``'s; stored as a ``detect`` run with ``detect.json``."""
    from trustlab.attacks.evasion.suite import make_attack
    from trustlab.defenses.detection import build_detection_set, evaluate_detector, make_detector

    card = DETECTORS.get(detector)  # an unknown name: the registry's error
    model, data, dev = load_target(target, dataset, data_root, n, device, store=store)
    train = None
    if card.meta.get("needs_train"):  # KD+BU fits its densities on the training split
        from trustlab.data import load_dataset

        train = load_dataset(data.name, "train", root=data_root)
    det = make_detector(detector, model, train=train, classifier=classifier, seed=seed)
    main_attack = make_attack(attack, model, eps)
    other_attack = make_attack(transfer_attack, model, eps) if transfer_attack else None
    x, y = data.x.to(dev), data.y.to(dev)
    sets = build_detection_set(model, x, y, main_attack, seed=seed)  # refuses a weak attack
    other = None
    if other_attack is not None:  # also refused before the run exists
        other = build_detection_set(model, x, y, other_attack, seed=seed)
    config = {"target": str(target), "detector": detector, "attack": attack, "eps": str(eps),
              "transfer_attack": transfer_attack, "classifier": classifier, "splits": splits,
              "dataset": data.name, "n": len(data), "seed": seed}  # fmt: skip
    run = (store or RunStore()).create_run("detect", name or f"detect-{detector}", config, seed)
    with recording_outcome(run):
        rep = evaluate_detector(det, sets, splits=splits, seed=seed, transfer_to=other)
        out = {"attack": attack, "eps": eps, "tested_on": transfer_attack or attack,
               **rep.to_dict()}  # fmt: skip
        _finish(run, "detect", out, {"mean_auc": rep.mean_auc})
    return run, out
