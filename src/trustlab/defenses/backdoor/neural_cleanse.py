"""Neural Cleanse: Wang, Yao, Shan, Li, Viswanath, Zheng & Zhao, "Neural Cleanse: Identifying and
Mitigating Backdoor Attacks in Neural Networks", IEEE S&P 2019.

**Inspect.** For every class ``t`` NC reverse-engineers the smallest trigger that sends clean
inputs to ``t``: a mask ``m`` (``H x W``, in [0, 1]) and a pattern ``p`` (``C x H x W``, in
[0, 1]) minimising ``CE(f((1 - m) x + m p), t) + lambda * |m|_1`` over clean data (``m`` and ``p``
are ``tanh`` re-parametrised, Adam at lr 0.1, betas (0.5, 0.9)). A backdoored class needs a much
smaller mask than the others: with the L1 norms ``n_t``, the **anomaly index** of class ``t`` is
``|n_t - median(n)| / (1.4826 * MAD(n))`` (MAD = median absolute deviation; 1.4826 makes it
consistent with a normal distribution's standard deviation) and classes whose norm is below the
median with an index above 2 are **flagged**.

**Schedule** (the authors' code, bolunwang/backdoor ``visualizer.py``, ``Visualizer.visualize``,
with the settings of its ``gtsrb_visualize_example.py``; the paper gives none of it). Per epoch
(one pass over the clean samples), with the epoch's success rate of the trigger and the mean of
its mask L1 over the epoch's steps:

- the kept trigger is the one of the epoch with the smallest mean L1 among epochs at >= 99%
  success (a class that never reaches 99% keeps its last trigger);
- ``lambda`` starts at 0 (``reset_cost_to_zero``) and is set to ``init_cost`` (1e-3) after
  ``patience`` (5) epochs at >= 99% success; then it is multiplied by ``cost_multiplier`` (2)
  after 5 epochs at >= 99% and divided by ``2 ** 1.5`` after 5 below;
- **early stop**, per class: once ``lambda`` has moved both up and down, the class stops when
  its best L1 has not dropped below ``early_stop_threshold`` (0.99) x the best before it for
  ``early_stop_patience`` (5 x patience = 25) epochs in a row (epochs are counted once some
  trigger has succeeded). ``epochs`` (1000, the authors' ``STEPS``) caps the run.

The authors' ``Visualizer`` defaults (patience 10, multiplier 1.5, early-stop patience 2 x
patience) are overridden by their example script (5, 2, 5 x 5), which trustlab follows; the
early-stop threshold is the ``Visualizer`` default 0.99 (the example script passes 1.0, which
counts any improvement however small as progress; ``early_stop_threshold=1.0`` gives it).

**Repair** (unlearning): fine-tune the model on clean data where ``fraction`` (20%) of each
batch carries the reversed trigger of a flagged class with its *true* label.

trustlab optimises all classes at once: each step builds ``A x B`` reversed-trigger inputs from
one clean batch for the ``A`` classes still running and runs them in one forward/backward pass
(Adam's update is elementwise, so this equals separate runs on the same batches); a class that
stops early keeps its trigger (its rows get no more gradient; Adam's momentum may still move
them for a few steps, which changes nothing kept) and leaves the pass, so the later epochs cost
only the slow classes. The batch order has its own random stream, so a class scanned alone sees
the same batches. Measured on digits (cnn-small, docs/backdoor-defenses.md): classes stop after
51-117 epochs, where the 5 epochs of trustlab's earlier default left masks at 3-8 times their
converged L1 (BadNets target: 46 of 256 pixels after 5 epochs, 5.9 converged; anomaly index 4.3
-> 7.1) for 11-18x the CPU time; a budgeted scan caps ``epochs`` and should then pass
``reset_cost_to_zero=False``. Departure: an epoch is ``ceil(samples / batch)`` steps over a
fresh shuffle of a fixed pool of ``samples`` clean images (the authors' ``samples // batch``
steps of an endless shuffled stream over the whole clean set). As in the authors' Keras
function, a step's success and L1 are those of the trigger before the step's update.
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
from trustlab.utils.seed import derive_seed, generator

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
        epochs: epochs run (the most of any class; ``extra["epochs_per_class"]`` per class);
        threshold: the anomaly-index threshold (2).

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


@dataclass
class _Reversal:
    """One batched reverse engineering: the kept triggers, and per epoch which classes were
    still running, their success, mean mask L1 over the epoch's steps and ``lambda``."""

    masks: torch.Tensor
    patterns: torch.Tensor
    success: torch.Tensor
    epochs: int  # the most epochs any class ran
    epochs_per_class: list[int]
    log: list[dict[str, list[float]]]


