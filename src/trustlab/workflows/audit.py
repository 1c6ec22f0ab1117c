"""The audit of a user's model: one scorecard of clean accuracy, worst-case robustness, a backdoor
scan, membership inference and adversarial-input detection (``trustlab audit``).

:func:`audit` takes **any** ``nn.Module`` that maps ``[0, 1]`` images ``(N, C, H, W)`` to logits
``(N, K)`` (no zoo name needed) and a dataset (a registered name, an
:class:`~trustlab.data.ArrayDataset` or a map-style torch ``Dataset``: the data the model is
judged on, its test split for a name), runs the checks asked for and returns a
:class:`Scorecard`; :func:`scorecard_html` makes it one self-contained HTML page
(:mod:`trustlab.results.html`). :func:`run_audit` is what the command calls: it loads a stored
run, a trustlab checkpoint or a user's own weights, audits, and stores the run (kind ``audit``)
with ``scorecard.json`` and ``scorecard.html``.

Each check is its own function, with a fixed budget (:class:`Budget`: how many examples, steps
and epochs) that the scorecard states, and its own plot; every mechanism is trustlab's one copy:

- ``clean`` (:func:`check_clean`): accuracy on ``clean_n`` test examples and per class.
- ``robustness`` (:func:`check_robustness`): the worst case over the attack cascade
  (:func:`~trustlab.attacks.evasion.evaluate.evaluate_robustness`, suite ``quick``: PGD-20 then
  MD) at the dataset's default ``eps`` on ``robust_n`` examples, with the imbalanced-gradient
  diagnostic and the AutoAttack-style sanity checks
  (:func:`~trustlab.attacks.evasion.sanity.sanity_checks`) on ``sanity_n`` of them.
- ``backdoor`` (:func:`check_backdoor`): a Neural Cleanse scan
  (:class:`~trustlab.defenses.backdoor.neural_cleanse.NeuralCleanse`) of every class on
  ``nc_samples`` clean examples for at most ``nc_epochs`` epochs (a budgeted scan: lambda starts
  at 1e-3), with the flagged classes, the anomaly indices and the reversed triggers.
- ``privacy`` (:func:`check_privacy`): threshold membership-inference attacks (loss, confidence,
  prediction entropy) on ``privacy_n`` members of ``train_data`` vs as many test examples: AUC,
  TPR at 1% and 0.1% FPR, log-log ROC. LiRA too when a training recipe is given (``recipe=``, or
  the run's own config with ``trustlab audit RUN --shadows N``): it trains ``shadows`` shadow
  models with that recipe (each one training run), so it is never on by default.
- ``detection`` (:func:`check_detection`): ROC-AUC of the LID detector
  (:class:`~trustlab.defenses.detection.LIDDetector`, the evaluation protocol of
  :func:`~trustlab.defenses.detection.evaluate_detector`: 3 random 80/20 splits) on the
  successful PGD examples (``detect_steps`` steps) of ``detect_n`` test examples.

A check that cannot run on this model or data (no training data for ``privacy``, an attack too
weak to give detection examples) is ``skipped`` with the reason; one that raises is ``failed``
with the error; the other checks still run. Warnings (imbalanced gradients, failed sanity checks,
flagged classes, a membership leak, accuracy near chance) are collected in the scorecard.

Example::

    from trustlab import audit
    card = audit(my_model, "shapes10", train_data=my_train_set)
    card.summary(), card.warnings
    Path("scorecard.html").write_text(scorecard_html(card))
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from trustlab.data import ArrayDataset, load_dataset
from trustlab.data.datasets import as_array_dataset
from trustlab.errors import InputError
from trustlab.results import Run, RunStore, recording_outcome
from trustlab.utils.device import resolve_device, single_threaded
from trustlab.utils.io import write_json_atomic
from trustlab.utils.progress import progress_bar, show_progress
from trustlab.utils.seed import derive_seed, generator, seed_everything

__all__ = [
    "CHECKS",
    "DEFAULT",
    "Budget",
    "Scorecard",
    "Section",
    "audit",
    "check_backdoor",
    "check_clean",
    "check_detection",
    "check_privacy",
    "check_robustness",
    "auc_standard_error",
    "default_eps",
    "latest_run",
    "parse_checks",
    "run_audit",
    "scorecard_html",
]

#: every check, in the order the scorecard lists them
CHECKS = ("clean", "robustness", "backdoor", "privacy", "detection")
#: the checks an audit runs unless told otherwise (all of them)
DEFAULT = CHECKS
TITLES = {
    "clean": "Clean accuracy",
    "robustness": "Adversarial robustness",
    "backdoor": "Backdoor scan (Neural Cleanse)",
    "privacy": "Membership inference",
    "detection": "Adversarial-input detection",
}
#: the standard L-inf radii of the literature (Madry et al. 2018 for MNIST; Fashion-MNIST's
#: common 0.1); every other dataset: 8/255, RobustBench's CIFAR-10 radius and trustlab's default
EPS = {"mnist": 0.3, "fashion-mnist": 0.1}
EPS_DEFAULT = 8 / 255


def default_eps(dataset: str) -> float:
    """The L-inf radius an audit attacks at on ``dataset`` unless told otherwise: 0.3 for
    MNIST, 0.1 for Fashion-MNIST, 8/255 for everything else."""
    return EPS.get(dataset, EPS_DEFAULT)


@dataclass(frozen=True)
class Budget:
    """How much each check may spend (the scorecard states it). The defaults fit a whole audit
    of a shapes10 ResNet-20 in under 5 minutes on 2 CPU cores.

    Args:
        clean_n: test examples for clean accuracy (default 2000).
        robust_n: test examples attacked by the cascade (default 200).
        suite: the attack suite (default ``"quick"``: PGD-20 then MD; ``"standard"``: APGD-CE,
            APGD-T, MD, MDMT, several times the cost).
        sanity_n: examples the sanity checks use (default 16).
        nc_samples: clean examples Neural Cleanse optimises on (default 64).
        nc_epochs: Neural Cleanse epochs at most (default 20; the full scan runs up to 1000 with
            early stopping: ``trustlab defend``).
        nc_batch: Neural Cleanse's batch size (default 8: for a fixed cost, small batches
            give more optimisation steps, which a short scan needs most; the full scan's is
            32).
        privacy_n: members audited, and as many non-members (default 1000: TPR at 0.1% FPR
            needs 1000 non-members).
        shadows: LiRA's shadow models, when a recipe is given (default 8).
        detect_n: test examples attacked for the detection check (default 200).
        detect_steps: PGD steps of those attacks (default 10).

    Example:
        >>> Budget().capped(50).robust_n
        50
    """

    clean_n: int = 2000
    robust_n: int = 200
    suite: str = "quick"
    sanity_n: int = 16
    nc_samples: int = 64
    nc_epochs: int = 20
    nc_batch: int = 8
    privacy_n: int = 1000
    shadows: int = 8
    detect_n: int = 200
    detect_steps: int = 10

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name != "suite" and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
                raise InputError(f"budget {f.name} must be an integer >= 1, got {v!r}.")

    def capped(self, n: int | None) -> Budget:
        """This budget with every example count at most ``n`` (``None``: unchanged)."""
        if n is None:
            return self
        if not isinstance(n, int) or n < 1:
            raise InputError(f"n must be an integer >= 1, got {n!r}.")
        keys = ("clean_n", "robust_n", "sanity_n", "nc_samples", "privacy_n", "detect_n")
        return replace(self, **{k: min(getattr(self, k), n) for k in keys})


def _finite(value: Any) -> Any:
    """``value`` with every NaN or infinite float replaced by None (strict JSON)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


