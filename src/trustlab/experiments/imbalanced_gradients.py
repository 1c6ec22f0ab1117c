"""Reproduction ``md``: Ma et al., "Imbalanced Gradients: A Subtle Cause of Overestimated
Adversarial Robustness" (the Margin Decomposition attack).

Four models are trained on the same data: standard (CE), PGD adversarial training (Madry),
label smoothing (LS, 0.5) and PGD-AT with label smoothing. Each is evaluated on the first ``n``
test points under PGD-20 (CE, L-inf, step eps/4) and under MD (50 steps, switch at 20,
2 restarts, the paper's defaults), at the same eps, and the imbalanced-gradient diagnostic
(the median over the correctly classified points of ``max(r, 1/r)``, ``r`` the ratio of the
gradient norms of the two margin terms, :func:`trustlab.attacks.evasion.md.imbalance_ratio`;
the median because a vanishing gradient makes single ratios explode) is recorded.

Claims (the design's methods page): for every model MD robust accuracy <= PGD-20's + 0.5; on the
label-smoothing models MD is at least 3 points lower than PGD; the diagnostic ranks the
label-smoothing models as the most imbalanced. "The label-smoothing model" is judged as both
LS alone and PGD-AT + LS: the paper's label-smoothing defenses (the Feature Scattering and
Adversarial Interpolation checkpoints the authors' code, HanxunH/MDAttack ``defense/``, loads;
both were trained adversarially with label smoothing 0.5 in their own code) are adversarially
trained, and LS alone shows what label smoothing does by itself.

The first two are judged on one number per seed (every model of a seed is evaluated on the same
points), by its mean over seeds and 95% bootstrap interval: PASS when the whole interval is on
the claimed side of the threshold, FAIL when none of it is, INCONCLUSIVE when it straddles it
(one seed: no interval, the verdict is on the value). The first: for each model, MD robust
accuracy - PGD-20's <= +0.5 points, all models together (FAIL if one fails, PASS if all pass).
The second: PGD-20 - MD >= 3 points on the LS model and on the PGD-AT + LS model, both together.
The third, the ranking, is judged the same way on paired differences: for each
label-smoothing model and each model without label smoothing, diagnostic(LS model) -
diagnostic(other) per seed > 0, all four pairs together (so the most imbalanced model is a
label-smoothing one); a near-tie whose interval straddles 0 is INCONCLUSIVE, not a FAIL.

Presets. The paper (and the authors' ``main.py``) evaluates CIFAR-10 models at eps 8/255: that
is the ``full`` preset. ``quick`` is digits (16x16 grey) with ``cnn-small`` at eps 0.1, the
smaller of the two L-inf radii MNIST papers use (0.1, e.g. Wong & Kolter 2018; 0.3, Madry et al.
2018), so that every model has PGD robustness for MD to overestimate: at 0.3 the models without
adversarial training are at 0.0% under both attacks (10 epochs, seed 0). On
shapes10 at 8/255 (the earlier quick preset) LS alone had 0.2% PGD robustness, so its claim
could not be shown; on digits at eps 0.1 (10 epochs, seed 0, 360 points) LS alone has PGD
47.8% vs MD 36.4% and PGD-AT + LS 78.9% vs 69.2%. ``real`` is the same design on real
Fashion-MNIST: ``cnn-small`` at eps 0.1 on a fixed stratified subset of 4,000 training images,
10 epochs, the first 500 test points, 3 seeds.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from trustlab.attacks.evasion.md import MD, imbalance_ratio
from trustlab.attacks.evasion.pgd import PGD
from trustlab.experiments.base import (
    Claim,
    Experiment,
    Preset,
    ResultTable,
    all_of,
    interval_check,
    noted,
    paired,
    register_experiment,
)
from trustlab.models.spec import ModelSpec
from trustlab.robust.adversarial import PGDTraining
from trustlab.train import Trainer, TrainSettings
from trustlab.utils.seed import derive_seed

#: the rows of the table (its "model" key), in order
ROWS = ("standard", "pgd-at", "ls", "pgd-at+ls")
LS = 0.5


def _md_minus_pgd(model: str) -> Callable[[ResultTable], dict[int, float]]:
    """``{seed: MD robust accuracy - PGD-20's}`` on ``model`` (< 0: MD finds more)."""
    return lambda t: paired(t.per_seed("md_acc", model=model), t.per_seed("pgd_acc", model=model))


def _pgd_minus_md(model: str) -> Callable[[ResultTable], dict[int, float]]:
    """``{seed: PGD-20 robust accuracy - MD's}`` on ``model`` (the overestimate MD reveals)."""
    return lambda t: paired(t.per_seed("pgd_acc", model=model), t.per_seed("md_acc", model=model))


def _md_not_above_pgd(t: ResultTable) -> tuple[str, str]:
    """For every model present: MD - PGD-20 per seed <= +0.5 points (1e-9: rounding slack)."""
    checks = [
        interval_check(
            _md_minus_pgd(m), "<=", 0.005 + 1e-9, what=f"{m} MD - PGD", scale=100,
            unit=" pts", digits=1,
        )
        for m in ROWS
        if t.has(model=m)
    ]  # fmt: skip
    return all_of(*checks)(t)


#: the label-smoothing models and how the details name them
LS_MODELS = {"ls": "LS model", "pgd-at+ls": "PGD-AT+LS"}


def _gap_with_means(model: str) -> Callable[[ResultTable], tuple[str, str]]:
    """PGD-20 - MD per seed on ``model`` >= 3 points (1e-9: rounding slack), its means shown."""
    gap = interval_check(
        _pgd_minus_md(model), ">=", 0.03 - 1e-9, what=f"{LS_MODELS[model]} PGD - MD",
        scale=100, unit=" pts", digits=1,
    )  # fmt: skip

    def means(t: ResultTable) -> str:
        pgd, md = t.mean("pgd_acc", model=model), t.mean("md_acc", model=model)
        return f"means: PGD {100 * pgd:.1f}, MD {100 * md:.1f}"

    return lambda t: noted(gap, means)(t) if t.has(model=model) else gap(t)


def _ls_gap(t: ResultTable) -> tuple[str, str]:
    """The gap on both label-smoothing models, LS alone and PGD-AT+LS (the paper's
    label-smoothing defenses are adversarially trained): FAIL if either fails."""
    return all_of(*(_gap_with_means(m) for m in LS_MODELS))(t)


def _diag_above(model: str, other: str) -> Callable[[ResultTable], dict[int, float]]:
    """``{seed: diagnostic(model) - diagnostic(other)}``: both evaluated on the seed's points."""
    return lambda t: paired(
        t.per_seed("imbalance", model=model), t.per_seed("imbalance", model=other)
    )


def _ls_most_imbalanced(t: ResultTable) -> tuple[str, str]:
    """Each label-smoothing model's diagnostic is above each other model's: one paired
    difference per seed for every (label-smoothing, other) pair, judged > 0 on its interval, all
    together (``all_of``), so the most imbalanced model is a label-smoothing one. The four
    means follow (3 digits: near-ties show)."""
    others = [m for m in ROWS if m not in LS_MODELS and t.has(model=m)]
    checks = [
        interval_check(
            _diag_above(m, o), ">", 0.0, what=f"{LS_MODELS[m]} - {o} diagnostic", digits=3
        )
        for m in LS_MODELS
        if t.has(model=m)
        for o in others
    ]
    if not checks:
        return "INCONCLUSIVE", "no label-smoothing model in the table"
    outcome, detail = all_of(*checks)(t)
    scores = {m: t.mean("imbalance", model=m) for m in ROWS if t.has(model=m)}
    top = max(scores, key=scores.__getitem__)
    shown = ", ".join(f"{m} {v:.3f}" for m, v in scores.items())
    return outcome, f"{detail}; means: {shown}; most imbalanced: {top}"


@register_experiment
class MDReproduction(Experiment):
    """Reproduction ``md``: PGD vs the Margin Decomposition attack on models whose gradients
    are imbalanced (see the module for the jobs, the claims and the presets).

    Ma, Jiang, Huang, Wang, Erfani, Bailey & Li, "Imbalanced Gradients: A Subtle Cause of
    Overestimated Adversarial Robustness", Machine Learning 2023 (arXiv:2006.13726).

    Presets: ``smoke`` (seconds, in the test suite), ``quick`` (digits, cnn-small, eps 0.1,
    3 seeds; about 7 minutes on 2 free CPU cores), ``real`` (Fashion-MNIST, cnn-small, eps 0.1),
    ``full`` (CIFAR-10, WRN-16-4, eps 8/255). Table
    keys ``model``; metrics ``clean_acc``, ``pgd_acc``, ``md_acc``, ``imbalance``.

    Example::

        trustlab reproduce md --preset smoke
        reproduce("md", "smoke")  # trustlab.experiments.base.reproduce
    """

    name = "md"
    title = "Imbalanced gradients and the Margin Decomposition attack"
    paper = (
        "Ma, Jiang, Huang, Wang, Erfani, Bailey, Li. Imbalanced Gradients: A Subtle Cause "
        "of Overestimated Adversarial Robustness. Machine Learning, 2023."
    )
    keys = ("model",)
    metrics = ("clean_acc", "pgd_acc", "md_acc", "imbalance")
    percent = ("clean_acc", "pgd_acc", "md_acc")
    claims = (
        Claim(
            "md-not-weaker",
            "for every model MD robust accuracy <= PGD-20 robust accuracy + 0.5",
            _md_not_above_pgd,
        ),
        Claim(
            "ls-gap",
            "on both label-smoothing models (LS alone, PGD-AT + LS) MD is at least 3 points "
            "lower than PGD",
            _ls_gap,
        ),
        Claim(
            "ls-most-imbalanced",
            "the diagnostic ranks the label-smoothing models (LS alone, PGD-AT + LS) above "
            "the others, so the most imbalanced",
            _ls_most_imbalanced,
        ),
    )
    presets = {
        "smoke": Preset(
            "smoke",
            "digits",
            "mlp",
            seeds=1,
            train=dict(epochs=3, lr=0.05, batch_size=64),
            options={"eps": 8 / 255, "n": 64, "adv_steps": 3, "md_steps": 10, "md_switch": 4},
            description="seconds: 4 tiny MLPs on digits, short attacks",
        ),
        "quick": Preset(
            "quick",
            "digits",
            "cnn-small",
            seeds=3,
            train=dict(epochs=30, lr=0.05, batch_size=64),
            options={"eps": 0.1, "n": 360, "adv_steps": 7, "md_steps": 50, "md_switch": 20},
            description="about 7 minutes on 2 free CPU cores (13.5 CPU-minutes): 4 cnn-smalls "
            "on digits at eps 0.1 "
            "(30 epochs; PGD-AT with 7 steps of eps/4), the whole 360-point test split"
            "; 3 seeds: verdicts on 95% intervals",
        ),
        "real": Preset(
            "real",
            "fashion-mnist",
            "cnn-small",
            seeds=3,
            train=dict(epochs=10, lr=0.05, batch_size=64),
            options={
                "eps": 0.1,
                "n": 500,
                "adv_steps": 7,
                "md_steps": 50,
                "md_switch": 20,
                "train_size": 4000,
            },
            description="sized for under 30 minutes on 2 CPU cores (from the quick preset's "
            "CPU time): 4 cnn-smalls on real Fashion-MNIST at eps 0.1 (a fixed stratified "
            "subset of 4,000 training images, 10 epochs; PGD-AT with 7 steps of eps/4), the "
            "first 500 test points; 3 seeds",
        ),
        "full": Preset(
            "full",
            "cifar10",
            "wrn-16-4",
            seeds=1,
            train=dict(epochs=100, lr=0.1, batch_size=128, augment="crop-flip", schedule="step"),
            options={"eps": 8 / 255, "n": 10000, "adv_steps": 10, "md_steps": 50, "md_switch": 20},
            description="CIFAR-10, WRN-16-4, the full test set; needs the files",
        ),
    }

    def jobs(self, preset: Preset) -> list[dict[str, Any]]:
        return [{"model": m} for m in ROWS]

    def run_job(
        self, preset: Preset, job: dict[str, Any], seed: int, device: torch.device
    ) -> dict[str, float]:
        o = preset.options
        train = preset.load("train")
        test = preset.load("test").subset(range(o["n"]))
        torch.manual_seed(derive_seed(seed, "init"))
        model = ModelSpec.for_data(preset.model, train).build()
        kind = job["model"]
        ls = LS if kind.endswith("ls") else 0.0
        settings = TrainSettings(**{**preset.train, "seed": derive_seed(seed, "train")})
        compute_loss = None
        if kind.startswith("pgd-at"):
            eps = o["eps"]
            compute_loss = PGDTraining(eps, eps / 4, o["adv_steps"], label_smoothing=ls, seed=seed)
        else:
            settings = settings.model_copy(update={"label_smoothing": ls})
        Trainer(model, settings, compute_loss=compute_loss, device=device, progress=False).fit(
            train
        )
        model.eval()
        x, y = test.x.to(device), test.y.to(device)
        with torch.no_grad():
            clean = model(x).argmax(1) == y
        eps = o["eps"]
        pgd = PGD(model, eps, eps / 4, 20, seed=seed)(x, y)
        md = MD(model, eps, steps=o["md_steps"], switch=o["md_switch"], seed=seed)(x, y)
        with torch.no_grad():
            pgd_ok = clean & (model(pgd).argmax(1) == y)
            md_ok = clean & (model(md).argmax(1) == y)
        ratio = imbalance_ratio(model, x[clean], y[clean])
        return {
            "clean_acc": float(clean.float().mean()),
            "pgd_acc": float(pgd_ok.float().mean()),
            "md_acc": float(md_ok.float().mean()),
            "imbalance": float(ratio.float().median()) if ratio.numel() else float("nan"),
        }
