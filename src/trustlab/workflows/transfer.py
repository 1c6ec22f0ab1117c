"""A stored transfer-attack run: craft adversarial examples on a source model, measure them on
target models (``trustlab transfer``).

:func:`run_transfer` validates everything (the attack among the evasion attacks registered with
``transfer=True``, the number of steps, the source, its data and every target) before it creates
the run; the run (kind ``transfer``) stores ``transfer.json`` (:func:`transfer_output`) and its
summary holds ``mean_success`` and ``source_success``. The success rate on a target is measured
on the points that the source and that target both classify correctly
(:func:`trustlab.attacks.evasion.evaluate_transfer`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn

from trustlab.attacks.evasion import TransferReport, evaluate_transfer, make_attack
from trustlab.errors import InputError
from trustlab.registry import EVASION
from trustlab.results import Run, RunStore, recording_outcome
from trustlab.train.trainer import check_model_fits
from trustlab.utils.io import write_json_atomic
from trustlab.workflows.targets import load_target, load_target_model

__all__ = ["KIND", "run_transfer", "transfer_output"]

KIND = "transfer"


def transfer_output(run: Run, report: TransferReport) -> dict[str, Any]:
    """What ``transfer.json`` holds (and ``trustlab transfer`` prints): the run id, the attack,
    its ``eps`` as given, and :meth:`TransferReport.to_dict`."""
    return {
        "run": run.id,
        "attack": run.config["attack"],
        "eps": run.config["eps"],
        **report.to_dict(),
    }


def run_transfer(
    source: str,
    targets: Sequence[str],
    attack: str = "sgm",
    eps: float | str = "8/255",
    steps: int = 10,
    gamma: float = 0.2,
    dataset: str | None = None,
    data_root: str | None = None,
    n: int = 1000,
    name: str | None = None,
    device: str = "auto",
    seed: int = 0,
    store: RunStore | None = None,
) -> tuple[Run, TransferReport]:
    """Craft ``attack`` on ``source`` and measure its success rate on every target; stored as
    a run.

    Args:
        source: the run id or model file the attack is crafted on.
        targets: run ids or model files to test on (each once).
        attack: an evasion attack registered with ``transfer=True`` (``pgd``, ``mifgsm``,
            ``difgsm``, ``sgm``, ``sgm-mi``, ``sgm-mi-di``).
        eps: the L-inf radius (``0.03`` or ``"8/255"``).
        steps: attack iterations (>= 1).
        gamma: the residual-gradient decay of the attacks that take one (SGM's); recorded as
            ``None`` for the others.
        dataset, data_root: the data (default: the source run's).
        n: the number of test points.
        name: a label for the stored run (default ``transfer-<attack>``).
        device: ``auto`` (CUDA when available), ``cpu``, ``cuda`` or ``cuda:N``.
        seed: seeds the attack.
        store: the results store (default ``$TRUSTLAB_HOME``).

    Returns:
        ``(run, report)``: the finished ``transfer`` run and the :class:`TransferReport`.
    """
    store = store or RunStore()
    refs = list(targets)
    allowed = EVASION.names(transfer=True)
    if attack not in allowed:
        raise InputError(f"unknown transfer attack {attack!r}; use one of {', '.join(allowed)}.")
    if steps < 1:
        raise InputError(f"--steps must be >= 1, got {steps}.")
    src, data, dev = load_target(source, dataset, data_root, n, device, store=store)
    models: dict[str, nn.Module] = {}
    for ref in refs:
        if ref in models:
            raise InputError(f"target {ref!r} is given twice.")
        models[ref] = load_target_model(ref, dev, store=store)[0]
        check_model_fits(models[ref], data, device=dev)
    takes_gamma = "gamma" in EVASION.get(attack).parameters()
    kwargs: dict[str, Any] = {"steps": steps, "seed": seed}
    if takes_gamma:
        kwargs["gamma"] = gamma
    atk = make_attack(attack, src, eps, **kwargs)
    config = {
        "source": source, "targets": refs, "attack": attack, "eps": eps, "steps": steps,
        "gamma": gamma if takes_gamma else None, "dataset": data.name, "n": len(data),
        "seed": seed,
    }  # fmt: skip
    run = store.create_run(KIND, name or f"transfer-{attack}", config, seed=seed)
    with recording_outcome(run):
        report = evaluate_transfer(src, models, data, atk, device=dev)
        write_json_atomic(run.artifact_path("transfer.json"), transfer_output(run, report))
        run.add_artifact("transfer.json")
        run.finish({"mean_success": report.mean_success(), "source_success": report.source_success})
    return run.refresh(), report
