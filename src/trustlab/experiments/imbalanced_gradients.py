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
label-smoothing model MD is at least 3 points lower than PGD; the diagnostic ranks the
label-smoothing model as the most imbalanced.
"""

from __future__ import annotations

from typing import Any

import torch

from trustlab.attacks.evasion.md import MD, imbalance_ratio
from trustlab.attacks.evasion.pgd import PGD
from trustlab.experiments.base import Claim, Experiment, Preset, ResultTable, register_experiment
from trustlab.models.spec import ModelSpec
from trustlab.robust.adversarial import PGDTraining
from trustlab.train import Trainer, TrainSettings
from trustlab.utils.seed import derive_seed

#: the rows of the table (its "model" key), in order
ROWS = ("standard", "pgd-at", "ls", "pgd-at+ls")
LS = 0.5


def _md_not_above_pgd(t: ResultTable) -> tuple[bool, str]:
    ok, parts = True, []
    for m in ROWS:
        if t.has(model=m):
            pgd, md = t.mean("pgd_acc", model=m), t.mean("md_acc", model=m)
            ok &= md <= pgd + 0.005 + 1e-9
            parts.append(f"{m} MD {100 * md:.1f} vs PGD {100 * pgd:.1f}")
    return ok, "; ".join(parts)


def _ls_gap(t: ResultTable) -> tuple[bool, str]:
    pgd, md = t.mean("pgd_acc", model="ls"), t.mean("md_acc", model="ls")
    detail = f"LS model: PGD {100 * pgd:.1f}, MD {100 * md:.1f} ({100 * (md - pgd):+.1f})"
    if t.has(model="pgd-at+ls"):  # shown, not judged: the claim is about the LS model
        p2, m2 = t.mean("pgd_acc", model="pgd-at+ls"), t.mean("md_acc", model="pgd-at+ls")
        detail += f"; PGD-AT+LS: PGD {100 * p2:.1f}, MD {100 * m2:.1f} ({100 * (m2 - p2):+.1f})"
    return pgd - md >= 0.03 - 1e-9, detail


def _ls_most_imbalanced(t: ResultTable) -> tuple[bool, str]:
    scores = {m: t.mean("imbalance", model=m) for m in ROWS if t.has(model=m)}
    top = max(scores, key=scores.__getitem__)
    return top == "ls", ", ".join(f"{m} {v:.2f}" for m, v in scores.items())


@register_experiment
class MDReproduction(Experiment):
    """Reproduction ``md``: PGD vs the Margin Decomposition attack on models whose gradients
    are imbalanced (see the module for the jobs, the claims and the presets).

    Ma, Jiang, Huang, Wang, Erfani, Bailey & Li, "Imbalanced Gradients: A Subtle Cause of
    Overestimated Adversarial Robustness", Machine Learning 2023 (arXiv:2006.13726).

    Presets: ``smoke`` (seconds, in the test suite), ``quick`` (about 13 minutes on 2 CPU
    cores), ``full`` (CIFAR-10, WRN-16-4). Table keys ``model``; metrics ``clean_acc``, ``pgd_acc``,
    ``md_acc``, ``imbalance``.

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
            "ls-gap", "on the label-smoothing model MD is at least 3 points lower than PGD", _ls_gap
        ),
        Claim(
            "ls-most-imbalanced",
            "the diagnostic ranks the label-smoothing model as the most imbalanced",
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
            "shapes10",
            "resnet8",
            seeds=1,
            train=dict(
                epochs=5,
                lr=0.05,
                batch_size=64,
                nesterov=True,
                warmup_epochs=1,
                augment="flip",
            ),
            options={"eps": 8 / 255, "n": 500, "adv_steps": 7, "md_steps": 50, "md_switch": 20},
            description="about 13 minutes on 2 CPU cores: 4 ResNet-8s on shapes10 at 8/255, "
            "PGD-AT with Madry's 7 steps of 2/255",
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