@dataclass
class Section:
    """One check of a scorecard.

    Attributes:
        name: the check (one of :data:`CHECKS`); title: its heading.
        status: ``"ok"``, ``"skipped"`` (``reason`` says why) or ``"failed"`` (``reason``: the
            error).
        metrics: every number it measured (JSON values).
        budget: what it was allowed to spend (examples, steps, epochs); budget_text: the same
            in words.
        warnings: what a reader must not miss.
        wall_s, cpu_s: its wall-clock and CPU time in seconds.
        figures: ``(alt, caption, png bytes)`` per plot (not part of :meth:`to_dict`).

    Example::

        section = card.sections["clean"]
        section.metrics["accuracy"], section.budget
    """

    name: str
    title: str
    status: str = "ok"
    metrics: dict[str, Any] = field(default_factory=dict)
    budget: dict[str, Any] = field(default_factory=dict)
    budget_text: str = ""
    warnings: list[str] = field(default_factory=list)
    reason: str = ""
    wall_s: float = 0.0
    cpu_s: float = 0.0
    figures: list[tuple[str, str, bytes]] = field(default_factory=list, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """Everything but the figures, as strict JSON values (NaN and infinities as None)."""
        out = asdict(self)
        out.pop("figures")
        return _finite(out)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Section:
        known = {f.name for f in fields(cls)} - {"figures"}
        return cls(**{k: v for k, v in d.items() if k in known})


#: per check: (label, metric key) of the numbers the summary table shows
HEADLINES: dict[str, list[tuple[str, str]]] = {
    "clean": [("accuracy", "accuracy")],
    "robustness": [("robust accuracy (worst case)", "robust_accuracy")],
    "backdoor": [("classes flagged", "flagged_count"), ("largest anomaly index", "max_anomaly")],
    "privacy": [
        ("best attack AUC", "auc"),
        ("TPR at 1% FPR", "tpr_at_1fpr"),
        ("members (and as many non-members)", "members"),
    ],
    "detection": [("detection AUC (LID)", "mean_auc"), ("adversarial examples", "n_adversarial")],
}


@dataclass
class Scorecard:
    """What :func:`audit` found: one :class:`Section` per check, in :data:`CHECKS` order.

    Attributes:
        model: a description of the model (its class and parameter count, or the run).
        dataset: the data it was judged on; eps: the L-inf radius of the attacks.
        seed, device: as given; created: when (UTC, ISO 8601); wall_s, cpu_s: total times.
        sections: check name -> :class:`Section`.

    Example::

        card = audit(model, "digits")
        json.dumps(card.to_dict()); Scorecard.from_dict(card.to_dict()).summary()
    """

    model: str
    dataset: str
    eps: float
    seed: int = 0
    device: str = "cpu"
    created: str = ""
    wall_s: float = 0.0
    cpu_s: float = 0.0
    sections: dict[str, Section] = field(default_factory=dict)

    @property
    def warnings(self) -> list[str]:
        """Every section's warnings, each prefixed with its check."""
        return [f"{s.name}: {w}" for s in self.sections.values() for w in s.warnings]

    def summary(self) -> dict[str, Any]:
        """The headline numbers, flat: ``{"clean.accuracy": 0.97, ...}`` (a skipped or failed
        check's are absent), plus ``warnings`` (how many)."""
        out: dict[str, Any] = {}
        for s in self.sections.values():
            if s.status != "ok":
                continue
            for _, key in HEADLINES.get(s.name, []):
                if key in s.metrics:
                    out[f"{s.name}.{key}"] = s.metrics[key]
        out["warnings"] = len(self.warnings)
        return out

    def to_dict(self) -> dict[str, Any]:
        """Every number, the budgets, the warnings and the times, as JSON values."""
        return {
            "format": "trustlab-scorecard/1",
            "model": self.model,
            "dataset": self.dataset,
            "eps": self.eps,
            "seed": self.seed,
            "device": self.device,
            "created": self.created,
            "wall_s": self.wall_s,
            "cpu_s": self.cpu_s,
            "summary": _finite(self.summary()),
            "warnings": self.warnings,
            "sections": {k: s.to_dict() for k, s in self.sections.items()},
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Scorecard:
        """The scorecard of :meth:`to_dict` (without its figures)."""
        return cls(
            model=d["model"],
            dataset=d["dataset"],
            eps=d["eps"],
            seed=d.get("seed", 0),
            device=d.get("device", "cpu"),
            created=d.get("created", ""),
            wall_s=d.get("wall_s", 0.0),
            cpu_s=d.get("cpu_s", 0.0),
            sections={k: Section.from_dict(v) for k, v in d.get("sections", {}).items()},
        )


# -- the context every check sees --------------------------------------------------------------
@dataclass
class _Ctx:
    model: nn.Module
    data: ArrayDataset
    train: ArrayDataset | None
    eps: float
    budget: Budget
    seed: int
    device: torch.device
    progress: bool
    prep: Any = None  # a workflows.train.Prepared (LiRA's recipe)
    cache: bool | str | Path = True

    def sample(self, data: ArrayDataset, n: int, what: str) -> ArrayDataset:
        """A class-stratified, seeded subset of ``n`` examples of ``data``."""
        return data.stratified(n, seed=derive_seed(self.seed, "audit", what))


def parse_checks(checks: str | Iterable[str] | None) -> tuple[str, ...]:
    """``"clean,robustness"`` or ``["clean", "robustness"]`` -> the checks in :data:`CHECKS`
    order (``None``: :data:`DEFAULT`). An unknown name is an :class:`InputError` listing the
    valid ones."""
    if checks is None:
        return DEFAULT
    names = [c.strip().lower() for c in (checks.split(",") if isinstance(checks, str) else checks)]
    names = [c for c in names if c]
    bad = [c for c in names if c not in CHECKS]
    if bad:
        raise InputError(
            f"unknown check{'s' if len(bad) > 1 else ''} {', '.join(map(repr, bad))}; "
            f"choose from {', '.join(CHECKS)} (comma-separated)."
        )
    if not names:
        raise InputError(f"no check chosen; choose from {', '.join(CHECKS)} (comma-separated).")
    return tuple(c for c in CHECKS if c in names)


# -- figures -----------------------------------------------------------------------------------
def _bars_figure(
    labels: Sequence[str],
    values: Sequence[float],
    *,
    title: str,
    ylabel: str,
    ref: float | None = None,
    ref_label: str = "",
    marked: Iterable[int] = (),
) -> Any:
    """A bar chart of values in [0, 1] (a dashed line at ``ref``; ``marked`` bars in red)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(max(4.0, 0.45 * len(labels) + 1.5), 3.2), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    marked = set(marked)
    colours = ["#c0392b" if i in marked else "#3b6fb6" for i in range(len(values))]
    pos = list(range(len(values)))
    ax.bar(pos, [0.0 if math.isnan(v) else v for v in values], color=colours)
    for i, v in enumerate(values):
        text = "n/a" if math.isnan(v) else f"{v:.0%}"
        ax.annotate(
            text,
            (i, 0 if math.isnan(v) else v),
            ha="center",
            va="bottom",
            fontsize=7,
            xytext=(0, 1),
            textcoords="offset points",
        )
    if ref is not None:
        ax.axhline(ref, ls="--", color="0.5", lw=1, label=ref_label or None)
        if ref_label:
            ax.legend(loc="lower right", fontsize=7)
    ax.set_xticks(pos)
    ax.set_xticklabels(
        labels,
        rotation=30 if len(labels) > 6 else 0,
        ha="right" if len(labels) > 6 else "center",
        fontsize=8,
    )
    ax.set_ylim(0, 1.08)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(True, axis="y", color="0.9", lw=0.8)
    ax.set_axisbelow(True)
    return fig


def _png(fig: Any) -> bytes:
    from trustlab.results.html import figure_png

    return figure_png(fig)


# -- the checks --------------------------------------------------------------------------------
def check_clean(ctx: _Ctx, bar: Any) -> Section:
    """Accuracy on ``budget.clean_n`` stratified test examples, per class too (bar plot)."""
    from trustlab.train.evaluate import predict_logits

    data = ctx.sample(ctx.data, ctx.budget.clean_n, "clean")
    s = Section("clean", TITLES["clean"])
    s.budget = {"examples": len(data)}
    s.budget_text = f"{len(data)} test examples, one forward pass each"
    pred = predict_logits(ctx.model, data, 256, ctx.device).argmax(1)
    bar()
    right = pred == data.y
    k = data.num_classes
    counts = torch.bincount(data.y, minlength=k)
    hits = torch.bincount(data.y[right], minlength=k)
    per_class = {
        str(data.classes[c]): (float(hits[c] / counts[c]) if counts[c] else float("nan"))
        for c in range(k)
    }
    confusion = torch.zeros(k, k, dtype=torch.long)
    confusion.index_put_((data.y, pred.clamp(0, k - 1)), torch.ones_like(data.y), accumulate=True)
    acc = float(right.float().mean())
    rates = torch.where(counts > 0, hits / counts.clamp_min(1), torch.full((k,), 2.0))
    worst = rates.argmin()
    s.metrics = {
        "accuracy": acc,
        "n": len(data),
        "classes": k,
        "per_class_accuracy": per_class,
        "worst_class": str(data.classes[int(worst)]),
        "confusion": confusion.tolist(),
    }
    if acc < min(0.5, 2.0 / k):
        s.warnings.append(
            f"accuracy {acc:.1%} is near chance ({1 / k:.1%}): is this the data the model was "
            "trained on, with the same input scaling ([0, 1] images, normalisation inside the "
            "model)?"
        )
    fig = _bars_figure(
        list(per_class),
        list(per_class.values()),
        title=f"accuracy per class (all: {acc:.1%})",
        ylabel="accuracy",
        ref=acc,
        ref_label="overall",
    )
    s.figures.append(
        ("accuracy per class", f"accuracy per class on {len(data)} test examples", _png(fig))
    )
    bar()
    return s


def _sanity(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> list[Any]:
    from trustlab.attacks.evasion.sanity import sanity_checks

    return list(sanity_checks(model, x, y))


def check_robustness(ctx: _Ctx, bar: Any) -> Section:
    """Sanity checks, then the worst-case robust accuracy over the attack cascade with the
    imbalanced-gradient diagnostic (cascade bar plot and a row of adversarial examples)."""
    from trustlab.attacks.evasion.evaluate import IMBALANCE_WARNING, evaluate_robustness
    from trustlab.attacks.evasion.suite import make_attack, make_suite
    from trustlab.registry import SUITES
    from trustlab.results.plots import image_rows_figure

    b = ctx.budget
    card = SUITES.get(b.suite)
    data = ctx.sample(ctx.data, b.robust_n, "robustness")
    s = Section("robustness", TITLES["robustness"])
    attacks_in = list(card.meta["attacks"])
    s.budget = {
        "examples": len(data),
        "suite": card.name,
        "attacks": attacks_in,
        "sanity_examples": min(b.sanity_n, len(data)),
        "eps": ctx.eps,
    }
    s.budget_text = (
        f"{len(data)} test examples; suite {card.name} ({', '.join(attacks_in)}) as a cascade "
        f"at L-inf eps {_eps_text(ctx.eps)}; sanity checks on {s.budget['sanity_examples']}"
    )
    k = s.budget["sanity_examples"]
    bar.info("sanity checks")
    findings = _sanity(ctx.model, data.x[:k].to(ctx.device), data.y[:k].to(ctx.device))
    bar()
    s.metrics["sanity"] = [
        {"check": f.check, "ok": bool(f.ok), "message": str(f.message)} for f in findings
    ]
    for f in findings:
        if not f.ok:
            s.warnings.append(
                f"sanity check {f.check!r} failed: {f.message} Gradient-based attacks may then "
                "fail for the wrong reason (gradient masking), so the robust accuracy below may "
                "be overestimated."
            )
    attacks = make_suite(card.name, ctx.model, ctx.eps)
    bar.info(f"attack cascade on {len(data)} examples")
    rep = evaluate_robustness(ctx.model, data, attacks, device=ctx.device)
    bar()
    s.metrics.update(
        {
            "clean_accuracy": rep.clean_accuracy,
            "robust_accuracy": rep.robust_accuracy,
            "after_attack": dict(rep.after_attack),
            "n": rep.n,
            "eps": ctx.eps,
            "imbalance": rep.imbalance,
            "imbalance_flag": bool(rep.imbalance_flag),
        }
    )
    if rep.imbalance_flag:
        s.warnings.append(f"{IMBALANCE_WARNING} (median gradient imbalance {rep.imbalance:.2f}).")
    labels = ["clean", *[f"after {a}" for a in rep.after_attack]]
    values = [rep.clean_accuracy, *rep.after_attack.values()]
    fig = _bars_figure(
        labels,
        values,
        title=f"accuracy along the attack cascade (eps {_eps_text(ctx.eps)})",
        ylabel="accuracy",
    )
    s.figures.append(
        (
            "attack cascade",
            "accuracy on the clean examples, then after each attack "
            "of the cascade (a point counts as robust only if no attack fooled it)",
            _png(fig),
        )
    )
    # a picture: the first examples and their PGD versions (attacked again; the cascade keeps
    # no examples)
    m = min(6, len(data))
    x, y = data.x[:m].to(ctx.device), data.y[:m].to(ctx.device)
    bar.info("example pictures")
    adv = make_attack("pgd", ctx.model, ctx.eps)(x, y)
    with torch.no_grad():
        before = ctx.model(x).argmax(1).cpu().tolist()
        after = ctx.model(adv).argmax(1).cpu().tolist()
    names = [str(c) for c in data.classes]
    diff = ((adv - x) / (2 * ctx.eps) + 0.5).clamp(0, 1)
    fig = image_rows_figure(
        [x, adv, diff],
        row_labels=["clean", "PGD", "difference"],
        captions=[[names[p] for p in before], [names[p] for p in after], None],
        col_labels=[f"true: {names[t]}" for t in y.cpu().tolist()],
        title=f"PGD-20 at eps {_eps_text(ctx.eps)}: predictions under each image",
    )
    s.figures.append(
        (
            "adversarial examples",
            "clean inputs, their PGD examples and the perturbation (scaled to the eps ball)",
            _png(fig),
        )
    )
    bar()
    return s


def check_backdoor(ctx: _Ctx, bar: Any) -> Section:
    """A budgeted Neural Cleanse scan of every class (the reversed-trigger figure)."""
    from trustlab.defenses.backdoor.neural_cleanse import NeuralCleanse
    from trustlab.workflows.defend import triggers_figure

    b = ctx.budget
    clean = ctx.sample(ctx.data, b.nc_samples, "backdoor")
    s = Section("backdoor", TITLES["backdoor"])
    s.budget = {
        "examples": len(clean),
        "epochs": b.nc_epochs,
        "batch_size": b.nc_batch,
        "classes": ctx.data.num_classes,
    }
    s.budget_text = (
        f"Neural Cleanse on {len(clean)} clean test examples, at most {b.nc_epochs} epochs "
        f"(batch {b.nc_batch}, lambda from 1e-3) for each of {ctx.data.num_classes} classes; "
        "a screen: the full scan (`trustlab defend`) runs up to 1000 epochs with early stopping"
    )
    nc = NeuralCleanse(
        epochs=b.nc_epochs,
        samples=len(clean),
        batch_size=b.nc_batch,
        seed=ctx.seed,
        progress=False,
        reset_cost_to_zero=False,
    )
    bar.info(f"{ctx.data.num_classes} classes x {b.nc_epochs} epochs")
    rep = nc.inspect(ctx.model, clean)
    bar()
    names = [str(c) for c in ctx.data.classes]
    classes = rep.extra.get("classes", list(range(len(rep.norms))))
    flagged = [int(c) for c in rep.flagged]
    s.metrics = {
        "flagged": flagged,
        "flagged_names": [names[c] if c < len(names) else str(c) for c in flagged],
        "flagged_count": len(flagged),
        "max_anomaly": rep.max_anomaly_of_small,
        "threshold": rep.threshold,
        "classes": [int(c) for c in classes],
        "class_names": [names[c] if c < len(names) else str(c) for c in classes],
        "mask_l1": [float(v) for v in rep.norms],
        "anomaly_index": [float(v) for v in rep.anomaly],
        "trigger_success": [float(v) for v in rep.success],
        "epochs": rep.epochs,
    }
    if flagged:
        which = ", ".join(
            f"{names[c] if c < len(names) else c} (anomaly index "
            f"{float(rep.anomaly[classes.index(c)]):.1f})"
            for c in flagged
        )
        s.warnings.append(
            f"Neural Cleanse flags {which}: a much smaller trigger sends inputs to "
            f"{'this class' if len(flagged) == 1 else 'these classes'} than to the others, the "
            "sign of a backdoor target. This budgeted scan is a screen: confirm with the full "
            "scan before acting on it."
        )
    weak = [
        names[c] if c < len(names) else str(c)
        for c, v in zip(classes, rep.success, strict=True)
        if float(v) < 0.9
    ]
    if weak:
        s.metrics["unconverged"] = weak
    fig = triggers_figure(rep, names)
    s.figures.append(
        (
            "reversed triggers",
            "the smallest trigger found for each class (flagged classes framed in red)",
            _png(fig),
        )
    )
    bar()
    return s


def check_privacy(ctx: _Ctx, bar: Any) -> Section:
    """Threshold membership inference (loss, confidence, entropy; LiRA with a recipe): AUC and
    TPR at 1% / 0.1% FPR of members (``train_data``) vs test examples; log-log ROC."""
    from trustlab.attacks.privacy import (
        confidence_scores,
        entropy_scores,
        loss_scores,
        train_plus_test,
    )
    from trustlab.metrics.detection import roc_curve
    from trustlab.metrics.privacy import membership_metrics
    from trustlab.results.plots import curves_figure

    b = ctx.budget
    s = Section("privacy", TITLES["privacy"])
    if ctx.train is None:
        s.status = "skipped"
        s.reason = (
            "membership inference needs the model's training data: pass train_data= (Python) or "
            "audit a trustlab run (its training split is known)"
        )
        return s
    train = ctx.prep.train if ctx.prep is not None else ctx.train
    test = ctx.prep.test if ctx.prep is not None else ctx.data
    n = min(b.privacy_n, len(train), len(test))
    g = generator(derive_seed(ctx.seed, "audit", "privacy"))
    mi = torch.randperm(len(train), generator=g)[:n].sort().values
    ni = torch.randperm(len(test), generator=g)[:n].sort().values
    data = train_plus_test(train.subset(mi), test.subset(ni))
    is_member = torch.cat([torch.ones(n, dtype=torch.bool), torch.zeros(n, dtype=torch.bool)])
    lira = ctx.prep is not None
    s.budget = {"members": n, "nonmembers": n, "shadows": b.shadows if lira else 0}
    s.budget_text = (
        f"{n} members (training data) vs {n} non-members (test data); threshold attacks: one "
        "forward pass each"
    )
    scores = {
        "loss": loss_scores(ctx.model, data, device=ctx.device),
        "confidence": confidence_scores(ctx.model, data, device=ctx.device),
        "entropy": entropy_scores(ctx.model, data, device=ctx.device),
    }
    bar()
    if lira:
        from trustlab.attacks.privacy import MembershipAudit
        from trustlab.registry import PRIVACY_ATTACKS
        from trustlab.workflows.mia import shadow_recipe

        cfg = ctx.prep.config
        s.budget_text += (
            f"; LiRA: {b.shadows} shadow models, each a training run of the recipe "
            f"({cfg.model}, {cfg.epochs} epochs on half of the {len(train) + len(test)} "
            "training and test examples), cached in the results store"
        )
        job = MembershipAudit(
            ctx.model,
            data,
            train,
            test,
            torch.cat([mi, len(train) + ni]),
            recipe=shadow_recipe(ctx.prep),
            shadows=b.shadows,
            seed=ctx.seed,
            cache=ctx.cache,
            device=ctx.device,
            progress=False,
        )
        bar.info(f"LiRA: {b.shadows} shadow models")
        scores["lira"] = PRIVACY_ATTACKS.get("lira").meta["audit"](job)
        s.metrics["lira_shadows"] = dict(job.extra)
    bar()
    per = {name: membership_metrics(v, is_member) for name, v in scores.items()}
    best = max(per, key=lambda a: per[a]["auc"])
    s.metrics.update(
        {
            "attacks": per,
            "best_attack": best,
            "auc": per[best]["auc"],
            "tpr_at_1fpr": per[best]["tpr_at_1fpr"],
            "tpr_at_01fpr": per[best]["tpr_at_01fpr"],
            "advantage": per[best]["advantage"],
            "members": n,
            "nonmembers": n,
        }
    )
    if n < 1000:
        s.metrics["note"] = (
            f"with {n} non-members no threshold has an FPR as small as 0.1%: TPR at 0.1% FPR is "
            "the TPR at zero false positives"
        )
    if per[best]["auc"] >= 0.6 or per[best]["tpr_at_1fpr"] >= 0.05:
        s.warnings.append(
            f"membership leaks: the {best} attack tells training examples from unseen ones with "
            f"AUC {per[best]['auc']:.3f} and {per[best]['tpr_at_1fpr']:.1%} TPR at 1% FPR "
            "(0.5 and 1% are chance). Regularise, train with DP-SGD or a privacy defense "
            "(`trustlab defend-privacy`)."
        )
    floor = min(1e-3, 1.0 / max(n, 1))
    curves, labels = {}, {}
    for name, v in scores.items():
        fpr, tpr, _ = roc_curve(v, is_member)
        curves[name] = (fpr.tolist(), tpr.tolist())
        m = per[name]
        labels[name] = f"{name}: AUC {m['auc']:.3f}, TPR {m['tpr_at_1fpr']:.1%} at 1% FPR"
    fig = curves_figure(
        curves,
        log_floor=floor,
        labels=labels,
        marks=(0.01,),
        title=f"membership inference: {n} members vs {n} non-members",
    )
    s.figures.append(
        (
            "membership ROC",
            "ROC of each membership-inference attack, log-log (the "
            "low false-positive region is what matters)",
            _png(fig),
        )
    )
    return s


def _detector_layers(model: nn.Module) -> list[str]:
    """LID's layers: trustlab's stage layers, else (a user's own network) up to 4 of its
    convolution and linear layers, spread over its depth, the last one (the logits) left out."""
    from trustlab.models.wrappers import stage_layers

    try:
        return stage_layers(model)
    except InputError:
        pass
    kinds = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
    names = [n for n, m in model.named_modules() if n and isinstance(m, kinds)][:-1]
    if len(names) <= 4:
        return names
    step = (len(names) - 1) / 3
    return [names[round(i * step)] for i in range(4)]


def check_detection(ctx: _Ctx, bar: Any) -> Section:
    """ROC-AUC of the LID detector on the successful PGD examples of ``detect_n`` test
    examples (3 random 80/20 splits over the source inputs; ROC plot)."""
    from trustlab.attacks.evasion.suite import make_attack
    from trustlab.defenses.detection import build_detection_set, evaluate_detector
    from trustlab.registry import DETECTORS
    from trustlab.results.plots import curves_figure

    b = ctx.budget
    data = ctx.sample(ctx.data, b.detect_n, "detection")
    s = Section("detection", TITLES["detection"])
    s.budget = {
        "examples": len(data),
        "attack": "pgd",
        "steps": b.detect_steps,
        "splits": 3,
        "eps": ctx.eps,
    }
    s.budget_text = (
        f"{len(data)} test examples attacked with PGD ({b.detect_steps} steps, eps "
        f"{_eps_text(ctx.eps)}); LID features + logistic regression, 3 random 80/20 splits"
    )
    layers = _detector_layers(ctx.model)
    det = DETECTORS.get("lid").build(ctx.model, layers=layers, seed=ctx.seed)
    atk = make_attack("pgd", ctx.model, ctx.eps, steps=b.detect_steps)
    x, y = data.x.to(ctx.device), data.y.to(ctx.device)
    try:
        bar.info(f"PGD on {len(data)} examples")
        sets = build_detection_set(ctx.model, x, y, atk, seed=ctx.seed)
    except InputError as exc:
        s.status, s.reason = "skipped", f"no detection examples: {exc}"
        return s
    bar()
    if len(sets.adversarial) < 10:
        s.status = "skipped"
        s.reason = (
            f"only {len(sets.adversarial)} successful adversarial examples; the detector needs "
            "at least 10 (raise n or eps)"
        )
        return s
    bar.info("LID features, 3 splits")
    rep = evaluate_detector(det, sets, splits=3, seed=ctx.seed)
    bar()
    s.metrics = {
        "detector": "lid",
        "layers": layers,
        "mean_auc": rep.mean_auc,
        "auc": list(rep.aucs),
        "n_adversarial": rep.n_adversarial,
        "attack_success": rep.attack_success,
    }
    curves = {f"split {i + 1}": (f.tolist(), t.tolist()) for i, (f, t) in enumerate(rep.roc)}
    fig = curves_figure(curves, title=f"LID detector on PGD examples: mean AUC {rep.mean_auc:.3f}")
    s.figures.append(
        (
            "detection ROC",
            "ROC of the LID detector on each held-out split "
            "(clean and noise-matched inputs vs PGD examples)",
            _png(fig),
        )
    )
    return s


CHECK_FUNCTIONS: dict[str, Callable[[_Ctx, Any], Section]] = {
    "clean": check_clean,
    "robustness": check_robustness,
    "backdoor": check_backdoor,
    "privacy": check_privacy,
    "detection": check_detection,
}
#: progress steps of each check's bar
STEPS = {"clean": 2, "robustness": 3, "backdoor": 2, "privacy": 2, "detection": 2}


def _eps_text(eps: float) -> str:
    k = eps * 255
    return f"{round(k)}/255" if abs(k - round(k)) < 1e-6 and k >= 1 else f"{eps:g}"


def _as_data(dataset: str | ArrayDataset | Dataset, split: str = "test") -> ArrayDataset:
    if isinstance(dataset, str):
        return load_dataset(dataset, split)
    if isinstance(dataset, ArrayDataset):
        return dataset
    if isinstance(dataset, Dataset):
        return as_array_dataset(dataset)
    raise InputError(
        f"dataset must be a registered name (`trustlab datasets`), an ArrayDataset or a torch "
        f"Dataset; got {type(dataset).__name__}."
    )


def _describe(model: nn.Module) -> str:
    params = sum(p.numel() for p in model.parameters())
    return f"{type(model).__name__} ({params:,} parameters)"


def _prepared(recipe: Any) -> Any:
    """A training recipe (TrainConfig, its dict, a YAML path or a Prepared) -> Prepared."""
    from trustlab.config import TrainConfig, load_train_config
    from trustlab.utils.validate import parse_config
    from trustlab.workflows.train import Prepared, prepare

    if isinstance(recipe, Prepared):
        return recipe
    if isinstance(recipe, str | Path):
        return prepare(load_train_config(Path(recipe)))
    if isinstance(recipe, dict):
        recipe = parse_config(TrainConfig, recipe)
    if isinstance(recipe, TrainConfig):
        return prepare(recipe)
    raise InputError(
        "recipe must be a trustlab training config (TrainConfig, its dict or a YAML file); got "
        f"{type(recipe).__name__}."
    )


def audit(
    model: nn.Module,
    dataset: str | ArrayDataset | Dataset,
    *,
    checks: str | Iterable[str] | None = DEFAULT,
    train_data: ArrayDataset | Dataset | None = None,
    eps: float | str | None = None,
    n: int | None = None,
    seed: int = 0,
    device: str | torch.device = "auto",
    progress: bool = True,
    recipe: Any = None,
    budget: Budget | None = None,
    label: str | None = None,
    cache: bool | str | Path = True,
) -> Scorecard:
    """Audit ``model`` on ``dataset``: the chosen checks, each within its budget; see the module.

    Args:
        model: any ``nn.Module`` mapping ``[0, 1]`` images ``(N, C, H, W)`` to logits
            ``(N, K)``; it is moved to ``device`` (normalisation belongs inside it).
        dataset: a registered dataset name (its test split), an ``ArrayDataset`` or a
            map-style torch ``Dataset`` of ``(x, y)``: the data the model is judged on.
        checks: the checks to run, names of :data:`CHECKS` (a list or ``"a,b"``; default all).
        train_data: the model's training data (members, for the ``privacy`` check; default
            None: that check is skipped unless ``recipe`` gives it).
        eps: the L-inf radius of the attacks (``0.03`` or ``"8/255"``; default
            :func:`default_eps` of the dataset).
        n: the most examples any check uses (default None: each check's :class:`Budget`).
        seed: seeds every sample and attack (default 0).
        device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda[:N]"``.
        progress: a progress bar per check (only on a terminal; default True).
        recipe: a trustlab training config (``TrainConfig``, its dict, a YAML path) that
            trained the model: LiRA runs with ``budget.shadows`` shadow models trained with it,
            members come from its training split (default None: threshold attacks only).
        budget: the checks' budgets (default :class:`Budget`).
        label: how the scorecard names the model (default: its class and size).
        cache: LiRA's shadow-model cache (True: the results store's, a folder, or False).

    On a CPU the checks run on one thread (:func:`~trustlab.utils.device.single_threaded`), so
    that the scorecard's numbers do not depend on the machine's cores.

    Returns:
        the :class:`Scorecard`.

    Raises:
        InputError: an unknown check (the message lists the valid ones), data the model does
            not fit, a bad ``eps``/``n``/``budget``.

    Example::

        card = audit(model, "digits", checks="clean,robustness", n=100)
        card.sections["robustness"].metrics["robust_accuracy"]
    """
    from trustlab.attacks.evasion.base import parse_eps
    from trustlab.train.trainer import check_model_fits

    names = parse_checks(checks)
    if not isinstance(model, nn.Module):
        raise InputError(f"model must be a torch nn.Module, got {type(model).__name__}.")
    budget = (budget or Budget()).capped(n)
    from trustlab.registry import SUITES

    SUITES.get(budget.suite)  # an unknown suite: the registry's error
    data = _as_data(dataset)
    name = dataset if isinstance(dataset, str) else data.name
    eps_value = parse_eps(eps) if eps is not None else default_eps(name)
    if not 0 < eps_value <= 1:
        raise InputError(f"eps must be in (0, 1], got {eps_value}.")
    prep = _prepared(recipe) if recipe is not None else None
    train = _as_data(train_data, "train") if train_data is not None else None
    if train is None and prep is not None:
        train = prep.train
    dev = resolve_device(device)
    model.to(dev)
    check_model_fits(model, data, train, device=dev)
    seed_everything(seed)
    ctx = _Ctx(
        model, data, train, eps_value, budget, seed, dev, show_progress(progress), prep, cache
    )
    card = Scorecard(
        label or _describe(model),
        name,
        eps_value,
        seed,
        str(dev),
        datetime.now(UTC).isoformat(timespec="seconds"),
    )
    start, cpu = time.perf_counter(), time.process_time()
    # one thread on a CPU: the numbers do not depend on the machine's cores or load (sums
    # change with the thread count), and the audit's small batches gain little from more
    with single_threaded(dev):
        for check in names:
            card.sections[check] = _run_check(check, ctx)
    card.wall_s = round(time.perf_counter() - start, 2)
    card.cpu_s = round(time.process_time() - cpu, 2)
    return card


#: the fewest examples a check's headline number is read from without a warning. Below it a
#: rate's 95% interval is wider than ±10 points (0.98 / sqrt(n)) and an AUC's standard error
#: (Hanley & McNeil 1982) is above about 0.04 for members vs non-members, 0.08 for detection
#: (whose held-out splits hold a fifth of the adversarial examples): differences of that size
#: are sampling noise, not a property of the model.
MIN_EXAMPLES = 100


def auc_standard_error(auc: float, positives: int, negatives: int) -> float:
    """The standard error of a ROC-AUC measured on ``positives`` and ``negatives`` examples
    (Hanley & McNeil, Radiology 1982); ``nan`` without both.

    Example:
        >>> round(auc_standard_error(0.5, 100, 100), 3)
        0.041
    """
    if positives < 1 or negatives < 1 or not math.isfinite(auc):
        return math.nan
    q1, q2 = auc / (2 - auc), 2 * auc**2 / (1 + auc)
    var = (auc * (1 - auc) + (positives - 1) * (q1 - auc**2) + (negatives - 1) * (q2 - auc**2)) / (
        positives * negatives
    )
    return math.sqrt(max(var, 0.0))


def _sample_warning(s: Section) -> str | None:
    """A warning when ``s``'s headline number rests on fewer than :data:`MIN_EXAMPLES`
    examples (see there why), with the number's uncertainty at that size."""
    m = s.metrics
    need = f"the audit needs at least {MIN_EXAMPLES} to read it (raise --n or the budget)"
    if s.name in ("clean", "robustness") and isinstance(m.get("n"), int):
        n = m["n"]
        if n >= MIN_EXAMPLES:
            return None
        what = "accuracy" if s.name == "clean" else "robust accuracy"
        return (
            f"too few examples to read: the {what} rests on {n} examples, so its 95% interval "
            f"is up to ±{98 / math.sqrt(max(n, 1)):.0f} points wide; {need}."
        )
    if s.name == "privacy" and isinstance(m.get("members"), int):
        n = m["members"]
        if n >= MIN_EXAMPLES:
            return None
        se = auc_standard_error(float(m.get("auc", 0.5)), n, n)
        return (
            f"too few examples to read: the AUC {m.get('auc', math.nan):.2f} rests on {n} members "
            f"vs {n} non-members (standard error about {se:.2f}: ±{1.96 * se:.2f} at 95%); "
            f"{need}."
        )
    if s.name == "detection" and isinstance(m.get("n_adversarial"), int):
        n = m["n_adversarial"]
        if n >= MIN_EXAMPLES:
            return None
        per_split = max(1, round(0.2 * n))  # a held-out split: 20% of the inputs
        auc = m.get("mean_auc")
        auc = float(auc) if isinstance(auc, float) else math.nan
        se = auc_standard_error(auc if math.isfinite(auc) else 0.5, per_split, 2 * per_split)
        return (
            f"too few examples to read: the detection AUC {auc:.2f} rests on {n} adversarial "
            f"examples, about {per_split} per held-out split (vs {2 * per_split} clean and "
            f"noise-matched inputs), so its standard error is about {se:.2f} (±{1.96 * se:.2f} "
            f"at 95%; chance is 0.5); the audit needs at least {MIN_EXAMPLES} adversarial "
            "examples (raise --n or --eps)."
        )
    return None


def _run_check(check: str, ctx: _Ctx) -> Section:
    t0, c0 = time.perf_counter(), time.process_time()
    with progress_bar(f"audit: {check}", STEPS[check], ctx.progress) as bar:
        try:
            s = CHECK_FUNCTIONS[check](ctx, bar)
        except (KeyboardInterrupt, SystemExit):
            raise
        except InputError as exc:
            s = Section(check, TITLES[check], status="skipped", reason=str(exc))
        except Exception as exc:  # one check's crash must not lose the others
            s = Section(
                check, TITLES[check], status="failed", reason=f"{type(exc).__name__}: {exc}"
            )
        if s.status != "ok":
            s.warnings.append(
                f"not run: {s.reason}" if s.status == "skipped" else f"failed: {s.reason}"
            )
        elif (small := _sample_warning(s)) is not None:
            s.warnings.append(small)
    s.wall_s = round(time.perf_counter() - t0, 2)
    s.cpu_s = round(time.process_time() - c0, 2)
    return s


# -- the page ----------------------------------------------------------------------------------
_RATES = ("accuracy", "tpr", "success", "advantage")
#: how the page names a metric (default: its key with spaces)
LABELS = {
    "auc": "AUC",
    "mean_auc": "mean AUC",
    "tpr_at_1fpr": "TPR at 1% FPR",
    "tpr_at_01fpr": "TPR at 0.1% FPR",
    "max_anomaly": "largest anomaly index",
    "n": "examples",
    "n_adversarial": "adversarial examples",
    "eps": "eps (L-inf)",
    "imbalance": "gradient imbalance (median)",
    "imbalance_flag": "imbalance above 2",
    "flagged_names": "flagged classes",
    "flagged_count": "classes flagged",
    "epochs": "epochs run",
}


def _value_cell(v: Any, key: str = "") -> Any:
    """A table cell for one metric: rates as percentages, other floats to 4 significant
    digits, each sorting (``data-sort``) by its exact value; lists joined; booleans yes/no."""
    from trustlab.results.html import Cell, fmt_number

    if isinstance(v, bool) or v is None:
        return "yes" if v is True else ("no" if v is False else "—")
    if isinstance(v, float):
        if math.isnan(v):
            return Cell("—")
        if key == "eps":
            return Cell(_eps_text(v), sort=v)
        rate = any(r in key for r in _RATES) and 0 <= v <= 1
        return Cell(f"{v:.1%}" if rate else fmt_number(v, 4), sort=v)
    if isinstance(v, int):
        return v
    if isinstance(v, list) and all(isinstance(i, str | int) for i in v):
        return ", ".join(str(i) for i in v) if v else "none"
    return str(v)


def _cell_text(cell: Any) -> str:
    from trustlab.results.html import Cell, fmt_number

    return str(cell.text) if isinstance(cell, Cell) else fmt_number(cell)


def _scalar_rows(metrics: Mapping[str, Any], skip: Iterable[str] = ()) -> list[tuple[str, Any]]:
    skip = set(skip)
    rows = []
    for k, v in metrics.items():
        if k in skip or isinstance(v, dict):
            continue
        if isinstance(v, list) and not all(isinstance(i, str | int) for i in v):
            continue
        rows.append((LABELS.get(k, k.replace("_", " ")), _value_cell(v, k)))
    return rows


def _metric_table(s: Section, skip: Iterable[str] = ()) -> str:
    from trustlab.results.html import Raw, table

    rows = _scalar_rows(s.metrics, skip)
    if not rows:
        return Raw("")
    return table(
        ["measure", "value"], rows, sortable=False, table_id=f"{s.name}-metrics", row_headers=True
    )


def _section_body(s: Section) -> list[str]:
    from trustlab.results.html import badge, image, paragraph, table

    parts: list[str] = []
    for w in s.warnings:
        parts.append(paragraph(w, cls="warning"))
    if s.status != "ok":
        return parts
    m = s.metrics
    if s.name == "clean":
        parts.append(_metric_table(s, skip=("confusion",)))
        parts.append(
            table(
                ["class", "accuracy"],
                [(c, _value_cell(v, "accuracy")) for c, v in m["per_class_accuracy"].items()],
                caption="per class",
                table_id="clean-per-class",
            )
        )
    elif s.name == "robustness":
        parts.append(_metric_table(s, skip=("sanity",)))
        parts.append(
            table(
                ["attack (cascade order)", "robust accuracy after it"],
                [(a, _value_cell(v, "accuracy")) for a, v in m["after_attack"].items()],
                sortable=False,
                table_id="robustness-cascade",
            )
        )
        if m.get("sanity"):
            parts.append(
                table(
                    ["sanity check", "result", "what it found"],
                    [
                        (f["check"], badge("PASS" if f["ok"] else "FAIL"), f["message"])
                        for f in m["sanity"]
                    ],
                    sortable=False,
                    caption="AutoAttack-style sanity checks",
                    table_id="sanity",
                )
            )
    elif s.name == "backdoor":
        parts.append(_metric_table(s, skip=("classes", "class_names", "flagged")))
        flagged = set(m.get("flagged", []))
        names = m.get("class_names") or [str(c) for c in m["classes"]]
        rows = [
            (
                f"{c}: {name}" if name != str(c) else str(c),
                _value_cell(l1),
                _value_cell(a),
                _value_cell(ok, "success"),
                "flagged" if c in flagged else "",
            )
            for c, name, l1, a, ok in zip(
                m["classes"],
                names,
                m["mask_l1"],
                m["anomaly_index"],
                m["trigger_success"],
                strict=True,
            )
        ]
        parts.append(
            table(
                ["class", "mask L1", "anomaly index", "trigger success", ""],
                rows,
                caption="per class",
                table_id="backdoor-classes",
            )
        )
    elif s.name == "privacy":
        parts.append(_metric_table(s))
        rows = [
            (
                a,
                *(
                    _value_cell(v[k], k)
                    for k in ("auc", "tpr_at_1fpr", "tpr_at_01fpr", "advantage")
                ),
            )
            for a, v in m["attacks"].items()
        ]
        parts.append(
            table(
                ["attack", "AUC", "TPR at 1% FPR", "TPR at 0.1% FPR", "advantage"],
                rows,
                table_id="privacy-attacks",
            )
        )
    else:
        parts.append(_metric_table(s))
    for alt, caption, png in s.figures:
        parts.append(image(png, alt, caption))
    return parts


def scorecard_html(card: Scorecard) -> str:
    """The scorecard as one self-contained HTML page: a summary table (each check's headline
    numbers, status, budget and time), the warnings, then one section per check with its
    numbers and plots. Built with :mod:`trustlab.results.html` (no external assets).

    Example::

        write_page("scorecard.html", scorecard_html(audit(model, "digits")))
    """
    from trustlab.results.html import Cell, badge, key_values, page, paragraph, section, table

    rows = []
    for s in card.sections.values():
        status = badge({"ok": "OK", "skipped": "SKIPPED", "failed": "FAIL"}[s.status])
        heads = HEADLINES.get(s.name, [])
        if s.status != "ok" or not heads:
            rows.append((s.title, s.reason or "—", Cell("—"), "", status, s.budget_text, s.wall_s))
            continue
        (label, key), more = heads[0], heads[1:]
        cell = _value_cell(s.metrics.get(key), key)
        if not isinstance(cell, Cell):
            cell = Cell(str(cell), sort=s.metrics.get(key))
        cell.cls = "metric"
        also = "; ".join(f"{lab} {_cell_text(_value_cell(s.metrics.get(k), k))}" for lab, k in more)
        rows.append((s.title, label, cell, also, status, s.budget_text, s.wall_s))
    summary = table(
        ["check", "measure", "value", "also", "status", "budget", "time (s)"],
        rows,
        table_id="summary",
    )
    about = key_values(
        [
            ("model", card.model),
            ("data", card.dataset),
            ("attack radius (L-inf eps)", _eps_text(card.eps)),
            ("seed", card.seed),
            ("device", card.device),
            ("total time", f"{card.wall_s:.1f} s wall, {card.cpu_s:.1f} s CPU"),
            ("made", card.created),
        ]
    )
    warn = card.warnings
    parts = [
        section("Summary", summary, about, section_id="summary-section"),
        section(
            f"Warnings ({len(warn)})",
            *([paragraph(w, cls="warning") for w in warn] or [paragraph("none")]),
            section_id="warnings",
        ),
    ]
    for s in card.sections.values():
        parts.append(
            section(
                s.title,
                *_section_body(s),
                section_id=s.name,
                note=f"budget: {s.budget_text} ({s.wall_s:.1f} s)",
            )
        )
    return page(
        f"Trust audit: {card.model}",
        *parts,
        subtitle=f"on {card.dataset}, checks: {', '.join(card.sections)}",
    )


# -- the stored run (`trustlab audit`) ---------------------------------------------------------
LATEST = "latest"


def latest_run(store: RunStore, kind: str | None = "train") -> Run:
    """What ``latest`` names on the command line: the newest finished run of ``kind`` (``None``:
    of any kind), e.g. ``trustlab audit latest`` (a training run), ``trustlab report latest``
    (any run).

    Args:
        store: the results store.
        kind: the run kind (default ``"train"``; None: any).

    Raises:
        InputError: the store holds no such run (the message says what to pass instead).

    Example::

        latest_run(RunStore()).id, latest_run(RunStore(), kind=None).kind
    """
    try:
        return store.latest(kind)
    except InputError:
        if kind != "train":
            raise
    raise InputError(
        f"`latest` names the newest finished training run, and {store.root} holds none; "
        "train one first (`trustlab train`) or pass a run id or a model file."
    )


def run_audit(
    target: str,
    dataset: str | None = None,
    *,
    arch: str | None = None,
    arch_kwargs: Mapping[str, Any] | None = None,
    checks: str | Iterable[str] | None = None,
    eps: float | str | None = None,
    n: int | None = None,
    shadows: int = 0,
    data_root: str | None = None,
    out: str | Path | None = None,
    device: str = "auto",
    seed: int = 0,
    progress: bool = True,
    name: str | None = None,
    store: RunStore | None = None,
) -> tuple[Run, Scorecard]:
    """Audit a stored model and store the audit as a run of kind ``audit`` (``trustlab audit``).

    Args:
        target: a run id, ``"latest"`` (the newest finished training run), a trustlab
            checkpoint (``.safetensors``), or with ``arch`` a user's own safetensors weights.
        dataset: a registered dataset (default: the run's).
        arch: ``"file.py:Class"`` or ``"module:Class"``: the user's own model class, built with
            ``arch_kwargs`` (:func:`trustlab.train.checkpoint.load_user_model`).
        checks: as :func:`audit` (default all).
        eps, n: as :func:`audit`.
        shadows: LiRA shadow models (default 0: threshold attacks only); needs a training run,
            whose config is the recipe.
        data_root: the folder of file-based datasets.
        out: also write the HTML page here: a file, or a folder (one that exists, or a string
            ending in ``/``) that gets ``scorecard.html`` inside it. Checked before the run is
            created; written after the run is finished (a copy that cannot be written is a
            warning, never a failed audit).
        device, seed, progress: as :func:`audit`.
        name: a label for the run (default ``audit-<target>``).
        store: the results store (default ``$TRUSTLAB_HOME``).

    Returns:
        ``(run, scorecard)``: the finished run holds ``scorecard.json`` and ``scorecard.html``
        (written atomically) and the headline numbers as its summary.

    Raises:
        InputError: before the run is created, for an unknown check, a missing dataset, a
            model file that is not safetensors (a pickle is never loaded), an ``arch`` that
            does not load, data the model does not fit, LiRA without a training run.
    """
    from trustlab.attacks.evasion.base import parse_eps
    from trustlab.results.html import write_page
    from trustlab.results.report import output_path
    from trustlab.workflows.targets import is_run_ref, load_target_model

    names = parse_checks(checks)
    if not isinstance(shadows, int) or shadows < 0:
        raise InputError(f"--shadows must be an integer >= 0, got {shadows!r}.")
    if eps is not None and not 0 < parse_eps(eps) <= 1:
        raise InputError(f"--eps must be in (0, 1], e.g. 8/255; got {eps}.")
    budget = (Budget(shadows=shadows) if shadows else Budget()).capped(n)  # checks n
    copy = None if out is None else output_path(out, "scorecard.html")
    store = store or RunStore()
    dev = resolve_device(device)
    source: Run | None = None
    if arch is not None:
        from trustlab.train.checkpoint import load_user_model

        if not dataset:
            raise InputError("which data? pass --dataset (your own model does not name it).")
        if not Path(target).is_file():
            raise InputError(f"{target} is not a file; with --arch, MODEL is a weights file.")
        model = load_user_model(target, arch, **dict(arch_kwargs or {}))
        label = f"{arch.rsplit(':', 1)[-1]} from {Path(target).name}"
    else:
        if target == LATEST:
            source = latest_run(store)
            target = str(source.id)
        elif is_run_ref(target):
            source = store.get(target)
        model, run_dataset, run_root = load_target_model(target, dev, store=store)
        dataset, data_root = dataset or run_dataset, data_root or run_root
        label = f"run {source.id} ({source.name})" if source else Path(target).name
    if not dataset:
        raise InputError("which data? pass --dataset (a run id knows its dataset).")
    model.to(dev).eval()  # checkpoints load in training mode; trustlab evaluates in eval mode
    test = load_dataset(dataset, "test", root=data_root)
    train = prep = None
    if source is not None and source.kind in ("train", "defend-privacy") and ("privacy" in names):
        from trustlab.config import TrainConfig
        from trustlab.utils.validate import parse_config
        from trustlab.workflows.privacy_defense import training_config
        from trustlab.workflows.train import prepare

        cfg = parse_config(TrainConfig, {**training_config(source.config), "device": str(dev)})
        if cfg.dataset == dataset:
            prep = prepare(cfg)
            train = prep.train
    if shadows and prep is None:
        raise InputError(
            "--shadows (LiRA) needs the model's training recipe: audit a trustlab training run "
            "(its id or `latest`) on its own dataset, with the privacy check."
        )
    config = {
        "target": str(target),
        "arch": arch,
        "arch_kwargs": dict(arch_kwargs or {}),
        "dataset": dataset,
        "checks": list(names),
        "eps": None if eps is None else str(eps),
        "n": n,
        "shadows": shadows,
        "seed": seed,
        "device": str(device),
    }
    # everything a user can get wrong is checked before the run exists
    from trustlab.train.trainer import check_model_fits

    check_model_fits(model, test, device=dev)
    run = store.create_run("audit", name or f"audit-{Path(str(target)).name}", config, seed=seed)
    with recording_outcome(run):
        card = audit(
            model,
            test,
            checks=names,
            train_data=train,
            eps=eps,
            n=n,
            seed=seed,
            device=dev,
            progress=progress,
            recipe=prep if shadows else None,
            budget=budget,
            label=label,
        )
        card.dataset = dataset
        text = scorecard_html(card)
        write_json_atomic(run.artifact_path("scorecard.json"), card.to_dict())
        run.add_artifact("scorecard.json", kind="scorecard")
        write_page(run.artifact_path("scorecard.html"), text)
        run.add_artifact("scorecard.html", kind="report")
        run.finish(card.summary())
    if copy is not None:
        # after the run is finished: a copy that cannot be written never fails the audit
        try:
            write_page(copy, text)
        except OSError as exc:
            warnings.warn(
                f"the audit is stored (run {run.id}: {run.dir / 'scorecard.html'}), but its "
                f"copy could not be written to {copy}: {exc.strerror or exc}.",
                stacklevel=2,
            )
    return run.refresh(), card
