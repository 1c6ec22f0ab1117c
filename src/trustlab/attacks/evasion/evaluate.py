"""Worst-case robustness: a cascade of attacks, as AutoAttack reports it (Croce & Hein, 2020).

The first attack runs on every correctly classified point; each later attack runs only on the
points still robust. A point counts as robust only if *no* attack fooled it, so the final robust
accuracy is the pointwise worst case over the attacks, and it is never above any single attack's.
The report gives the clean accuracy, the robust accuracy after each attack of the cascade and the
final (worst-case) robust accuracy.

The report also carries the imbalanced-gradient diagnostic of Ma et al. ("Imbalanced
Gradients"): the median over the correctly classified points of ``max(r, 1/r)``, ``r`` the ratio
of the input-gradient norms of the two margin terms ``z_y`` and ``z_max``
(:func:`~trustlab.attacks.evasion.md.imbalance_ratio`). When it exceeds ``imbalance_threshold``
(default 2: at the median input one term's gradient is more than twice the other's; trustlab's
heuristic, the paper gives no cut-off) the report is flagged "robustness may be overestimated by
PGD": run the margin decomposition attacks (``md``, ``mdmt``) before trusting the number.

Long evaluations are resumable: with ``state_path`` the per-sample robust mask is written
(atomically, safetensors) after every attack and batch, and a rerun skips what is done.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from torch.utils.data import Dataset

from trustlab.attacks.evasion.base import Attack
from trustlab.attacks.evasion.md import imbalance_ratio
from trustlab.data.datasets import ArrayDataset, as_array_dataset
from trustlab.errors import InputError
from trustlab.train.evaluate import predict_logits
from trustlab.utils.device import resolve_device
from trustlab.utils.io import atomic_path
from trustlab.utils.modules import device_of, frozen
from trustlab.utils.progress import progress_bar


@dataclass
class RobustnessReport:
    """What :func:`evaluate_robustness` measures (see the module).

    Attributes:
        clean_accuracy: accuracy on the clean points.
        robust_accuracy: the pointwise worst case over all attacks of the cascade.
        after_attack: cumulative robust accuracy after each attack, in cascade order.
        n: the number of points.
        robust_mask: ``(n,)`` bool, the points no attack fooled.
        imbalance: median ``max(r, 1/r)`` over the correctly classified points (``None``
            without the diagnostic).
        imbalance_flag: ``imbalance`` above the threshold: PGD may overestimate robustness.
        clean_mask: ``(n,)`` bool, the correctly classified points.

    Example::

        report = evaluate_robustness(model, test, make_suite("quick", model))
        report.to_dict()
    """

    clean_accuracy: float
    robust_accuracy: float  # the pointwise worst case over all attacks
    after_attack: dict[str, float] = field(default_factory=dict)  # cumulative, in cascade order
    n: int = 0
    robust_mask: torch.Tensor | None = None
    imbalance: float | None = None  # median max(r, 1/r) over correctly classified points
    imbalance_flag: bool = False  # imbalance > threshold: PGD may overestimate robustness
    clean_mask: torch.Tensor | None = None

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {
            "clean_accuracy": self.clean_accuracy,
            "robust_accuracy": self.robust_accuracy,
            "after_attack": dict(self.after_attack),
            "n": self.n,
            "imbalance": self.imbalance,
        }
        if self.imbalance_flag:
            out["warning"] = IMBALANCE_WARNING
        return out


IMBALANCE_THRESHOLD = 2.0
IMBALANCE_WARNING = (
    "imbalanced gradients: robustness may be overestimated by PGD; check it with md and mdmt"
)


def _load_state(path: Path, n: int, names: list[str]) -> tuple[torch.Tensor, torch.Tensor] | None:
    if not path.exists():
        return None
    st = load_file(str(path))
    if st["robust"].numel() != n or st["progress"].numel() != len(names):
        raise InputError(
            f"{path} holds the state of another evaluation ({st['robust'].numel()} points, "
            f"{st['progress'].numel()} attacks); delete it or pass another state_path."
        )
    return st["robust"].bool(), st["progress"].long()


def _save_state(path: Path, robust: torch.Tensor, progress: torch.Tensor) -> None:
    with atomic_path(path) as tmp:
        save_file({"robust": robust.to(torch.uint8), "progress": progress}, str(tmp))


def evaluate_robustness(
    model: nn.Module,
    data: Dataset | ArrayDataset,
    attacks: Mapping[str, Attack],
    batch_size: int = 256,
    device: str | torch.device | None = None,
    state_path: str | Path | None = None,
    diagnostic: bool = True,
    imbalance_threshold: float = IMBALANCE_THRESHOLD,
    progress: bool = False,
) -> RobustnessReport:
    """Run ``attacks`` (name -> attack, in order) as a cascade over ``data``; see the module.

    With ``diagnostic`` (default) the imbalanced-gradient diagnostic is computed on the
    correctly classified points and the report flagged above ``imbalance_threshold``.
    ``progress``: a bar over the batches of each attack, with the time left and the robust
    accuracy so far (only on a terminal).
    """
    if not attacks:
        raise InputError("evaluate_robustness needs at least one attack.")
    ds = data if isinstance(data, ArrayDataset) else as_array_dataset(data)
    dev = resolve_device(device) if device is not None else device_of(model)
    with frozen(model):
        report = _cascade(model, ds, attacks, batch_size, dev, state_path, progress)
        if diagnostic:
            report.imbalance = _median_imbalance(model, ds, report.clean_mask, batch_size, dev)
            report.imbalance_flag = (
                report.imbalance is not None and report.imbalance > imbalance_threshold
            )
    return report


def _median_imbalance(
    model: nn.Module, ds: ArrayDataset, clean: torch.Tensor, batch_size: int, dev: torch.device
) -> float | None:
    idx = torch.nonzero(clean).flatten()
    if not idx.numel():
        return None
    ratios = [
        imbalance_ratio(model, ds.x[b].to(dev), ds.y[b].to(dev)).cpu()
        for b in idx.split(batch_size)
    ]
    return float(torch.cat(ratios).median())


def _cascade(
    model: nn.Module,
    ds: ArrayDataset,
    attacks: Mapping[str, Attack],
    batch_size: int,
    dev: torch.device,
    state_path: str | Path | None,
    show: bool = False,
) -> RobustnessReport:
    logits = predict_logits(model, ds, batch_size, dev)
    names = list(attacks)
    n = len(ds)
    robust = logits.argmax(1) == ds.y
    clean_mask = robust.clone()
    clean = float(robust.float().mean())
    progress = torch.zeros(len(names), dtype=torch.long)  # next batch start per attack
    path = Path(state_path) if state_path is not None else None
    if path is not None:
        loaded = _load_state(path, n, names)
        if loaded is not None:
            robust, progress = loaded
    after: dict[str, float] = {}
    with progress_bar("attacks", 1, show, eta=True) as bar:
        for a, name in enumerate(names):
            atk = attacks[name]
            starts = range(int(progress[a]), n, batch_size)
            bar.reset(len(starts), f"{name} ({a + 1}/{len(names)})")
            for start in starts:
                idx = torch.arange(start, min(start + batch_size, n))
                idx = idx[robust[idx]]
                if idx.numel():
                    x, y = ds.x[idx].to(dev), ds.y[idx].to(dev)
                    adv = atk(x, y)
                    with torch.no_grad():
                        fooled = (model(adv).argmax(1) != y).cpu()
                    robust[idx[fooled]] = False
                progress[a] = min(start + batch_size, n)
                if path is not None:
                    _save_state(path, robust, progress)
                bar.info(f"robust {100 * float(robust[: progress[a]].float().mean()):.1f}%")
                bar.advance()
            after[name] = float(robust.float().mean())
    report = RobustnessReport(clean, float(robust.float().mean()), after, n, robust.clone())
    report.clean_mask = clean_mask
    return report
