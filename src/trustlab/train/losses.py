"""Robust losses for learning with noisy labels: the SCE and Active-Passive (APL) families.

Sources:

- SCE: Wang, Ma, Chen, Luo, Yi, Bailey, "Symmetric Cross Entropy for Robust Learning with Noisy
  Labels", ICCV 2019 (public code: github.com/HanxunH/SCELoss-Reproduce).
- APL: Ma, Huang, Wang, Romano, Erfani, Bailey, "Normalized Loss Functions for Deep Learning with
  Noisy Labels", ICML 2020 (public code: github.com/HanxunH/Active-Passive-Losses).
- GCE: Zhang & Sabuncu, "Generalized Cross Entropy Loss for Training Deep Neural Networks with
  Noisy Labels", NeurIPS 2018. Focal loss: Lin et al., ICCV 2017.

Notation: ``z`` logits ``(N, K)``, ``p = softmax(z)``, ``y`` the (possibly noisy) label. Every
loss is a pure function of ``(logits, labels)`` returning per-sample values reduced by
``reduction="mean"`` (default), ``"sum"`` or ``"none"``:

- ``ce``: ``-log p_y``.
- ``mae``: ``1 - p_y`` (half the L1 distance ``||p - e_y||_1``).
- ``gce``: ``(1 - p_y^q) / q``; ``q = 0.7``.
- ``rce``: ``-sum_k p_k log clamp(e_y, 1e-4, 1)_k = -A (1 - p_y)``; ``A = ln(1e-4) ~ -9.21``.
- ``sce``: ``alpha * CE + beta * RCE``; ``alpha, beta`` per dataset (below).
- ``nce``: ``-log p_y / (-sum_j log p_j)``.
- ``nfl``: ``FL(y) / sum_j FL(j)`` with ``FL(j) = -(1 - p_j)^gamma log p_j``; ``gamma = 0.5``.
- ``ngce``: ``(1 - p_y^q) / (K - sum_j p_j^q)``; ``q = 0.1`` (0.7 on CIFAR-100).
- ``nmae``: ``(1 - p_y) / (K - 1)``.
- ``nrce``: ``RCE / (-A (K - 1))`` (equal in value to NMAE).
- APL (``"nce+rce"``, ...): ``alpha * Active + beta * Passive``, Active in {NCE, NFL, NGCE},
  Passive in {MAE, RCE}; one composer, :class:`APL`.

**Catalogue.** Every loss class is registered in :data:`~trustlab.registry.LOSSES` where it is
defined (``trustlab list losses``), with its paper; :class:`APL` once per pair of the paper's
sets (``"nce+rce"``, ...; card defaults ``active``/``passive``). :func:`make_loss` builds any of
them by name with the per-dataset defaults of :func:`loss_defaults`.

Each normalised loss (NCE, NFL, NGCE, NMAE, NRCE) sums to exactly 1 over the K labels for any
logits, which is what makes it robust to symmetric noise (APL, Theorem 1).

**The constant A.** RCE clamps the one-hot label to ``[1e-4, 1]`` so that ``log 0`` becomes
``A = ln(1e-4) ~ -9.21``. The SCE paper writes ``A = -4``; the public code's effective value is
``ln(1e-4)``, and that is the value behind the papers' reported numbers, so it is trustlab's
default (:data:`LOG_1E4`). ``A`` is an explicit parameter of RCE, SCE and NRCE; it must be < 0.

**MAE.** ``mae = 1 - p_y`` is half the L1 distance between ``p`` and the one-hot label
(``||p - e_y||_1 = 2 (1 - p_y)``), as in the public code's "reduced MAE"; the APL/SCE betas paired
with MAE were tuned on this scale.

**Where trustlab differs from the public code (the spec's formulas win):**

- GCE, NGCE and RCE: the public code clamps ``p`` to ``[1e-7, 1]``. trustlab does not clamp ``p``:
  ``p^q`` is computed as ``exp(q log p)`` from ``log_softmax`` (finite gradients at ``p = 0``), so
  RCE is exactly ``-A (1 - p_y)``; the public value differs by at most ``-A (K-1) 1e-7``.
- NFL: the public code detaches the normaliser ``sum_j FL(j)`` and ``p_y`` in the focal factor
  (``logpt.data``); trustlab lets the gradient flow through all of it, as the formula says.
- NRCE: the public normaliser ``1 / 4 * (K - 1)`` evaluates to ``(K - 1) / 4`` (operator
  precedence) and multiplies, and its RCE uses ``ln(1e-4)``, so it does not sum to 1. trustlab uses
  the paper's ``RCE / (-A (K - 1))``, which sums to 1 for any A.
- NMAE: the public code computes ``(1 - p_y) / (2 (K - 1))`` (the paper's normaliser applied to the
  reduced MAE), which sums to 1/2. trustlab uses ``(1 - p_y) / (K - 1)``, which sums to 1.

**Numerics.** All losses start from ``log_softmax``; ``1 - p`` and ``1 - p^q`` are computed with
``expm1`` (exact near ``p = 1``); the focal factor clamps ``1 - p`` from below at the dtype's
machine epsilon so that ``(1 - p)^gamma`` has a finite gradient at ``p = 1``. Values and gradients
are finite for logits of magnitude 1e4 of either sign.

**Per-dataset defaults** (:data:`LOSS_DEFAULTS`, :func:`loss_defaults`): SCE ``alpha, beta`` =
0.1, 1 (CIFAR-10); 6, 0.1 (CIFAR-100); 0.01, 1 (MNIST). APL = 1, 1 (CIFAR-10); 1, 10 (MNIST);
10, 0.1 (CIFAR-100 with RCE) and 10, 1 (CIFAR-100 with MAE, from the public configs; the papers'
text gives only the RCE pair). NGCE ``q`` = 0.1, 0.7 on CIFAR-100. trustlab's datasets map to
these as: mnist, fashion-mnist, digits -> MNIST; cifar100 -> CIFAR-100; everything else -> CIFAR-10.

**Validation.** Non-tensor or non-float logits, logits not ``(N, K)`` with ``K >= 2``, labels not
an ``(N,)`` integer tensor on the logits' device, an empty batch, and bad hyper-parameters raise
:class:`~trustlab.errors.InputError`. Labels outside ``[0, K)`` raise it for CPU tensors; on an
accelerator that check would cost a host sync per step, so there (like ``F.cross_entropy``) an
out-of-range label fails in the indexing kernel instead (trustlab datasets check label ranges when
built).
"""

