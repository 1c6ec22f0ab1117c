"""Sanity checks run before a robustness evaluation, after AutoAttack's (``autoattack/checks.py``
and ``flags_doc.md`` of fra31/auto-attack, Croce & Hein 2020).

An evaluation with gradient-based attacks is only as good as the gradients it gets. These checks
look, on a small batch, for the properties that make such attacks weak and the reported robust
accuracy too high (gradient masking, Athalye et al. 2018), and say what to do about each:

========================  ==========================================================================
check                     flagged when (value)
========================  ==========================================================================
``randomness``            two of ``repeats`` (5) forward passes in eval mode disagree: the largest
                          L2 distance between the L2-normalised outputs of one input exceeds 1e-4,
                          or the number of correct predictions changes (AutoAttack's
                          ``check_randomized``; value: the largest distance)
``probabilities``         the outputs lie in [0, 1] and every row sums to 1 within 1e-5: softmax is
                          already applied (``check_range_output``; value: the largest deviation of
                          a row's sum from 1)
``zero-gradients``        the input gradient of the CW margin loss is all zero for some input
                          (``check_zero_gradients``; value: their share), or, where it is not,
                          that of the cross-entropy is (a saturated softmax)
``non-finite``            some output or input gradient is NaN or infinite (value: the share of
                          inputs affected); AutoAttack has no such check
``dynamic``               the forward pass calls torch's ``grad``, ``backward`` or ``_make_grads``:
                          it optimises at inference time (``check_dynamic``; value: the calls)
``train-eval``            the model was handed over with modules in training mode and its output
                          changes between ``train()`` and ``eval()`` (value: the largest L2 distance
                          of the normalised outputs of the two modes)
========================  ==========================================================================

Where this differs from AutoAttack: the gradient is taken at the clean input (AutoAttack checks
it at APGD's random start; a function that is flat almost everywhere is flat at both) and of the
CW margin ``max_{j != y} z_j - z_y`` for every input (AutoAttack's is the DLR loss of APGD-DLR,
which runs on correctly classified points only, where DLR is the margin divided by a positive
scale; on a point whose label ranks third DLR is constant, its gradient zero for any model); the
cross-entropy's is checked too, since a saturated softmax (AutoAttack's documentation names "the
scale of the logits" as a cause) gives APGD-CE and PGD-CE no gradient; the
``dynamic`` check counts only torch's own functions of those names (AutoAttack counts any
function so named) and chains to a profiler already installed; ``non-finite`` and
``train-eval`` are trustlab's. AutoAttack's other two checks concern its own attacks: the number
of classes the (targeted) DLR loss needs is checked by the attacks themselves, and Square
Attack beating the white-box attacks can only be seen after an evaluation.

All checks run vectorised over the batch (the only loop is over the repeated passes), on the
input's device, in eval mode with parameter gradients off (:func:`trustlab.utils.modules.frozen`);
every module's mode, the parameters' ``requires_grad`` flags, the buffers (BatchNorm statistics
updated by the train-mode pass) and the global random state are restored on exit.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from trustlab.attacks.evasion.losses import ce, cw
from trustlab.errors import InputError
from trustlab.utils.modules import frozen

__all__ = ["CHECKS", "SanityFinding", "sanity_checks"]

#: the checks, in the order :func:`sanity_checks` reports them
CHECKS = ("randomness", "probabilities", "zero-gradients", "non-finite", "dynamic", "train-eval")

#: AutoAttack's thresholds: ``check_randomized``'s alpha and ``check_range_output``'s alpha
RANDOM_TOL = 1e-4
PROB_TOL = 1e-5
#: the functions whose call during a forward pass marks a dynamic defense (``checks.funcs``)
_DYNAMIC = frozenset({"grad", "backward", "_make_grads"})
_TORCH_DIR = os.path.dirname(torch.__file__)


@dataclass(frozen=True)
class SanityFinding:
    """The result of one sanity check.

    Attributes:
        check: the check's name (one of :data:`CHECKS`).
        ok: ``False`` when the check found a problem (a warning).
        message: what was found; for a problem also why it matters and what to do.
        value: the number behind the verdict (see the module's table), ``None`` if not measured.

    Example:
        >>> SanityFinding("probabilities", True, "the outputs look like logits.", 0.7).ok
        True
    """

    check: str
    ok: bool
    message: str
    value: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (``check``, ``ok``, ``message``, ``value``)."""
        return asdict(self)


@contextlib.contextmanager
def _preserved(model: nn.Module, device: torch.device) -> Iterator[None]:
    """Eval mode and no parameter gradients inside (``frozen``); on exit every module's own
    mode (a submodule may differ from its parent), the buffers and the random state are back."""
    modes = [(m, m.training) for m in model.modules()]
    buffers = [(b, b.detach().clone()) for b in model.buffers()]
    devices = [device] if device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices), frozen(model):
            yield
    finally:
        with torch.no_grad():
            for b, saved in buffers:
                b.copy_(saved)
        for m, mode in modes:
            m.training = mode