class _Schedule:
    """The authors' per-epoch bookkeeping (``Visualizer.visualize`` in bolunwang/backdoor), for
    ``K`` classes at once: which trigger to keep, the early stop, and the cost schedule, in the
    authors' order. :meth:`update` takes an epoch's success rates and mean mask L1 norms and
    returns the classes whose trigger of this epoch is the new best."""

    def __init__(self, nc: NeuralCleanse, k: int, dev: torch.device) -> None:
        self.nc = nc
        start = 0.0 if nc.reset_cost_to_zero else nc.init_cost
        self.cost = torch.full((k,), start, device=dev)
        zeros = torch.zeros(k, dtype=torch.long, device=dev)
        self.set_count, self.up, self.down, self.stale = zeros, zeros, zeros, zeros
        self.up_flag = torch.zeros(k, dtype=torch.bool, device=dev)
        self.down_flag, self.done = self.up_flag.clone(), self.up_flag.clone()
        self.reg_best = torch.full((k,), float("inf"), device=dev)
        self.stale_best = self.reg_best.clone()

    def update(self, succ: torch.Tensor, reg: torch.Tensor) -> torch.Tensor:
        nc, live = self.nc, ~self.done
        ok = succ >= nc.success_threshold
        better = ok & (reg < self.reg_best) & live
        self.reg_best = torch.where(better, reg, self.reg_best)
        if nc.early_stop:
            # epochs in a row in which the best norm did not drop below ``threshold`` x the
            # best before it, counted once some trigger has succeeded
            found = torch.isfinite(self.reg_best)
            same = self.reg_best >= nc.early_stop_threshold * self.stale_best
            self.stale = torch.where(found, torch.where(same, self.stale + 1, 0), self.stale)
            self.stale_best = torch.minimum(self.reg_best, self.stale_best)
            stop = self.up_flag & self.down_flag & (self.stale >= nc.early_stop_patience)
            self.done = self.done | (stop & live)
        # lambda at 0 is set to init_cost after ``patience`` successful epochs (counters and
        # flags cleared); then x multiplier after ``patience`` successes, / multiplier^1.5
        # after ``patience`` failures
        self.set_count = torch.where((self.cost == 0) & ok, self.set_count + 1, 0)
        reset = self.set_count >= nc.patience
        self.cost = torch.where(reset, torch.full_like(self.cost, nc.init_cost), self.cost)
        self.up, self.down = torch.where(reset, 0, self.up), torch.where(reset, 0, self.down)
        self.up_flag, self.down_flag = self.up_flag & ~reset, self.down_flag & ~reset
        self.up = torch.where(ok, self.up + 1, 0)
        self.down = torch.where(ok, 0, self.down + 1)
        go_up = self.up >= nc.patience
        go_down = ~go_up & (self.down >= nc.patience)
        self.cost = torch.where(go_up, self.cost * nc.multiplier, self.cost)
        self.cost = torch.where(go_down, self.cost / nc.multiplier**1.5, self.cost)
        self.up, self.down = torch.where(go_up, 0, self.up), torch.where(go_down, 0, self.down)
        self.up_flag, self.down_flag = self.up_flag | go_up, self.down_flag | go_down
        return better


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
        epochs: the most passes over the clean samples (default 1000, the authors' ``STEPS``;
            a budget guard: the early stop ends a class's run long before on the models
            measured).
        samples: clean samples used (default 1000: the authors' example script's
            ``NB_SAMPLE``, which there sets the steps per epoch of a stream over the whole clean
            test set; trustlab fixes a pool of that many samples and passes over it each
            epoch).
        batch_size: default 32 (the authors'); lr: Adam's, default 0.1 (the authors').
        init_cost: ``lambda`` once the triggers succeed (1e-3); cost_multiplier: its factor
            (2, the authors' example script).
        patience: epochs before ``lambda`` moves (5, the example script); success_threshold:
            0.99.
        threshold: anomaly index above which a class is flagged (2, the paper's).
        classes: the classes to scan (default all).
        seed: seeds the random starts and the batches; progress: a progress bar.
        early_stop: stop a class once converged (True, the authors').
        early_stop_threshold: a best L1 above this fraction of the previous best counts as no
            progress (0.99, the authors' ``Visualizer`` default; their example script: 1.0).
        early_stop_patience: epochs without progress before a class stops (default
            ``5 * patience`` = 25, the example script).
        reset_cost_to_zero: start ``lambda`` at 0 and set it to ``init_cost`` after
            ``patience`` successful epochs (True, the authors' default); False starts at
            ``init_cost`` (a budgeted run: a few epochs at ``lambda`` 0 would not shrink the
            mask at all).

    Shapes: clean inputs ``(N, C, H, W)`` in [0, 1]; masks ``(K, H, W)``, patterns
    ``(K, C, H, W)``. ``report.extra["epochs_per_class"]`` gives the epochs each class ran.

    Example::

        nc = NeuralCleanse()
        report = nc.inspect(model, clean); model = nc.repair(model, clean, report)
    """

    def __init__(
        self,
        epochs: int = 1000,
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
        early_stop: bool = True,
        early_stop_threshold: float = 0.99,
        early_stop_patience: int | None = None,
        reset_cost_to_zero: bool = True,
    ) -> None:
        if early_stop_patience is None:
            early_stop_patience = 5 * patience
        if min(epochs, samples, batch_size, patience, early_stop_patience) < 1:
            raise InputError(
                "epochs, samples, batch_size, patience and early_stop_patience must all be >= 1."
            )
        if lr <= 0 or init_cost < 0 or cost_multiplier <= 1:
            raise InputError("lr must be > 0, init_cost >= 0 and cost_multiplier > 1.")
        if not 0 < success_threshold <= 1:
            raise InputError(f"success_threshold must be in (0, 1], got {success_threshold}.")
        if not 0 < early_stop_threshold <= 1:
            raise InputError(f"early_stop_threshold must be in (0, 1], got {early_stop_threshold}.")
        self.epochs, self.samples, self.batch_size, self.lr = epochs, samples, batch_size, lr
        self.init_cost, self.multiplier, self.patience = init_cost, cost_multiplier, patience
        self.success_threshold, self.threshold = success_threshold, threshold
        self.classes, self.seed, self.progress = classes, seed, progress
        self.early_stop, self.early_stop_threshold = early_stop, early_stop_threshold
        self.early_stop_patience, self.reset_cost_to_zero = early_stop_patience, reset_cost_to_zero

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
        ``targets``, optimised together on the clean inputs ``x`` (epochs run: the most any
        class ran); ``init`` = ``(masks, patterns)`` in [0, 1] to start from (default: random,
        as the authors)."""
        r = self._reverse(model, x, targets, init)
        return r.masks, r.patterns, r.success, r.epochs

    def _reverse(
        self,
        model: nn.Module,
        x: torch.Tensor,
        targets: list[int],
        init: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> _Reversal:
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
        # the batches come from their own stream, so they do not depend on K (a class scanned
        # alone sees the same batches as in the batched pass)
        order_g = generator(derive_seed(self.seed, "nc-batches"))
        sched = _Schedule(self, K, dev)
        best_mask = torch.zeros(K, H, W, device=dev)
        best_pat = torch.zeros(K, C, H, W, device=dev)
        best_succ = torch.zeros(K, device=dev)
        ran = torch.zeros(K, dtype=torch.long)
        log: list[dict[str, list[float]]] = []
        n = len(x)
        with (
            frozen(model),
            torch.enable_grad(),
            progress_bar("Neural Cleanse", self.epochs, self.progress) as advance,
        ):
            for epoch in range(self.epochs):
                # a class that stopped early keeps its trigger and leaves the batched pass;
                # Adam's update of the others is unchanged (it is elementwise)
                act = torch.nonzero(~sched.done).flatten()
                ran[act.cpu()] = epoch + 1
                order = torch.randperm(n, generator=order_g)
                hits = torch.zeros(K, device=dev)
                reg = torch.zeros(K, device=dev)
                steps = seen = 0
                for s in range(0, n, self.batch_size):
                    xb = x[order[s : s + self.batch_size]].to(dev)
                    b, a = len(xb), len(act)
                    m = (torch.tanh(mask_t) / (2 - 1e-7) + 0.5)[act]  # (A, 1, H, W)
                    p = (torch.tanh(pat_t) / (2 - 1e-7) + 0.5)[act]  # (A, C, H, W)
                    adv = (1 - m[:, None]) * xb[None] + (m * p)[:, None]  # (A, B, C, H, W)
                    logits = model(adv.reshape(a * b, C, H, W))
                    ce = F.cross_entropy(logits, t[act].repeat_interleave(b), reduction="none")
                    ce = ce.view(a, b).mean(1)
                    l1 = m.flatten(1).sum(1)
                    loss = (ce + sched.cost[act] * l1).sum()
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    with torch.no_grad():
                        pred = logits.argmax(1).view(a, b)
                        hits[act] += (pred == t[act][:, None]).float().sum(1)
                        reg[act] += l1
                    seen += b
                    steps += 1
                with torch.no_grad():
                    succ, reg = hits / seen, reg / steps  # the epoch's means, as the authors
                    m = (torch.tanh(mask_t) / (2 - 1e-7) + 0.5)[:, 0]
                    p = torch.tanh(pat_t) / (2 - 1e-7) + 0.5
                    live = ~sched.done
                    cost = sched.cost.clone()
                    better = sched.update(succ, reg)
                    best_mask[better], best_pat[better] = m[better], p[better]
                    best_succ = torch.where(better, succ, best_succ)
                    # keep the last trigger until one succeeds (the authors' fallback)
                    never = torch.isinf(sched.reg_best) & live
                    best_mask[never], best_pat[never] = m[never], p[never]
                    best_succ = torch.where(never, succ, best_succ)
                    log.append(
                        {
                            "active": live.cpu().tolist(),
                            "success": succ.cpu().tolist(),
                            "reg": reg.cpu().tolist(),
                            "cost": cost.cpu().tolist(),
                        }
                    )
                advance()
                if bool(sched.done.all()):
                    break
        return _Reversal(
            best_mask.cpu(), best_pat.cpu(), best_succ.cpu(), int(ran.max()), ran.tolist(), log
        )

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
        r = self._reverse(model, x, targets)
        norms = r.masks.flatten(1).sum(1)
        flagged = [targets[i] for i in flagged_classes(norms, self.threshold)]
        extra = {"classes": targets, "epochs_per_class": r.epochs_per_class}
        return NCReport(
            norms, anomaly_index(norms).float(), flagged, r.masks, r.patterns, r.success,
            r.epochs, self.threshold, extra,
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


def _num_classes(model: nn.Module, x: torch.Tensor) -> int:
    dev = device_of(model)
    with frozen(model), torch.no_grad():
        return int(model(x.to(dev)).shape[1])