from __future__ import annotations

import difflib
import math
import numbers
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from trustlab.errors import InputError
from trustlab.registry import LOSSES

__all__ = [
    "ACTIVE_LOSSES",
    "APL",
    "CE",
    "DATASET_FAMILIES",
    "GCE",
    "LOG_1E4",
    "LOSS_DEFAULTS",
    "LOSS_NAMES",
    "MAE",
    "NCE",
    "NFL",
    "NGCE",
    "NMAE",
    "NRCE",
    "PASSIVE_LOSSES",
    "RCE",
    "SCE",
    "ce",
    "gce",
    "loss_defaults",
    "mae",
    "make_loss",
    "nce",
    "nfl",
    "ngce",
    "nmae",
    "nrce",
    "paper_family",
    "rce",
    "sce",
]

Reduction = Literal["mean", "none", "sum"]

#: ``ln(1e-4) ~ -9.2103``: RCE's ``log 0`` after the public code's clamp of the one-hot label to
#: ``[1e-4, 1]``; trustlab's default ``A`` (the SCE paper writes ``A = -4``).
LOG_1E4: float = math.log(1e-4)

#: APL's active terms (normalised, "active" in the paper's sense) and passive terms.
ACTIVE_LOSSES: tuple[str, ...] = ("nce", "nfl", "ngce")
PASSIVE_LOSSES: tuple[str, ...] = ("mae", "rce")

_SCE_PAPER = (
    "Wang, Ma, Chen, Luo, Yi, Bailey. Symmetric Cross Entropy for Robust Learning with Noisy "
    "Labels. ICCV 2019."
)
_APL_PAPER = (
    "Ma, Huang, Wang, Romano, Erfani, Bailey. Normalized Loss Functions for Deep Learning with "
    "Noisy Labels. ICML 2020."
)

#: the papers' per-dataset hyper-parameters, keyed by the paper's dataset ("mnist", "cifar10",
#: "cifar100"); "apl+rce" / "apl+mae" are APL's alpha/beta with an RCE / MAE passive term.
LOSS_DEFAULTS: dict[str, dict[str, dict[str, float]]] = {
    "mnist": {
        "sce": {"alpha": 0.01, "beta": 1.0},
        "apl+rce": {"alpha": 1.0, "beta": 10.0},
        "apl+mae": {"alpha": 1.0, "beta": 10.0},
        "ngce": {"q": 0.1},
    },
    "cifar10": {
        "sce": {"alpha": 0.1, "beta": 1.0},
        "apl+rce": {"alpha": 1.0, "beta": 1.0},
        "apl+mae": {"alpha": 1.0, "beta": 1.0},
        "ngce": {"q": 0.1},
    },
    "cifar100": {
        "sce": {"alpha": 6.0, "beta": 0.1},
        "apl+rce": {"alpha": 10.0, "beta": 0.1},
        "apl+mae": {"alpha": 10.0, "beta": 1.0},
        "ngce": {"q": 0.7},
    },
}

#: trustlab dataset -> the paper dataset whose defaults it takes; any other dataset -> "cifar10"
DATASET_FAMILIES: dict[str, str] = {
    "mnist": "mnist",
    "fashion-mnist": "mnist",
    "digits": "mnist",
    "cifar100": "cifar100",
}

_REDUCTIONS = ("mean", "none", "sum")


# --------------------------------------------------------------------------------------------
# validation helpers


def _check_reduction(reduction: str) -> str:
    if reduction not in _REDUCTIONS:
        raise InputError(
            f"unknown reduction {reduction!r}; use one of {', '.join(map(repr, _REDUCTIONS))}."
        )
    return reduction


