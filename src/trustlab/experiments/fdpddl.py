"""Reproduction ``fdpddl``: fairness and accuracy of FDPDDL in three settings.

Paper: Lyu, Li, Nandakumar, Yu, Ma, "How to democratise and protect AI: fair and differentially
private decentralised deep learning", IEEE TDSC 2020 (arXiv:2007.09370); the protocol is
:mod:`trustlab.collab` (see its docstrings and ``docs/collaborative.md`` for where it follows
the paper and where the authors' public code).

One job per setting (``balanced``, ``imbalanced-size``, ``imbalanced-class``) and seed. A job
runs FDPDDL (:func:`~trustlab.collab.runner.run_fdpddl`, in one process) and its three baselines
(:mod:`trustlab.collab.baselines`) with the same seed:

- ``standalone``: each party alone for as many local epochs as it runs in FDPDDL (pre-training
  plus every round), with the same DP-SGD; its accuracy is the party's *contribution*;
- ``centralised``: one DP-SGD model on the union of the shards;
- ``distributed``: DSSGD (Shokri and Shmatikov, CCS 2015) with the same sharing level.

Metrics per row: ``fairness`` (Pearson r between the parties' standalone and final accuracies),
``fairness_size`` (r between data sizes and final accuracies, undefined where the shards are
equal), ``mean_final`` / ``mean_standalone`` accuracy, ``min_gain`` (the smallest final minus
standalone accuracy over the parties), ``distributed`` and ``centralised`` accuracy,
``max_epsilon`` (the largest per-party epsilon: DP-SGD plus DPGAN, composed by addition), the
number of ``expelled`` parties, and per party ``p<i>_standalone`` / ``p<i>_final`` /
``p<i>_epsilon``. Each job also leaves its accuracy-and-credibility plot in the run's ``work/``
folder (``<setting>-seed<k>.png``).

Claims (methods.md): in all three settings (1) fairness r >= 0.8, (2) every party's final
accuracy >= its standalone accuracy, (3) the mean final accuracy within 5 points of the
distributed baseline, (4) every party's epsilon reported (finite). Claims 1-3 are one number per
seed and setting, judged in each setting on its mean over seeds with the 95% bootstrap interval
(PASS when the whole interval is on the claimed side of the bar, FAIL when none of it is,
INCONCLUSIVE when it straddles the bar; one seed gives no interval and the value decides), and
a claim holds when it passes in all three settings (FAIL if it fails in any, else
INCONCLUSIVE): (1) the fairness r (>= 0.8), (2) the smallest gain over the parties, final minus
standalone accuracy (>= 0), (3) the mean final accuracy minus the distributed baseline's on the
same seed (>= -5 points). Claim 4 is a yes/no fact of every run (each seed's largest epsilon
finite), with no bar to estimate, so it stays PASS or FAIL without an interval. Each detail
shows every seed's value.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import torch

from trustlab.collab import baselines
from trustlab.collab.runner import run_fdpddl
from trustlab.collab.settings import SETTINGS, CollabSettings, load_data
from trustlab.experiments.base import (
    Claim,
    Experiment,
    Preset,
    ResultTable,
    all_of,
    interval_check,
    register_experiment,
)
from trustlab.metrics.fairness import pearson


def _per_setting(t: ResultTable, metric: str) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for row in t.rows:
        out.setdefault(row["setting"], []).append(float(row[metric]))
    return out


def _fmt(vals: list[float], scale: float = 1.0, digits: int = 2) -> str:
    return "/".join("nan" if math.isnan(v) else f"{v * scale:.{digits}f}" for v in vals)


def _per_seed(
    setting: str, value: Callable[[dict[str, Any]], float]
) -> Callable[[ResultTable], dict[int, float]]:
    """``{seed: value(row)}`` of the rows of ``setting``."""

    def values(t: ResultTable) -> dict[int, float]:
        return {int(r.get("seed", 0)): value(r) for r in t.rows if r["setting"] == setting}

    return values


def _in_all_settings(
    value: Callable[[dict[str, Any]], float], op: str, threshold: float, what: str, **fmt: Any
) -> Callable[[ResultTable], tuple[str, str]]:
    """The claim ``value(row) OP threshold`` judged per setting on the mean over seeds with its
    95% interval, and holding in all of :data:`SETTINGS` (:func:`all_of`: a setting without rows
    has no values and is INCONCLUSIVE)."""
    return all_of(
        *(interval_check(_per_seed(s, value), op, threshold, what=f"{s}: {what}", **fmt)
          for s in SETTINGS)
    )  # fmt: skip


_fair = _in_all_settings(lambda r: float(r["fairness"]), ">=", 0.8, "fairness r")
_no_loss = _in_all_settings(
    lambda r: float(r["min_gain"]), ">=", 0.0, "smallest gain over the parties",
    scale=100, unit=" points", digits=1,
)  # fmt: skip
_near_distributed = _in_all_settings(
    lambda r: float(r["mean_final"]) - float(r["distributed"]), ">=", -0.05,
    "mean final accuracy - DSSGD's", scale=100, unit=" points", digits=1,
)  # fmt: skip


def _eps(t: ResultTable) -> tuple[bool, str]:
    """Every party's epsilon finite in every seed: a yes/no fact of each run, not an estimate
    with a bar, so it has no interval."""
    by = _per_setting(t, "max_epsilon")
    ok = bool(by) and all(math.isfinite(v) for vals in by.values() for v in vals)
    return ok, "; ".join(f"{s}: largest epsilon {_fmt(v)}" for s, v in by.items())


_QUICK = Preset(
    "quick",
    "digits",
    "mlp",
    seeds=3,
    options={
        "parties": 4,
        "rounds": 20,
        "pretrain_epochs": 5,
        "local_epochs": 1,
        "batch_size": 64,
        "lr": 0.3,
        "update_clip": 0.01,
    },  # fmt: skip
    description="minutes on 2 CPU cores: 4 parties on all 1,437 digits, 5 epochs of "
    "pre-training, 20 rounds of 1 local epoch, DP-SGD sigma 1, DPGAN epsilon 4",
)


@register_experiment
class FDPDDLReproduction(Experiment):
    """Fairness and accuracy of FDPDDL in three settings (module docstring).

    Lyu et al., IEEE TDSC 2020 (arXiv:2007.09370). Rows: one per setting; options of a preset:
    the fields of :class:`~trustlab.collab.settings.CollabSettings` (except ``setting`` and
    ``dataset``/``model``, which come from the preset).

    Example::

        trustlab reproduce fdpddl --preset quick
    """

    name = "fdpddl"
    title = "FDPDDL: fair and differentially private decentralised learning"
    paper = (
        "Lyu, Li, Nandakumar, Yu, Ma. How to democratise and protect AI: fair and "
        "differentially private decentralised deep learning. IEEE TDSC 2020."
    )
    keys = ("setting",)
    metrics = (
        "fairness",
        "fairness_size",
        "mean_standalone",
        "mean_final",
        "min_gain",
        "distributed",
        "centralised",
        "max_epsilon",
        "expelled",
    )
    percent = ("mean_standalone", "mean_final", "min_gain", "distributed", "centralised")
    claims = (
        Claim("fairness", "fairness r >= 0.8 in all three settings", _fair),
        Claim(
            "no-party-loses",
            "every party's final accuracy >= its standalone accuracy, in all three settings "
            "(the smallest gain over the parties >= 0)",
            _no_loss,
        ),
        Claim(
            "near-distributed",
            "mean accuracy within 5 points of the distributed (DSSGD) baseline (at most 5 "
            "points below it), in all three settings",
            _near_distributed,
        ),
        Claim(
            "epsilon-reported",
            "each party's epsilon reported (finite in every seed; a yes/no fact, no interval)",
            _eps,
        ),
    )
    presets = {
        "smoke": Preset(
            "smoke",
            "digits",
            "mlp",
            seeds=1,
            options={
                "parties": 3,
                "samples": 300,
                "rounds": 2,
                "pretrain_epochs": 1,
                "local_epochs": 1,
                "batch_size": 32,
                "lr": 0.15,
                "update_clip": 0.01,
                "dpgan": {"epochs": 1, "epsilon": 4.0},
                "benchmark": 10,
            },  # fmt: skip
            description="seconds: 3 parties on 300 digits, 2 rounds",
        ),
        "quick": _QUICK,
        "real": replace(
            _QUICK,
            name="real",
            dataset="fashion-mnist",
            options={**_QUICK.options, "samples": 2400},
            description="sized for under 30 minutes on 2 CPU cores: "
            "the authors' data (4 parties, 2,400 "
            "real Fashion-MNIST images) with the quick preset's schedule (5 epochs of "
            "pre-training, 20 rounds of 1 local epoch, DP-SGD sigma 1, DPGAN epsilon 4)",
        ),
        "full": Preset(
            "full",
            "fashion-mnist",
            "mlp",
            seeds=3,
            options={"parties": 4, "samples": 2400},
            description="the authors' setting on Fashion-MNIST: 4 parties with 600 images each "
            "on average, 10 epochs of pre-training, 100 rounds of 5 local epochs, batch 10, "
            "lr 0.15, sharing 0.1 (hours on a CPU)",
        ),
    }

    def settings(self, preset: Preset, setting: str) -> CollabSettings:
        opts = {k: v for k, v in preset.options.items() if k != "data_root"}
        return CollabSettings.parse(
            opts,
            setting=setting,
            dataset=preset.dataset,
            model=preset.model,
            data_root=preset.options.get("data_root"),
        )

    def jobs(self, preset: Preset) -> list[dict[str, Any]]:
        return [{"setting": s} for s in SETTINGS]

    def check(self, preset: Preset) -> None:
        super().check(preset)
        for s in SETTINGS:
            self.settings(preset, s)

    def describe(self, preset: Preset) -> dict[str, Any]:
        return {"collab": self.settings(preset, "balanced").model_dump(mode="json")}

    def run_job(
        self, preset: Preset, job: dict[str, Any], seed: int, device: torch.device
    ) -> dict[str, float]:
        s = self.settings(preset, job["setting"])
        data = load_data(s)
        result = run_fdpddl(s, seed, "in-process", device, data=data)
        alone = baselines.standalone(s, seed, device, data)
        dist = baselines.distributed(s, seed, device, data)
        central = baselines.centralised(s, seed, device, data)
        rows = result.rows()
        final = [r["final_accuracy"] for r in rows]
        sizes = [r["samples"] for r in rows]
        if self.workdir is not None:
            result.plot(self.work_path(f"{job['setting']}-seed{seed}.png"))
        out: dict[str, float] = {
            "fairness": pearson(alone, final),
            "fairness_size": pearson(sizes, final),
            "mean_standalone": sum(alone) / len(alone),
            "mean_final": sum(final) / len(final),
            "min_gain": min(f - a for f, a in zip(final, alone, strict=True)),
            "distributed": dist,
            "centralised": central,
            "max_epsilon": max(r["epsilon"] for r in rows),
            "expelled": float(len(result.ledger.expelled)),
        }
        for r, a in zip(rows, alone, strict=True):
            i = r["party"]
            out[f"p{i}_standalone"] = a
            out[f"p{i}_final"] = r["final_accuracy"]
            out[f"p{i}_epsilon"] = r["epsilon"]
            out[f"p{i}_samples"] = float(r["samples"])
        return out


__all__ = ["FDPDDLReproduction"]
