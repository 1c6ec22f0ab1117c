"""Neural Cleanse: Wang, Yao, Shan, Li, Viswanath, Zheng & Zhao, "Neural Cleanse: Identifying and
Mitigating Backdoor Attacks in Neural Networks", IEEE S&P 2019.

**Inspect.** For every class ``t`` NC reverse-engineers the smallest trigger that sends clean
inputs to ``t``: a mask ``m`` (``H x W``, in [0, 1]) and a pattern ``p`` (``C x H x W``, in
[0, 1]) minimising ``CE(f((1 - m) x + m p), t) + lambda * |m|_1`` over clean data (``m`` and ``p``
are ``tanh`` re-parametrised, Adam at lr 0.1, betas (0.5, 0.9)). ``lambda`` starts at 1e-3 and
adapts per epoch: after ``patience`` (5) epochs with the reversed trigger's success >= 99% it is
multiplied by 2, after 5 below it divided by ``2 ** 1.5``; the kept trigger is the one of
smallest L1 norm among epochs at >= 99% success. A backdoored class needs a much smaller mask
than the others: with the L1 norms ``n_t``, the **anomaly index** of class ``t`` is
``|n_t - median(n)| / (1.4826 * MAD(n))`` (MAD = median absolute deviation; 1.4826 makes it
consistent with a normal distribution's standard deviation) and classes whose norm is below the
median with an index above 2 are **flagged**.

**Repair** (unlearning): fine-tune the model on clean data where ``fraction`` (20%) of each
batch carries the reversed trigger of a flagged class with its *true* label.

trustlab optimises all classes at once: each step builds ``K x B`` reversed-trigger inputs from
one clean batch and runs them in one forward/backward pass (Adam's update is elementwise, so
this equals ``K`` separate runs with the same batches). Defaults as the authors' code (1000
clean samples, batch 32, an epoch = one pass over them, the schedule above) except the number
of epochs: the authors allow up to 1000 with early stopping; trustlab defaults to ``epochs=5``
(160 Adam steps per class; timing in ``benchmarks/neural_cleanse.py`` and
docs/backdoor-defenses.md). Measured on a BadNets model of
digits (cnn-small), 5 epochs already single out the target (anomaly index 4.5, no other class
flagged); raise
``epochs`` for larger models, subtle triggers, or when the cost schedule should act (it needs
``patience`` epochs per move: with the defaults, epochs = patience = 5, neither the schedule nor
early stopping acts). Other departures: ``lambda`` starts at ``init_cost`` rather than at 0 (the
authors' code can start at 0 and set ``init_cost`` once the triggers succeed), the counters are
not cleared when ``lambda`` is reset from 0, and an epoch is ``ceil(samples / batch)`` steps
(the authors' ``samples // batch``). Early stopping as the authors' (no better norm for
``5 * patience`` epochs after the cost has moved both ways).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from trustlab.attacks.backdoor.triggers import apply_mask
from trustlab.data.datasets import ArrayDataset
from trustlab.defenses.backdoor.case import DefenseCase, after_repair
from trustlab.errors import InputError
from trustlab.registry import DEFENSES
from trustlab.utils.modules import device_of, frozen, train_mode
from trustlab.utils.progress import progress_bar
from trustlab.utils.seed import generator

CONSISTENCY = 1.4826


def _median(t: torch.Tensor) -> torch.Tensor:
    """The median, averaging the two middle values of an even count (as NumPy and the authors'
    code; ``torch.median`` returns the lower one)."""
    return torch.quantile(t, 0.5)


def anomaly_index(norms: torch.Tensor) -> torch.Tensor:
    """``|n - median(n)| / (1.4826 * MAD(n))`` per entry (0 where MAD is 0 and n is the median;
    inf where MAD is 0 and n differs)."""
    n = torch.as_tensor(norms, dtype=torch.float64).flatten()
    if n.numel() < 2:
        raise InputError("the anomaly index needs the norms of at least two classes.")
    med = _median(n)
    dev = (n - med).abs()
    mad = CONSISTENCY * _median(dev)
    if float(mad) == 0:
        return torch.where(dev == 0, 0.0, float("inf")).to(torch.float64)
    return dev / mad


def flagged_classes(norms: torch.Tensor, threshold: float = 2.0) -> list[int]:
    """Classes whose norm is below the median with an anomaly index above ``threshold``."""
    n = torch.as_tensor(norms, dtype=torch.float64).flatten()
    idx = anomaly_index(n)
    small = n < _median(n)
    return [int(i) for i in torch.nonzero(small & (idx > threshold)).flatten()]


@dataclass
class NCReport:
    """What :meth:`NeuralCleanse.inspect` finds, per class ``0 .. K-1`` (or per class of
    ``extra["classes"]`` when only some were scanned).

    Attributes:
        norms: ``(K,)`` L1 norms of the reversed masks.
        anomaly: ``(K,)`` anomaly indices.
        flagged: the classes flagged as backdoor targets.
        masks: ``(K, H, W)``; patterns: ``(K, C, H, W)``, both in [0, 1].
        success: ``(K,)`` success rate of each reversed trigger on the clean data.
        epochs: epochs run; threshold: the anomaly-index threshold (2).

    Example::

        report = NeuralCleanse().inspect(model, clean)
        report.flagged, report.to_dict()["anomaly_index"]
    """

    norms: torch.Tensor  # (K,) L1 norms of the reversed masks
    anomaly: torch.Tensor  # (K,) anomaly indices
    flagged: list[int]  # classes flagged as backdoor targets
    masks: torch.Tensor  # (K, H, W)
    patterns: torch.Tensor  # (K, C, H, W)
    success: torch.Tensor  # (K,) success rate of each reversed trigger on the clean data
    epochs: int
    threshold: float
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def max_anomaly_of_small(self) -> float:
        """The largest anomaly index among classes below the median norm (what NC thresholds)."""
        below = self.norms < _median(self.norms.double())
        return float(self.anomaly[below].max()) if bool(below.any()) else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "norms": [float(v) for v in self.norms],
            "anomaly_index": [float(v) for v in self.anomaly],
            "flagged": list(self.flagged),
            "success": [float(v) for v in self.success],
            "max_anomaly_of_small": self.max_anomaly_of_small,
            "epochs": self.epochs,
            "threshold": self.threshold,
            **self.extra,
        }


#: ``(1 - m) x + m p``: stamps a reversed trigger (:func:`~trustlab.attacks.backdoor.triggers.
#: apply_mask`)
apply_reversed = apply_mask


@DEFENSES.register(
    "nc",
    "Neural Cleanse: reverse-engineer a minimal trigger per class, flag outliers, unlearn",
    paper="Wang, Yao, Shan, Li, Viswanath, Zheng, Zhao. Neural Cleanse: Identifying and "
    "Mitigating Backdoor Attacks in Neural Networks. IEEE S&P 2019.",
    threat="model inspection with a small clean set (no poisoned data); repair by unlearning",
    protocol="inspector",
    filter=False,
    trains=True,
    budget="options",
    headline=("anomaly", "anomaly index of the target"),
)
class NeuralCleanse:
    """Neural Cleanse (Wang et al., IEEE S&P 2019; see the module): ``inspect(model, clean)
    -> NCReport`` and ``repair(model, clean, report) -> model``.

    Args:
        epochs: passes over the clean samples (default 5; the authors' code allows up to 1000
            with early stopping: see the module).
        samples: clean samples used (default 1000, the authors').
        batch_size: default 32 (the authors'); lr: Adam's, default 0.1 (the authors').
        init_cost: the starting ``lambda`` (1e-3); cost_multiplier: its factor (2).
        patience: epochs before ``lambda`` moves (5); success_threshold: 0.99.
        threshold: anomaly index above which a class is flagged (2, the paper's).
        classes: the classes to scan (default all).
        seed: seeds the random starts and the batches; progress: a progress bar.

    Shapes: clean inputs ``(N, C, H, W)`` in [0, 1]; masks ``(K, H, W)``, patterns
    ``(K, C, H, W)``.

    Example::

        nc = NeuralCleanse(epochs=5)
        report = nc.inspect(model, clean); model = nc.repair(model, clean, report)
    """

    def __init__(
        self,
        epochs: int = 5,
        samples: int = 1000,
        batch_size: int = 32,
        lr: float = 0.1,
        init_cost: float = 1e-3,
        cost_multiplier: float = 2.0,
        patience: int = 5,
        success_threshold: float = 0.99,
        threshold: float = 2.0,
        classes: list[int] | None = None,
        seed: int = 0,
        progress: bool = False,
    ) -> None:
        if epochs < 1 or samples < 1 or batch_size < 1 or patience < 1:
            raise InputError("epochs, samples, batch_size and patience must all be >= 1.")
        if lr <= 0 or init_cost < 0 or cost_multiplier <= 1:
            raise InputError("lr must be > 0, init_cost >= 0 and cost_multiplier > 1.")
        if not 0 < success_threshold <= 1:
            raise InputError(f"success_threshold must be in (0, 1], got {success_threshold}.")
        self.epochs, self.samples, self.batch_size, self.lr = epochs, samples, batch_size, lr
        self.init_cost, self.multiplier, self.patience = init_cost, cost_multiplier, patience
        self.success_threshold, self.threshold = success_threshold, threshold
        self.classes, self.seed, self.progress = classes, seed, progress

    @classmethod
    def run_case(cls, c: DefenseCase) -> dict[str, float]:
        """Inspect the artefact's model on the clean half, then unlearn on a copy: the target's
        ``anomaly``, ``max_anomaly``, ``detected``, ``flagged``, and the repair's numbers."""
        nc = cls(seed=c.seed, progress=c.progress, **c.options)
        report = nc.inspect(c.art.model, c.clean)
        target = getattr(c.art.policy, "target", None)
        classes = report.extra.get("classes", list(range(len(report.norms))))
        row = classes.index(target) if target in classes else None
        out = {
            "max_anomaly": report.max_anomaly_of_small,
            "flagged": float(len(report.flagged)),
            "anomaly": float(report.anomaly[row]) if row is not None else math.nan,
            "detected": float(target in report.flagged) if target is not None else math.nan,
        }
        model = nc.repair(copy.deepcopy(c.art.model), c.clean, report)
        c.keep["report"] = report
        return {**out, **after_repair(c.art, model, c.ev, c.before)}

    # -- reverse engineering -------------------------------------------------------------------
    def reverse(
        self,
        model: nn.Module,
        x: torch.Tensor,
        targets: list[int],
        init: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
        """``(masks (K, H, W), patterns (K, C, H, W), success (K,), epochs run)`` for
        ``targets``, optimised together on the clean inputs ``x``; ``init`` = ``(masks,
        patterns)`` in [0, 1] to start from (default: random, as the authors)."""
        dev = device_of(model)
        K, (C, H, W) = len(targets), x.shape[1:]
        g = generator(self.seed)
        # the authors start the mask and the pattern at random values
        m0, p0 = torch.rand(K, 1, H, W, generator=g), torch.rand(K, C, H, W, generator=g)
        if init is not None:
            m0 = init[0].detach().cpu().float().reshape(K, 1, H, W).clamp(1e-4, 1 - 1e-4)
            p0 = init[1].detach().cpu().float().reshape(K, C, H, W).clamp(1e-4, 1 - 1e-4)
        mask_t = torch.atanh((m0 - 0.5) * (2 - 1e-7)).to(dev)
        pat_t = torch.atanh((p0 - 0.5) * (2 - 1e-7)).to(dev)
        mask_t.requires_grad_(True)
        pat_t.requires_grad_(True)
        opt = torch.optim.Adam([mask_t, pat_t], lr=self.lr, betas=(0.5, 0.9))
        t = torch.tensor(targets, device=dev)
        cost = torch.full((K,), self.init_cost, device=dev)
        up = torch.zeros(K, dtype=torch.long, device=dev)
        down = torch.zeros_like(up)
        set_count = torch.zeros_like(up)
        moved_up = torch.zeros(K, dtype=torch.bool, device=dev)
        moved_down = torch.zeros_like(moved_up)
        best_norm = torch.full((K,), float("inf"), device=dev)
        best_mask = torch.zeros(K, H, W, device=dev)
        best_pat = torch.zeros(K, C, H, W, device=dev)
        best_succ = torch.zeros(K, device=dev)
        stale = torch.zeros_like(up)
        done = torch.zeros(K, dtype=torch.bool, device=dev)
        n = len(x)
        epochs_run = 0
        with (
            frozen(model),
            torch.enable_grad(),
            progress_bar("Neural Cleanse", self.epochs, self.progress) as advance,
        ):
            for epoch in range(self.epochs):
                epochs_run = epoch + 1
                order = torch.randperm(n, generator=g)
                hits = torch.zeros(K, device=dev)
                seen = 0
                for s in range(0, n, self.batch_size):
                    xb = x[order[s : s + self.batch_size]].to(dev)
                    b = len(xb)
                    m = torch.tanh(mask_t) / (2 - 1e-7) + 0.5  # (K, 1, H, W)
                    p = torch.tanh(pat_t) / (2 - 1e-7) + 0.5  # (K, C, H, W)
                    adv = (1 - m[:, None]) * xb[None] + (m * p)[:, None]  # (K, B, C, H, W)
                    logits = model(adv.reshape(K * b, C, H, W))
                    ce = F.cross_entropy(logits, t.repeat_interleave(b), reduction="none")
                    ce = ce.view(K, b).mean(1)
                    l1 = m.flatten(1).sum(1)
                    loss = (ce + cost * l1)[~done].sum()
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    with torch.no_grad():
                        pred = logits.argmax(1).view(K, b)
                        hits += (pred == t[:, None]).float().sum(1)
                    seen += b
                with torch.no_grad():
                    succ = hits / seen
                    m = (torch.tanh(mask_t) / (2 - 1e-7) + 0.5)[:, 0]
                    p = torch.tanh(pat_t) / (2 - 1e-7) + 0.5
                    norm = m.flatten(1).sum(1)
                    ok = succ >= self.success_threshold
                    better = ok & (norm < best_norm) & ~done
                    stale = torch.where(better, 0, stale + 1)
                    best_norm = torch.where(better, norm, best_norm)
                    best_mask[better], best_pat[better] = m[better], p[better]
                    best_succ = torch.where(better, succ, best_succ)
                    # the authors' cost schedule, per class
                    zero = cost == 0
                    set_count = torch.where(zero & ok, set_count + 1, 0)
                    reset = set_count >= self.patience
                    cost = torch.where(reset, torch.full_like(cost, self.init_cost), cost)
                    up = torch.where(ok, up + 1, 0)
                    down = torch.where(ok, 0, down + 1)
                    go_up, go_down = up >= self.patience, down >= self.patience
                    cost = torch.where(go_up, cost * self.multiplier, cost)
                    cost = torch.where(go_down, cost / self.multiplier**1.5, cost)
                    up, down = torch.where(go_up, 0, up), torch.where(go_down, 0, down)
                    moved_up |= go_up
                    moved_down |= go_down
                    done |= moved_up & moved_down & (stale >= 5 * self.patience)
                    never = torch.isinf(best_norm)  # keep the last trigger until one succeeds
                    best_mask[never], best_pat[never] = m[never], p[never]
                    best_succ = torch.where(never, succ, best_succ)
                advance()
                if bool(done.all()):
                    break
        return best_mask.cpu(), best_pat.cpu(), best_succ.cpu(), epochs_run

    def inspect(self, model: nn.Module, clean: ArrayDataset | torch.Tensor) -> NCReport:
        """Reverse-engineer a trigger for every class and flag the anomalous ones."""
        x = clean.x if isinstance(clean, ArrayDataset) else clean
        if not isinstance(x, torch.Tensor) or x.dim() != 4:
            raise InputError("Neural Cleanse needs clean images (N, C, H, W) or an ArrayDataset.")
        if len(x) > self.samples:
            pick = torch.randperm(len(x), generator=generator(self.seed))[: self.samples]
            x = x[pick]
        k = _num_classes(model, x[:1])
        targets = list(range(k)) if self.classes is None else list(self.classes)
        if len(targets) < 2 or any(not 0 <= c < k for c in targets):
            raise InputError(f"classes must be at least two of 0..{k - 1}, got {targets}.")
        masks, patterns, success, epochs = self.reverse(model, x, targets)
        norms = masks.flatten(1).sum(1)
        flagged = [targets[i] for i in flagged_classes(norms, self.threshold)]
        return NCReport(
            norms, anomaly_index(norms).float(), flagged, masks, patterns, success, epochs,
            self.threshold, {"classes": targets},
        )  # fmt: skip

    # -- repair -----------------------------------------------------------------------------
    def repair(
        self,
        model: nn.Module,
        clean: ArrayDataset,
        report: NCReport,
        fraction: float = 0.2,
        epochs: int = 1,
        lr: float = 0.01,
        batch_size: int = 64,
    ) -> nn.Module:
        """Unlearning: fine-tune ``model`` (in place; returned) with SGD on ``clean`` where
        ``fraction`` of every batch carries a flagged class's reversed trigger, true labels
        kept. With nothing flagged the model is returned unchanged."""
        if not 0 < fraction <= 1:
            raise InputError(f"fraction must be in (0, 1], got {fraction}.")
        if not report.flagged:
            return model
        dev = device_of(model)
        classes = report.extra.get("classes", list(range(len(report.norms))))
        rows = [classes.index(c) for c in report.flagged]
        masks, patterns = report.masks[rows].to(dev), report.patterns[rows].to(dev)
        g = generator(self.seed + 1)
        opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
        with train_mode(model):
            for _ in range(epochs):
                order = torch.randperm(len(clean), generator=g)
                for s in range(0, len(clean), batch_size):
                    idx = order[s : s + batch_size]
                    xb, yb = clean.x[idx].to(dev), clean.y[idx].to(dev)
                    k = max(1, round(fraction * len(xb)))
                    which = torch.randint(0, len(rows), (k,), generator=g).to(dev)
                    stamped = apply_reversed(xb[:k], masks[which][:, None], patterns[which])
                    xb = torch.cat([stamped, xb[k:]])
                    loss = F.cross_entropy(model(xb), yb)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
        return model


def reverse_engineer(
    model: nn.Module,
    x: torch.Tensor,
    targets: list[int],
    init: tuple[torch.Tensor, torch.Tensor] | None = None,
    *,
    epochs: int = 5,
    samples: int = 1000,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """One Neural-Cleanse reverse engineering with NC's other defaults:
    ``NeuralCleanse(epochs=epochs, samples=samples, seed=seed).reverse(model, x, targets,
    init=init)``. The ``reverse`` that
    :class:`~trustlab.attacks.backdoor.nc_evasion.NCEvasion` takes."""
    nc = NeuralCleanse(epochs=epochs, samples=samples, seed=seed)
    return nc.reverse(model, x, targets, init=init)


def _num_classes(model: nn.Module, x: torch.Tensor) -> int:
    dev = device_of(model)
    with frozen(model), torch.no_grad():
        return int(model(x.to(dev)).shape[1])