def _check_number(
    name: str,
    value: Any,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    fix: str = "",
) -> float:
    """``value`` as a finite float within the given bounds, else :class:`InputError`."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    number = float(value) if ok else math.nan
    if ok and math.isfinite(number):
        ok = not (
            (low is not None and (number < low or (low_open and number == low)))
            or (high is not None and (number > high or (high_open and number == high)))
        )
    else:
        ok = False
    if not ok:
        lo = "" if low is None else f"{'>' if low_open else '>='} {low:g}"
        hi = "" if high is None else f"{'<' if high_open else '<='} {high:g}"
        rule = " and ".join(s for s in (lo, hi) if s)
        hint = f" {fix}" if fix else ""
        raise InputError(f"{name} must be a finite number {rule}, got {value!r}.{hint}".rstrip())
    return number


def _check_q(q: Any, loss: str) -> float:
    return _check_number(
        f"{loss} q", q, low=0.0, high=1.0, low_open=True, fix="(the papers use 0.7 or 0.1)."
    )


def _check_gamma(gamma: Any) -> float:
    return _check_number("nfl gamma", gamma, low=0.0, fix="(the APL paper uses 0.5).")


def _check_a(A: Any, loss: str) -> float:
    return _check_number(
        f"{loss} A",
        A,
        high=0.0,
        high_open=True,
        fix="A is the log of the one-hot clamp value, e.g. math.log(1e-4) (default) or -4.",
    )


def _check_weight(name: str, value: Any, loss: str) -> float:
    return _check_number(f"{loss} {name}", value, low=0.0, fix="Use a non-negative weight.")


def _prepare(logits: Any, labels: Any, loss: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate ``(logits, labels)``; return ``(log_softmax(logits), labels as (N, 1) int64)``."""
    if not isinstance(logits, torch.Tensor) or not isinstance(labels, torch.Tensor):
        raise InputError(
            f"{loss}: logits and labels must be torch tensors, got {type(logits).__name__} and "
            f"{type(labels).__name__}; convert them with torch.as_tensor."
        )
    if not logits.is_floating_point():
        raise InputError(
            f"{loss}: logits must be a floating-point tensor, got {logits.dtype}; pass the "
            "model's raw (pre-softmax) outputs, e.g. logits.float()."
        )
    if logits.dim() != 2:
        raise InputError(
            f"{loss}: logits must have shape (N, K), got {tuple(logits.shape)}; reshape them to "
            "(batch, classes)."
        )
    n, k = logits.shape
    if k < 2:
        raise InputError(
            f"{loss}: logits have K={k} class(es); these losses need K >= 2 classes (one logit "
            "per class, not a single binary score)."
        )
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise InputError(
            f"{loss}: labels must be integer class indices (int64), got {labels.dtype}; pass "
            "labels.long() (not one-hot or soft labels)."
        )
    if labels.dim() != 1 or labels.shape[0] != n:
        raise InputError(
            f"{loss}: labels must have shape ({n},) to match logits {tuple(logits.shape)}, got "
            f"{tuple(labels.shape)}; pass one class index per row of logits."
        )
    if n == 0:
        raise InputError(f"{loss}: got an empty batch (N=0); skip empty batches.")
    if labels.device != logits.device:
        raise InputError(
            f"{loss}: labels are on {labels.device} but logits on {logits.device}; move the "
            "labels with labels.to(logits.device)."
        )
    if labels.device.type == "cpu":  # free on CPU; a host sync per step on an accelerator
        bad = (labels < 0) | (labels >= k)
        if bool(bad.any()):
            raise InputError(
                f"{loss}: labels must lie in [0, {k - 1}] for K={k} classes, got values in "
                f"[{int(labels.min())}, {int(labels.max())}]; check the labels or the model's "
                "number of classes."
            )
    return F.log_softmax(logits, dim=1), labels.long().unsqueeze(1)