def _normalised(out: torch.Tensor) -> torch.Tensor:
    """Each row divided by its L2 norm (AutoAttack's ``output / (L2_norm(output) + 1e-10)``)."""
    flat = out.flatten(1)
    return flat / (flat.norm(dim=1, keepdim=True) + 1e-10)


def _largest_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """The largest L2 distance between the normalised rows of ``a`` and ``b`` (NaN counts 0:
    non-finite outputs are the ``non-finite`` check's)."""
    d = (_normalised(a) - _normalised(b)).norm(dim=1)
    return float(torch.nan_to_num(d, nan=0.0, posinf=0.0).max())


def _fmt(v: float) -> str:
    return f"{v:.3g}"


def _randomness(outs: torch.Tensor, y: torch.Tensor) -> SanityFinding:
    n = outs.shape[0]
    normed = torch.stack([_normalised(o) for o in outs])  # (n, B, C)
    dist = (normed[:, None] - normed[None, :]).norm(dim=-1)  # every pair of passes, every input
    largest = float(torch.nan_to_num(dist, nan=0.0, posinf=0.0).max())
    correct = (outs.argmax(-1) == y).sum(-1)
    changes = bool((correct != correct[0]).any())
    if largest <= RANDOM_TOL and not changes:
        return SanityFinding(
            "randomness", True, f"{n} forward passes in eval mode give the same outputs.", largest
        )
    counts = f" and {correct.min().item()}-{correct.max().item()} correct predictions"
    return SanityFinding(
        "randomness",
        False,
        f"the model is randomised: {n} forward passes on the same inputs in eval mode differ "
        f"(largest distance of normalised outputs {_fmt(largest)}"
        f"{counts if changes else ''}). It stays random in eval mode, so it is not a Dropout or "
        "BatchNorm left in training mode: noise or sampling in forward (e.g. F.dropout with "
        "training=True, random input transformations). A gradient from one random draw misleads "
        "the attacks, so the robust accuracy is overestimated. Attack the expectation over the "
        "randomness (EOT: average the gradient over many draws), or make the forward "
        "deterministic in eval mode.",
        largest,
    )


def _probabilities(out: torch.Tensor) -> SanityFinding:
    dev = float((out.sum(-1) - 1).abs().max()) if out.numel() else 0.0
    looks = (
        bool(out.max() < 1 + PROB_TOL) and bool(out.min() > -PROB_TOL) and dev < PROB_TOL
    )  # NaN fails every comparison: then it is not probabilities
    if not looks:
        return SanityFinding(
            "probabilities", True, "the outputs are not probabilities (no softmax applied).", dev
        )
    return SanityFinding(
        "probabilities",
        False,
        "the outputs look like probabilities (in [0, 1], every row sums to 1 within "
        f"{PROB_TOL:g}): softmax is already applied. The attacks' losses expect logits; on "
        "probabilities the cross-entropy is computed on a softmax of a softmax and the gradients "
        "vanish as the model grows confident, so the attacks are weaker and the robust "
        "accuracy too high. Return the logits (remove the final softmax; apply it outside the "
        "model where you need probabilities).",
        dev,
    )