def _reduce(values: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "mean":
        return values.mean()
    if reduction == "sum":
        return values.sum()
    return values


# --------------------------------------------------------------------------------------------
# per-sample terms on validated inputs: logp (N, K) log-probabilities, y (N, 1) int64 labels


def _one_minus_p(logp: torch.Tensor) -> torch.Tensor:
    """``1 - exp(logp)``, exact near ``p = 1``."""
    return -torch.expm1(logp)


def _normalised(terms: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``terms[y] / sum_j terms[j]`` per row: the APL normalisation."""
    return terms.gather(1, y).squeeze(1) / terms.sum(dim=1)


def _ce(logp: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return -logp.gather(1, y).squeeze(1)


def _mae(logp: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return _one_minus_p(logp.gather(1, y).squeeze(1))


def _gce(logp: torch.Tensor, y: torch.Tensor, q: float) -> torch.Tensor:
    # (1 - p_y^q) / q with p^q = exp(q log p): finite gradient at p = 0
    return -torch.expm1(q * logp.gather(1, y).squeeze(1)) / q


def _rce(logp: torch.Tensor, y: torch.Tensor, A: float) -> torch.Tensor:
    return -A * _mae(logp, y)


def _nce(logp: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return _normalised(-logp, y)


def _nfl(logp: torch.Tensor, y: torch.Tensor, gamma: float) -> torch.Tensor:
    eps = torch.finfo(logp.dtype).eps
    focal = _one_minus_p(logp).clamp_min(eps) ** gamma  # finite gradient at p = 1
    return _normalised(-focal * logp, y)


def _ngce(logp: torch.Tensor, y: torch.Tensor, q: float) -> torch.Tensor:
    # K - sum_j p_j^q == sum_j (1 - p_j^q): summed term by term, exact near p = 1
    return _normalised(-torch.expm1(q * logp), y)


def _nmae(logp: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return _mae(logp, y) / (logp.shape[1] - 1)


def _nrce(logp: torch.Tensor, y: torch.Tensor, A: float) -> torch.Tensor:
    return _rce(logp, y, A) / (-A * (logp.shape[1] - 1))


# --------------------------------------------------------------------------------------------
# public functions


def ce(logits: torch.Tensor, labels: torch.Tensor, reduction: Reduction = "mean") -> torch.Tensor:
    """Cross entropy ``-log p_y`` (computed from ``log_softmax``)."""
    reduction = _check_reduction(reduction)
    logp, y = _prepare(logits, labels, "ce")
    return _reduce(_ce(logp, y), reduction)


def mae(logits: torch.Tensor, labels: torch.Tensor, reduction: Reduction = "mean") -> torch.Tensor:
    """Mean absolute error ``1 - p_y``: half the L1 distance ``||p - e_y||_1 = 2 (1 - p_y)``.

    The halved form is the public APL/SCE code's "reduced MAE" (Ghosh et al., AAAI 2017 define
    the full L1 distance); the papers' betas for MAE were tuned on this scale.
    """
    reduction = _check_reduction(reduction)
    logp, y = _prepare(logits, labels, "mae")
    return _reduce(_mae(logp, y), reduction)


def gce(
    logits: torch.Tensor, labels: torch.Tensor, q: float = 0.7, reduction: Reduction = "mean"
) -> torch.Tensor:
    """Generalised cross entropy ``(1 - p_y^q) / q``, ``q`` in (0, 1], default 0.7.

    Zhang & Sabuncu, NeurIPS 2018. ``q -> 0`` tends to CE; ``q = 1`` is MAE (``1 - p_y``).
    ``p^q`` is ``exp(q log p)``: no clamp of ``p`` (the public code clamps it to ``[1e-7, 1]``).
    """
    reduction = _check_reduction(reduction)
    q = _check_q(q, "gce")
    logp, y = _prepare(logits, labels, "gce")
    return _reduce(_gce(logp, y, q), reduction)


def rce(
    logits: torch.Tensor,
    labels: torch.Tensor,
    A: float = LOG_1E4,
    reduction: Reduction = "mean",
) -> torch.Tensor:
    """Reverse cross entropy ``-sum_k p_k log q_k = -A (1 - p_y)`` (SCE, ICCV 2019).

    ``q`` is the one-hot label with its zeros replaced by ``exp(A)``; ``A < 0``. Default
    ``A = ln(1e-4) ~ -9.21``, the public code's effective value (its one-hot clamp to
    ``[1e-4, 1]``), which produced the papers' numbers; the SCE paper's text writes ``A = -4``.
    """
    reduction = _check_reduction(reduction)
    A = _check_a(A, "rce")
    logp, y = _prepare(logits, labels, "rce")
    return _reduce(_rce(logp, y, A), reduction)


def sce(
    logits: torch.Tensor,
    labels: torch.Tensor,
    alpha: float = 0.1,
    beta: float = 1.0,
    A: float = LOG_1E4,
    reduction: Reduction = "mean",
) -> torch.Tensor:
    """Symmetric cross entropy ``alpha * CE + beta * RCE`` (Wang et al., ICCV 2019).

    Defaults ``alpha=0.1, beta=1`` (the paper's CIFAR-10 values; 6, 0.1 on CIFAR-100 and
    0.01, 1 on MNIST: see :func:`loss_defaults`), ``A = ln(1e-4)`` (see :func:`rce`).
    """
    reduction = _check_reduction(reduction)
    alpha = _check_weight("alpha", alpha, "sce")
    beta = _check_weight("beta", beta, "sce")
    A = _check_a(A, "sce")
    logp, y = _prepare(logits, labels, "sce")
    return _reduce(alpha * _ce(logp, y) + beta * _rce(logp, y, A), reduction)


def nce(logits: torch.Tensor, labels: torch.Tensor, reduction: Reduction = "mean") -> torch.Tensor:
    """Normalised cross entropy ``-log p_y / (-sum_j log p_j)`` (APL, ICML 2020).

    The gradient flows through the denominator (as in the public code).
    """
    reduction = _check_reduction(reduction)
    logp, y = _prepare(logits, labels, "nce")
    return _reduce(_nce(logp, y), reduction)


def nfl(
    logits: torch.Tensor,
    labels: torch.Tensor,
    gamma: float = 0.5,
    reduction: Reduction = "mean",
) -> torch.Tensor:
    """Normalised focal loss ``FL(y) / sum_j FL(j)``, ``FL(j) = -(1 - p_j)^gamma log p_j``.

    APL, ICML 2020; default ``gamma = 0.5``; ``gamma = 0`` is NCE. Unlike the public code, neither
    the normaliser nor the focal factor is detached. ``1 - p`` is clamped from below at the
    dtype's machine epsilon so that the gradient of ``(1 - p)^gamma`` is finite at ``p = 1``.
    """
    reduction = _check_reduction(reduction)
    gamma = _check_gamma(gamma)
    logp, y = _prepare(logits, labels, "nfl")
    return _reduce(_nfl(logp, y, gamma), reduction)


def ngce(
    logits: torch.Tensor, labels: torch.Tensor, q: float = 0.1, reduction: Reduction = "mean"
) -> torch.Tensor:
    """Normalised GCE ``(1 - p_y^q) / (K - sum_j p_j^q)`` (APL, ICML 2020).

    Default ``q = 0.1`` (the APL paper's value; 0.7 on CIFAR-100: see :func:`loss_defaults`).
    ``p^q = exp(q log p)``, no clamp of ``p`` (the public code clamps it to ``[1e-7, 1]``).
    """
    reduction = _check_reduction(reduction)
    q = _check_q(q, "ngce")
    logp, y = _prepare(logits, labels, "ngce")
    return _reduce(_ngce(logp, y, q), reduction)


def nmae(logits: torch.Tensor, labels: torch.Tensor, reduction: Reduction = "mean") -> torch.Tensor:
    """Normalised MAE ``(1 - p_y) / (K - 1)`` (APL, ICML 2020); sums to 1 over the K labels.

    The public code divides by ``2 (K - 1)`` instead (its values sum to 1/2).
    """
    reduction = _check_reduction(reduction)
    logp, y = _prepare(logits, labels, "nmae")
    return _reduce(_nmae(logp, y), reduction)


def nrce(
    logits: torch.Tensor,
    labels: torch.Tensor,
    A: float = LOG_1E4,
    reduction: Reduction = "mean",
) -> torch.Tensor:
    """Normalised RCE ``RCE / (-A (K - 1))`` (APL, ICML 2020): equal in value to :func:`nmae`.

    The public code multiplies by ``1 / 4 * (K - 1) = (K - 1) / 4`` instead (operator
    precedence), which does not normalise.
    """
    reduction = _check_reduction(reduction)
    A = _check_a(A, "nrce")
    logp, y = _prepare(logits, labels, "nrce")
    return _reduce(_nrce(logp, y, A), reduction)


# --------------------------------------------------------------------------------------------
# modules


class _Loss(nn.Module):
    """Base of the loss modules: ``loss(logits, labels)`` with a fixed ``reduction``.

    Each subclass is registered in :data:`~trustlab.registry.LOSSES` under its ``name`` and
    holds its per-sample term as ``term(logp, y, **hparams)`` (on validated ``log_softmax``
    values ``(N, K)`` and labels ``(N, 1)``), which :class:`APL` composes.
    """

    name: str = ""

    def __init__(self, reduction: Reduction = "mean") -> None:
        super().__init__()
        self.reduction: str = _check_reduction(reduction)

    def hparams(self) -> dict[str, float]:
        """The loss's hyper-parameters (constructor arguments other than ``reduction``)."""
        return {}

    def extra_repr(self) -> str:
        parts = [f"{k}={v:g}" for k, v in self.hparams().items()]
        return ", ".join([*parts, f"reduction={self.reduction!r}"])


@LOSSES.register(
    "ce",
    "cross entropy -log p_y (the noisy-label papers' baseline)",
    paper=_SCE_PAPER + " " + _APL_PAPER + " (cross entropy: both papers' baseline)",
)
class CE(_Loss):
    """Cross entropy ``-log p_y`` (module over :func:`ce`), the baseline of the SCE and APL papers.

    Args:
        reduction: ``"mean"`` (default), ``"sum"`` or ``"none"``.

    Shapes: logits ``(N, K)`` float, labels ``(N,)`` int64 -> ``()`` (``(N,)`` with ``"none"``).

    Example::

        loss = CE()
        value = loss(model(x), y)
    """

    name = "ce"
    term = staticmethod(_ce)

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return ce(logits, labels, self.reduction)


@LOSSES.register(
    "mae",
    "mean absolute error 1 - p_y (half the L1 distance; APL's passive term)",
    paper="Ghosh, Kumar, Sastry. Robust Loss Functions under Label Noise for Deep Neural "
    "Networks. AAAI 2017 (the halved form of the SCE/APL code).",
    role="passive",
)
class MAE(_Loss):
    """Mean absolute error ``1 - p_y`` (module over :func:`mae`): half the L1 distance
    ``||p - e_y||_1``, the "reduced MAE" of the public SCE/APL code (Ghosh, Kumar, Sastry,
    "Robust Loss Functions under Label Noise for Deep Neural Networks", AAAI 2017, define the
    full distance). A passive term of APL.

    Args:
        reduction: ``"mean"`` (default), ``"sum"`` or ``"none"``.

    Shapes: logits ``(N, K)`` float, labels ``(N,)`` int64 -> ``()`` (``(N,)`` with ``"none"``).

    Example::

        loss = MAE()
        value = loss(model(x), y)
    """

    name = "mae"
    term = staticmethod(_mae)

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return mae(logits, labels, self.reduction)


@LOSSES.register(
    "gce",
    "generalised cross entropy (1 - p_y^q) / q",
    paper="Zhang, Sabuncu. Generalized Cross Entropy Loss for Training Deep Neural Networks with "
    "Noisy Labels. NeurIPS 2018.",
)
class GCE(_Loss):
    """Generalised cross entropy ``(1 - p_y^q) / q`` (module over :func:`gce`).

    Zhang & Sabuncu, "Generalized Cross Entropy Loss for Training Deep Neural Networks with Noisy
    Labels", NeurIPS 2018.

    Args:
        q: in ``(0, 1]``; default 0.7 (the paper's). ``q -> 0`` tends to CE, ``q = 1`` is MAE.
        reduction: ``"mean"`` (default), ``"sum"`` or ``"none"``.

    Shapes: logits ``(N, K)`` float, labels ``(N,)`` int64 -> ``()`` (``(N,)`` with ``"none"``).

    Example::

        loss = GCE(q=0.7)
        value = loss(model(x), y)
    """

    name = "gce"
    term = staticmethod(_gce)

    def __init__(self, q: float = 0.7, reduction: Reduction = "mean") -> None:
        super().__init__(reduction)
        self.q = _check_q(q, "gce")

    def hparams(self) -> dict[str, float]:
        return {"q": self.q}

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return gce(logits, labels, self.q, self.reduction)


@LOSSES.register(
    "rce",
    "reverse cross entropy -A (1 - p_y) (SCE's term; APL's passive term)",
    paper=_SCE_PAPER,
    role="passive",
)
class RCE(_Loss):
    """Reverse cross entropy ``-sum_k p_k log q_k = -A (1 - p_y)`` (module over :func:`rce`).

    Wang et al., "Symmetric Cross Entropy for Robust Learning with Noisy Labels", ICCV 2019; a
    passive term of APL.

    Args:
        A: ``log`` of the clamped zeros of the one-hot label, ``< 0``; default
            ``ln(1e-4) ~ -9.21`` (:data:`LOG_1E4`), the public code's effective value behind the
            papers' numbers (the SCE paper's text writes ``A = -4``).
        reduction: ``"mean"`` (default), ``"sum"`` or ``"none"``.

    Shapes: logits ``(N, K)`` float, labels ``(N,)`` int64 -> ``()`` (``(N,)`` with ``"none"``).

    Example::

        loss = RCE()
        value = loss(model(x), y)
    """

    name = "rce"
    term = staticmethod(_rce)

    def __init__(self, A: float = LOG_1E4, reduction: Reduction = "mean") -> None:
        super().__init__(reduction)
        self.A = _check_a(A, "rce")

    def hparams(self) -> dict[str, float]:
        return {"A": self.A}

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return rce(logits, labels, self.A, self.reduction)


@LOSSES.register(
    "sce", "symmetric cross entropy alpha * CE + beta * RCE", paper=_SCE_PAPER, table="sce"
)
class SCE(_Loss):
    """Symmetric cross entropy ``alpha * CE + beta * RCE`` (module over :func:`sce`).

    Wang, Ma, Chen, Luo, Yi, Bailey, "Symmetric Cross Entropy for Robust Learning with Noisy
    Labels", ICCV 2019.

    Args:
        alpha: weight of CE; default 0.1 (the paper's CIFAR-10 value; :func:`make_loss` takes
            6 on CIFAR-100 and 0.01 on MNIST from :data:`LOSS_DEFAULTS`).
        beta: weight of RCE; default 1 (0.1 on CIFAR-100).
        A: RCE's constant; default ``ln(1e-4)`` (see :class:`RCE`).
        reduction: ``"mean"`` (default), ``"sum"`` or ``"none"``.

    Shapes: logits ``(N, K)`` float, labels ``(N,)`` int64 -> ``()`` (``(N,)`` with ``"none"``).

    Example::

        loss = SCE(alpha=0.1, beta=1.0)
        value = loss(model(x), y)
    """

    name = "sce"

    def __init__(
        self,
        alpha: float = 0.1,
        beta: float = 1.0,
        A: float = LOG_1E4,
        reduction: Reduction = "mean",
    ) -> None:
        super().__init__(reduction)
        self.alpha = _check_weight("alpha", alpha, "sce")
        self.beta = _check_weight("beta", beta, "sce")
        self.A = _check_a(A, "sce")

    def hparams(self) -> dict[str, float]:
        return {"alpha": self.alpha, "beta": self.beta, "A": self.A}

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return sce(logits, labels, self.alpha, self.beta, self.A, self.reduction)


@LOSSES.register(
    "nce",
    "normalised cross entropy (APL's active term)",
    paper=_APL_PAPER,
    role="active",
)
class NCE(_Loss):
    """Normalised cross entropy ``-log p_y / (-sum_j log p_j)`` (module over :func:`nce`).

    Ma et al., "Normalized Loss Functions for Deep Learning with Noisy Labels", ICML 2020; an
    active term of APL.

    Args:
        reduction: ``"mean"`` (default), ``"sum"`` or ``"none"``.

    Shapes: logits ``(N, K)`` float, labels ``(N,)`` int64 -> ``()`` (``(N,)`` with ``"none"``).

    Example::

        loss = NCE()
        value = loss(model(x), y)
    """

    name = "nce"
    term = staticmethod(_nce)

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return nce(logits, labels, self.reduction)


@LOSSES.register(
    "nfl",
    "normalised focal loss (APL's active term)",
    paper=_APL_PAPER + " Normalising the focal loss of Lin, Goyal, Girshick, He, Dollar. Focal "
    "Loss for Dense Object Detection. ICCV 2017.",
    role="active",
)
class NFL(_Loss):
    """Normalised focal loss ``FL(y) / sum_j FL(j)``, ``FL(j) = -(1 - p_j)^gamma log p_j``
    (module over :func:`nfl`).

    Ma et al. (APL, ICML 2020) normalising the focal loss of Lin et al., "Focal Loss for Dense
    Object Detection", ICCV 2017; an active term of APL. Unlike the public code, neither the
    normaliser nor the focal factor is detached.

    Args:
        gamma: the focusing exponent, ``>= 0``; default 0.5 (the APL paper's); 0 is NCE.
        reduction: ``"mean"`` (default), ``"sum"`` or ``"none"``.

    Shapes: logits ``(N, K)`` float, labels ``(N,)`` int64 -> ``()`` (``(N,)`` with ``"none"``).

    Example::

        loss = NFL(gamma=0.5)
        value = loss(model(x), y)
    """

    name = "nfl"
    term = staticmethod(_nfl)

    def __init__(self, gamma: float = 0.5, reduction: Reduction = "mean") -> None:
        super().__init__(reduction)
        self.gamma = _check_gamma(gamma)

    def hparams(self) -> dict[str, float]:
        return {"gamma": self.gamma}

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return nfl(logits, labels, self.gamma, self.reduction)


@LOSSES.register(
    "ngce",
    "normalised generalised cross entropy (APL's active term)",
    paper=_APL_PAPER,
    role="active",
    table="ngce",
)
class NGCE(_Loss):
    """Normalised GCE ``(1 - p_y^q) / (K - sum_j p_j^q)`` (module over :func:`ngce`).

    Ma et al. (APL, ICML 2020), normalising Zhang & Sabuncu's GCE; an active term of APL.

    Args:
        q: in ``(0, 1]``; default 0.1 (the APL paper's value; :func:`make_loss` takes 0.7 on
            CIFAR-100 from :data:`LOSS_DEFAULTS`).
        reduction: ``"mean"`` (default), ``"sum"`` or ``"none"``.

    Shapes: logits ``(N, K)`` float, labels ``(N,)`` int64 -> ``()`` (``(N,)`` with ``"none"``).

    Example::

        loss = NGCE(q=0.1)
        value = loss(model(x), y)
    """

    name = "ngce"
    term = staticmethod(_ngce)

    def __init__(self, q: float = 0.1, reduction: Reduction = "mean") -> None:
        super().__init__(reduction)
        self.q = _check_q(q, "ngce")

    def hparams(self) -> dict[str, float]:
        return {"q": self.q}

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return ngce(logits, labels, self.q, self.reduction)


@LOSSES.register("nmae", "normalised MAE (1 - p_y) / (K - 1)", paper=_APL_PAPER)
class NMAE(_Loss):
    """Normalised MAE ``(1 - p_y) / (K - 1)`` (module over :func:`nmae`); sums to 1 over the
    K labels.

    Ma et al. (APL, ICML 2020). The public code divides by ``2 (K - 1)`` (its values sum to 1/2).

    Args:
        reduction: ``"mean"`` (default), ``"sum"`` or ``"none"``.

    Shapes: logits ``(N, K)`` float, labels ``(N,)`` int64 -> ``()`` (``(N,)`` with ``"none"``).

    Example::

        loss = NMAE()
        value = loss(model(x), y)
    """

    name = "nmae"
    term = staticmethod(_nmae)

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return nmae(logits, labels, self.reduction)


@LOSSES.register("nrce", "normalised RCE RCE / (-A (K - 1))", paper=_APL_PAPER)
class NRCE(_Loss):
    """Normalised RCE ``RCE / (-A (K - 1))`` (module over :func:`nrce`): equal in value to NMAE.

    Ma et al. (APL, ICML 2020). The public code multiplies by ``(K - 1) / 4`` instead (operator
    precedence), which does not normalise.

    Args:
        A: RCE's constant, ``< 0``; default ``ln(1e-4)`` (see :class:`RCE`).
        reduction: ``"mean"`` (default), ``"sum"`` or ``"none"``.

    Shapes: logits ``(N, K)`` float, labels ``(N,)`` int64 -> ``()`` (``(N,)`` with ``"none"``).

    Example::

        loss = NRCE()
        value = loss(model(x), y)
    """

    name = "nrce"
    term = staticmethod(_nrce)

    def __init__(self, A: float = LOG_1E4, reduction: Reduction = "mean") -> None:
        super().__init__(reduction)
        self.A = _check_a(A, "nrce")

    def hparams(self) -> dict[str, float]:
        return {"A": self.A}

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return nrce(logits, labels, self.A, self.reduction)


def _term_hparams(name: str) -> dict[str, Any]:
    """The hyper-parameters of the registered loss ``name`` with its class's defaults."""
    params = LOSSES.get(name).parameters()
    return {k: v for k, v in params.items() if k != "reduction"}


class APL(_Loss):
    """Active Passive Loss ``alpha * Active + beta * Passive``.

    Ma, Huang, Wang, Romano, Erfani, Bailey, "Normalized Loss Functions for Deep Learning with
    Noisy Labels", ICML 2020. Registered once per pair of the paper's sets as
    ``"active+passive"`` (``"nce+rce"``, ...).

    Args:
        active: the active term, one of :data:`ACTIVE_LOSSES` ("nce", "nfl", "ngce"); default
            "nce".
        passive: the passive term, one of :data:`PASSIVE_LOSSES` ("mae", "rce"); default "rce".
        alpha, beta: the weights; default 1 and 1 (the paper's CIFAR-10 values;
            :func:`make_loss` takes MNIST's and CIFAR-100's from :data:`LOSS_DEFAULTS`).
        q, gamma, A: the terms' hyper-parameters, routed to the term that has them: ``q`` ->
            NGCE (default 0.1), ``gamma`` -> NFL (default 0.5), ``A`` -> RCE (default
            ``ln(1e-4)``); ``None`` means the term's default, and one the chosen terms do not
            have raises :class:`InputError`.
        reduction: ``"mean"`` (default), ``"sum"`` or ``"none"``.

    Shapes: logits ``(N, K)`` float, labels ``(N,)`` int64 -> ``()`` (``(N,)`` with ``"none"``).
    The inputs are validated and ``log_softmax`` computed once for both terms.

    Example::

        loss = APL("nce", "rce", alpha=1.0, beta=1.0)  # or make_loss("nce+rce")
        value = loss(model(x), y)
    """

    def __init__(
        self,
        active: str = "nce",
        passive: str = "rce",
        alpha: float = 1.0,
        beta: float = 1.0,
        *,
        q: float | None = None,
        gamma: float | None = None,
        A: float | None = None,
        reduction: Reduction = "mean",
    ) -> None:
        super().__init__(reduction)
        act = str(active).strip().lower()
        pas = str(passive).strip().lower()
        if act not in ACTIVE_LOSSES:
            raise InputError(
                f"APL active term {active!r} is not allowed; use one of {', '.join(ACTIVE_LOSSES)}."
            )
        if pas not in PASSIVE_LOSSES:
            raise InputError(
                f"APL passive term {passive!r} is not allowed; use one of "
                f"{', '.join(PASSIVE_LOSSES)}."
            )
        self.active, self.passive = act, pas
        self.name = f"{act}+{pas}"
        self.alpha = _check_weight("alpha", alpha, self.name)
        self.beta = _check_weight("beta", beta, self.name)
        given = {"q": q, "gamma": gamma, "A": A}
        terms = {t: _term_hparams(t) for t in (*ACTIVE_LOSSES, *PASSIVE_LOSSES)}
        for key, value in given.items():
            owner = next(t for t, hp in terms.items() if key in hp)
            if value is not None and owner not in (act, pas):
                raise InputError(
                    f"APL {self.name} has no parameter {key!r}: {key} belongs to "
                    f"{owner}; drop it or choose {owner} as a term."
                )
        # each term checks its own hyper-parameters (None: the term's default)
        kw = [{k: given[k] for k in terms[t] if given[k] is not None} for t in (act, pas)]
        active_loss, passive_loss = (
            LOSSES.get(t).factory(**w) for t, w in zip((act, pas), kw, strict=True)
        )
        self._active_kw: dict[str, float] = active_loss.hparams()
        self._passive_kw: dict[str, float] = passive_loss.hparams()
        self._active_term = type(active_loss).term
        self._passive_term = type(passive_loss).term

    def hparams(self) -> dict[str, float]:
        return {"alpha": self.alpha, "beta": self.beta, **self._active_kw, **self._passive_kw}

    def extra_repr(self) -> str:
        return f"active={self.active!r}, passive={self.passive!r}, {super().extra_repr()}"

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        logp, y = _prepare(logits, labels, self.name)
        active = self._active_term(logp, y, **self._active_kw)
        passive = self._passive_term(logp, y, **self._passive_kw)
        return _reduce(self.alpha * active + self.beta * passive, self.reduction)


for _active in ACTIVE_LOSSES:  # the paper's pairs, one card each
    for _passive in PASSIVE_LOSSES:
        LOSSES.register(
            f"{_active}+{_passive}",
            f"APL: alpha * {_active.upper()} + beta * {_passive.upper()}",
            paper=_APL_PAPER,
            defaults={"active": _active, "passive": _passive},
            terms=(_active, _passive),
            table=f"apl+{_passive}",
        )(APL)
del _active, _passive


# --------------------------------------------------------------------------------------------
# names and defaults


def paper_family(dataset: str | None) -> str:
    """The paper dataset ("mnist", "cifar10" or "cifar100") whose defaults ``dataset`` takes.

    mnist, fashion-mnist, digits -> "mnist"; cifar100 -> "cifar100"; anything else (cifar10,
    svhn, shapes10, fundus2, moving-shapes, tensors, ..., or None) -> "cifar10".
    """
    if dataset is None:
        return "cifar10"
    key = str(dataset).strip().lower().replace("_", "-")
    return DATASET_FAMILIES.get(key, "cifar10")


def _canonical_name(name: Any) -> str:
    """Lower-case, whitespace-free loss name, checked against the registered losses."""
    key = "".join(str(name).split()).lower()
    if key in LOSSES:
        return key
    names = LOSSES.names()
    if key.count("+") == 1:
        act, pas = key.split("+")
        if act not in ACTIVE_LOSSES or pas not in PASSIVE_LOSSES:
            raise InputError(
                f"unknown loss {name!r}: an active+passive loss pairs an active term in "
                f"{{{', '.join(ACTIVE_LOSSES)}}} with a passive term in "
                f"{{{', '.join(PASSIVE_LOSSES)}}}, e.g. 'nce+rce'. Available: "
                f"{', '.join(names)}."
            )
    close = difflib.get_close_matches(key, names, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise InputError(f"unknown loss {name!r}.{hint} Available: {', '.join(names)}.")


def loss_defaults(name: str, dataset: str | None = None) -> dict[str, float]:
    """The default hyper-parameters of loss ``name`` on ``dataset`` (a fresh dict).

    Keys are the constructor arguments of the loss (``reduction`` aside): e.g.
    ``loss_defaults("sce", "cifar100") == {"alpha": 6.0, "beta": 0.1, "A": ln(1e-4)}`` and
    ``loss_defaults("ngce+rce", "cifar100") == {"alpha": 10.0, "beta": 0.1, "q": 0.7, "A": ...}``.
    The class's defaults, overridden by the card's entry (meta ``table``) of
    :data:`LOSS_DEFAULTS` for :func:`paper_family`; an APL pair (meta ``terms``) takes its
    ``alpha``/``beta`` from the table and each term's defaults. ``ce``, ``mae``, ``nce`` and
    ``nmae`` have none. Unknown names raise :class:`InputError` listing the registered losses.
    """
    card = LOSSES.get(_canonical_name(name))
    table = LOSS_DEFAULTS[paper_family(dataset)]
    terms = card.meta.get("terms")
    if terms:  # an APL pair: the pair's weights, then each term's hyper-parameters
        out: dict[str, float] = dict(table[card.meta["table"]])
        for term in terms:
            out.update(loss_defaults(term, dataset))
        return out
    out = _term_hparams(card.name)
    out.update(table.get(card.meta.get("table", ""), {}))
    return out


def make_loss(
    name: str,
    alpha: float | None = None,
    beta: float | None = None,
    dataset: str | None = None,
    **kw: Any,
) -> nn.Module:
    """Build the loss module ``name`` (a name of :data:`~trustlab.registry.LOSSES`,
    case-insensitive).

    ``name`` is a single loss ("ce", "mae", "gce", "rce", "sce", "nce", "nfl", "ngce", "nmae",
    "nrce") or an APL pair "active+passive" ("nce+rce", "nfl+mae", "ngce+rce", ...).
    ``alpha``/``beta`` (SCE and APL only) and hyper-parameters in ``kw`` (``q``, ``gamma``,
    ``A``; ``None`` values mean "default") override :func:`loss_defaults` for ``dataset``;
    ``reduction`` is passed through. A parameter the loss does not have raises
    :class:`InputError` naming the ones it has. Returns a module ``loss(logits, labels)``.
    """
    key = _canonical_name(name)
    params = loss_defaults(key, dataset)
    reduction = kw.pop("reduction", "mean")
    for pname, value in (("alpha", alpha), ("beta", beta), *kw.items()):
        if value is None:
            continue
        if pname not in params:
            has = ", ".join(params) if params else "no hyper-parameters"
            raise InputError(
                f"loss {key!r} has no parameter {pname!r} (it takes: {has}); drop {pname} or "
                "choose a loss that has it (alpha/beta: sce or an active+passive pair such as "
                "'nce+rce')."
            )
        params[pname] = value
    card = LOSSES.get(key)
    # the class itself checks the values (its messages name the loss and the papers' values)
    return card.factory(**card.defaults, reduction=reduction, **params)


#: every name :func:`make_loss` accepts (lower case; matching is case-insensitive), read from
#: :data:`~trustlab.registry.LOSSES` in registration order
LOSS_NAMES: tuple[str, ...] = tuple(LOSSES.registered())  # this module registers them all