def _gradients(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """The input gradients of the CW margin and of the cross-entropy (one forward pass);
    ``(None, None)`` when the output does not depend differentiably on the input at all."""
    xg = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        out = model(xg)
        losses = [cw(out, y).sum(), ce(out, y).sum()]
        if not losses[0].requires_grad:
            return None, None
        grads = [
            torch.autograd.grad(v, xg, allow_unused=True, retain_graph=True)[0] for v in losses
        ]
    zeros = [torch.zeros_like(x) if g is None else g for g in grads]
    return zeros[0], zeros[1]


def _zero_rows(g: torch.Tensor) -> torch.Tensor:
    return g.flatten(1).abs().sum(1) == 0  # NaN is not zero: that is the non-finite check's


def _zero_gradients(
    margin: torch.Tensor | None, xent: torch.Tensor | None, n: int
) -> SanityFinding:
    why = (
        "Gradient-based attacks make no progress without a gradient (gradient masking), so the "
        "robust accuracy they report is too high."
    )
    masked = (
        "A non-differentiable step (input quantisation, rounding, sign, thresholds) is the "
        "usual cause: attack it with BPDA (a differentiable approximation, e.g. the identity, "
        "for that step in the backward pass) or a gradient-free attack (e.g. Square Attack)."
    )
    if margin is None or xent is None:
        return SanityFinding(
            "zero-gradients",
            False,
            "the output has no gradient path to the input at all (the forward detaches its "
            f"input, runs under no_grad or leaves torch, e.g. through NumPy). {why} Make the "
            "forward differentiable, or use BPDA or a gradient-free attack (e.g. Square Attack).",
            1.0,
        )
    flat = _zero_rows(margin)
    if bool(flat.any()):
        share = float(flat.float().mean())
        return SanityFinding(
            "zero-gradients",
            False,
            f"the input gradient of the margin loss is exactly zero for {int(flat.sum())} of {n} "
            f"inputs ({share:.0%}). {why} {masked}",
            share,
        )
    saturated = _zero_rows(xent)
    if bool(saturated.any()):
        share = float(saturated.float().mean())
        return SanityFinding(
            "zero-gradients",
            False,
            f"the input gradient of the cross-entropy is exactly zero for {int(saturated.sum())} "
            f"of {n} inputs ({share:.0%}), while the margin loss has one: the softmax saturates "
            f"(the logits are very large). {why} Attack with a margin-based loss (the standard "
            "suite's APGD-T uses DLR; pgd-cw the CW margin), or scale the logits down.",
            share,
        )
    return SanityFinding(
        "zero-gradients",
        True,
        "the margin and cross-entropy losses have a gradient at every input.",
        0.0,
    )


def _non_finite(out: torch.Tensor, g: torch.Tensor | None, n: int) -> SanityFinding:
    bad = ~torch.isfinite(out.flatten(1)).all(1)
    if g is not None:
        bad |= ~torch.isfinite(g.flatten(1)).all(1)
    share = float(bad.float().mean())
    if share == 0:
        return SanityFinding("non-finite", True, "outputs and gradients are finite.", 0.0)
    return SanityFinding(
        "non-finite",
        False,
        f"the outputs or input gradients are NaN or infinite for {int(bad.sum())} of {n} inputs "
        f"({share:.0%}). A NaN loss or gradient stops every gradient-based attack on those "
        "inputs, so the robust accuracy counted on them is meaningless (and too high). Find "
        "where the forward pass produces them (a log or division of zero, an overflow; "
        "torch.autograd.detect_anomaly helps) and fix it (e.g. clamp before log, add a small "
        "epsilon); check the weights too.",
        share,
    )


def _dynamic(model: nn.Module, x: torch.Tensor) -> SanityFinding:
    calls = 0
    previous = sys.getprofile()

    def profile(frame: Any, event: str, arg: Any) -> Any:
        nonlocal calls
        code = frame.f_code
        if event == "call" and code.co_name in _DYNAMIC and code.co_filename.startswith(_TORCH_DIR):
            calls += 1
        if previous is not None:
            previous(frame, event, arg)

    sys.setprofile(profile)
    try:
        with torch.enable_grad():
            model(x)
    finally:
        sys.setprofile(previous)
    if calls == 0:
        return SanityFinding("dynamic", True, "the forward pass computes no gradients.", 0.0)
    return SanityFinding(
        "dynamic",
        False,
        f"the forward pass computes gradients itself ({calls} calls of torch's grad/backward): "
        "it seems to optimise at inference time (a dynamic defense, e.g. purification or "
        "test-time adaptation). Standard attacks do not differentiate through that "
        "optimisation, so the evaluation may be insufficient: design an adaptive attack for it.",
        float(calls),
    )


def _train_eval(
    model: nn.Module, x: torch.Tensor, eval_out: torch.Tensor, in_train: list[str]
) -> SanityFinding:
    try:
        with torch.no_grad():
            model.train()
            train_out = model(x)
    except (RuntimeError, ValueError) as exc:  # e.g. BatchNorm training on a batch of one
        why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return SanityFinding(
            "train-eval", True, f"the model cannot run in training mode here ({why}).", None
        )
    finally:
        model.eval()
    largest = _largest_distance(train_out, eval_out)
    differs = largest > RANDOM_TOL
    if not differs:
        return SanityFinding(
            "train-eval", True, "the output is the same in train() and eval() mode.", largest
        )
    if not in_train:
        return SanityFinding(
            "train-eval",
            True,
            "the output changes between train() and eval() mode (largest distance of "
            f"normalised outputs {_fmt(largest)}: BatchNorm or Dropout); the model is in eval "
            "mode, in which it is evaluated, as AutoAttack does.",
            largest,
        )
    shown = ", ".join(in_train[:4]) + (
        f" and {len(in_train) - 4} more" if len(in_train) > 4 else ""
    )
    return SanityFinding(
        "train-eval",
        False,
        f"the model was handed over in training mode ({shown}) and its output changes between "
        f"train() and eval() mode (largest distance of normalised outputs {_fmt(largest)}: "
        "BatchNorm uses batch statistics, Dropout is active). trustlab evaluates in eval mode, as "
        "AutoAttack does, so the numbers hold for eval mode only; a model used in training mode "
        "is random and batch-dependent, which masks gradients. Call model.eval() before "
        "evaluating or deploying it.",
        largest,
    )


def sanity_checks(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, repeats: int = 5
) -> list[SanityFinding]:
    """AutoAttack-style checks of ``model`` on the batch ``(x, y)`` before an evaluation.

    One finding per check of :data:`CHECKS` (``randomness``, ``probabilities``,
    ``zero-gradients``, ``non-finite``, ``dynamic``, ``train-eval``; see the module for what
    each flags and where it follows AutoAttack). A finding with ``ok=False`` is a warning: the
    attacks may be weakened and the robust accuracy overestimated; its message says what to do.

    Args:
        model: the classifier (outputs ``(batch, classes)`` logits).
        x: a batch of inputs on the model's device (a few dozen are enough).
        y: their labels, shape ``(batch,)``.
        repeats: forward passes compared by the randomness check (default 5, AutoAttack's).

    Returns:
        The findings, in the order of :data:`CHECKS`. The model's and every module's mode,
        ``requires_grad`` flags, buffers and the global random state are restored.

    Raises:
        InputError: an empty batch, labels that do not fit ``x`` or the outputs, outputs that are
            not ``(batch, classes)``, or ``repeats < 2``.

    Example:
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
        >>> found = sanity_checks(net, torch.rand(8, 4), torch.randint(0, 3, (8,)))
        >>> [f.check for f in found if not f.ok]
        []
    """
    if repeats < 2:
        raise InputError(f"repeats must be >= 2 (passes to compare), got {repeats}.")
    if x.dim() == 0 or len(x) == 0:
        raise InputError("sanity_checks needs a non-empty batch of inputs.")
    if y.shape != (len(x),):
        raise InputError(
            f"sanity_checks needs one label per input: x has {len(x)}, y has shape "
            f"{tuple(y.shape)}."
        )
    n = len(x)
    in_train = [name or type(model).__name__ for name, m in model.named_modules() if m.training]
    with _preserved(model, x.device):
        with torch.no_grad():
            outs = torch.stack([model(x) for _ in range(repeats)])  # the passes, not the inputs
        if outs.dim() != 3 or outs.shape[-1] < 2:
            raise InputError(
                f"the model's output has shape {tuple(outs.shape[1:])}; the sanity checks need "
                "(batch, classes) logits with at least 2 classes."
            )
        k = outs.shape[-1]
        if bool(((y < 0) | (y >= k)).any()):
            raise InputError(f"labels must be in [0, {k}) for a model with {k} outputs.")
        margin, xent = _gradients(model, x, y)
        return [
            _randomness(outs, y),
            _probabilities(outs[0]),
            _zero_gradients(margin, xent, n),
            _non_finite(outs[0], margin, n),
            _dynamic(model, x),
            _train_eval(model, x, outs[0], in_train),
        ]
