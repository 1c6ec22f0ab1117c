"""Balancing several losses: fixed weights, or MGDA's minimum-norm point (one implementation for
the whole project; the blind backdoor uses it, as may any multi-objective training).

MGDA: Désidéri, "Multiple-gradient descent algorithm", 2012; Sener & Koltun, "Multi-Task
Learning as Multi-Objective Optimization", NeurIPS 2018 (the form Bagdasaryan & Shmatikov's blind
backdoors use). Given per-task gradients ``g_1 .. g_n`` of the shared parameters, find weights
``a`` on the simplex minimising ``||sum_i a_i g_i||^2``:

- two tasks, closed form: ``a_1 = clip(((g_2 - g_1) . g_2) / ||g_1 - g_2||^2, 0, 1)``,
  ``a_2 = 1 - a_1``;
- more tasks: Frank-Wolfe on the Gram matrix ``G_ij = g_i . g_j``, started from the best pair,
  each step moving toward the vertex ``t = argmin_i (G a)_i`` by the exact two-point line search,
  until the step is below ``tol`` (default ``1e-6``) or ``max_iter`` (250) steps.

Gradients may first be normalised, exactly as the authors' code does (backdoors101
``utils/min_norm_solvers.py`` ``gradient_normalizers`` and ``MGDASolver.get_scales``, after Sener &
Koltun's code): each task's gradient is divided by ``s + 1e-5`` where ``s`` is ``||g||``
(``"l2"``), ``min(loss, 10)`` (``"loss"``), ``min(loss * ||g||, 10)`` (``"loss+"``: the task
with the higher loss gets the larger weight, up to the cap) or 1 (``"none"``). The cap of 10 and
the ``1e-5`` are the authors': a loss (or loss times norm) above 10 is treated as 10, and a
gradient much smaller than ``1e-5`` is not scaled up to unit norm, so ``"l2"`` gives two tasks
equal weights only while both gradients' norms are well above ``1e-5``. :class:`MGDA` combines
losses with the resulting (detached) weights; :class:`FixedWeights` with given ones.

Where the authors' solver differs (kept as is here): for three or more tasks their
``get_scales`` runs projected gradient descent (``find_min_norm_element``) instead of
Frank-Wolfe (both converge to the min-norm point), and their two-point step returns 0.999 /
0.001 instead of 1 / 0 when one vector is already the closest point, so no task's weight falls
below 0.001 at such a step.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from trustlab.errors import InputError

NORMALIZATIONS = ("none", "l2", "loss", "loss+")
#: the authors' cap on the ``loss`` and ``loss+`` normalisers (``gradient_normalizers``)
NORMALIZER_CAP = 10.0
#: added to every normaliser before dividing (the authors' ``get_scales``)
NORMALIZER_EPS = 1e-5


def _pair(g11: float, g12: float, g22: float) -> tuple[float, float]:
    """Min-norm point of the segment between two vectors given their Gram entries:
    ``(weight of the first, squared norm)``."""
    if g12 >= g11:  # the first vector is already the closest point to 0 on the segment
        return 1.0, g11
    if g12 >= g22:
        return 0.0, g22
    a = (g22 - g12) / (g11 + g22 - 2 * g12)
    return a, a * a * g11 + (1 - a) * (1 - a) * g22 + 2 * a * (1 - a) * g12


def min_norm_weights_from_gram(
    gram: torch.Tensor, max_iter: int = 250, tol: float = 1e-6
) -> torch.Tensor:
    """Simplex weights ``(n,)`` minimising ``a^T G a`` for a Gram matrix ``G (n, n)``."""
    g = gram.detach().double().cpu()
    n = g.shape[0]
    if g.shape != (n, n) or n < 1:
        raise InputError(f"the Gram matrix must be square and non-empty, got {tuple(g.shape)}.")
    if n == 1:
        return torch.ones(1, dtype=gram.dtype)
    best = None
    for i in range(n):
        for j in range(i + 1, n):
            a, v = _pair(float(g[i, i]), float(g[i, j]), float(g[j, j]))
            if best is None or v < best[0]:
                best = (v, i, j, a)
    _, i, j, a = best
    w = torch.zeros(n, dtype=torch.float64)
    w[i], w[j] = a, 1 - a
    if n == 2:
        return w.to(gram.dtype)
    for _ in range(max_iter):
        t = int(torch.argmin(g @ w))
        # the segment between the current point w and the vertex e_t
        v11 = float(w @ g @ w)
        v12 = float(w @ g[:, t])
        v22 = float(g[t, t])
        gamma, _ = _pair(v11, v12, v22)
        new = gamma * w
        new[t] += 1 - gamma
        if float((new - w).abs().sum()) < tol:
            w = new
            break
        w = new
    return w.to(gram.dtype)


def min_norm_weights(
    grads: Sequence[torch.Tensor] | torch.Tensor, max_iter: int = 250, tol: float = 1e-6
) -> torch.Tensor:
    """Simplex weights ``(n,)`` of the min-norm point in the convex hull of the gradients (each
    a tensor of any shape; all the same number of elements)."""
    flat = torch.stack([g.detach().flatten().double() for g in grads])
    return min_norm_weights_from_gram(flat @ flat.T, max_iter, tol).float()


def _shared_gradients(
    losses: Sequence[torch.Tensor], params: Sequence[torch.Tensor]
) -> list[torch.Tensor]:
    out = []
    for loss in losses:
        gs = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
        out.append(torch.cat([(g if g is not None else torch.zeros_like(p)).flatten()
                              for g, p in zip(gs, params, strict=True)]))  # fmt: skip
    return out


def _normalizer(kind: str, loss: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """The authors' ``gradient_normalizers`` for one task: ``||g||``, ``min(loss, 10)`` or
    ``min(loss * ||g||, 10)``."""
    if kind == "l2":
        return grad.norm()
    value = loss.detach().mean().to(grad.dtype)
    if float(value) < 0:
        raise InputError(
            f"MGDA's {kind!r} normalisation divides by the loss, which must be >= 0; got "
            f"{float(value):.4g}. Use normalize='l2' or 'none' for such losses."
        )
    if kind == "loss+":
        value = value * grad.norm()
    return value.clamp_max(NORMALIZER_CAP)


class MGDA:
    """Combine several losses with MGDA's min-norm weights of their gradients.

    Sener & Koltun, "Multi-Task Learning as Multi-Objective Optimization", NeurIPS 2018; Désidéri,
    "Multiple-gradient descent algorithm", 2012.
    ``MGDA(params)(losses) -> (combined loss, weights)``: the weights are the min-norm point of the
    per-task gradients of ``params`` (the shared parameters), detached; two tasks in closed form,
    more by Frank-Wolfe (see the module docstring).

    Args:
        params: the shared parameters, or a module whose parameters that require gradients are used.
        normalize: gradient normalisation before the min-norm step, one of ``"none"`` (default),
            ``"l2"``, ``"loss"``, ``"loss+"`` (the authors' code offers these; divisors as the
            module says, the ``loss`` ones capped at 10). The ``loss`` ones need losses >= 0.
        max_iter: Frank-Wolfe steps for more than two tasks; default 250.
        tol: stop when the step's L1 change is below this; default ``1e-6``.

    Shapes: ``losses`` a sequence of ``n`` scalar tensors -> a scalar loss and ``(n,)`` float32
    weights on the simplex, on the first loss's device.

    Example:
        >>> w = nn.Parameter(torch.ones(2))
        >>> MGDA([w])([(w**2).sum(), ((w - 2) ** 2).sum()])[1]
        tensor([0.5000, 0.5000])
    """

    def __init__(
        self,
        params: Sequence[torch.Tensor] | nn.Module,
        normalize: str = "none",
        max_iter: int = 250,
        tol: float = 1e-6,
    ) -> None:
        if normalize not in NORMALIZATIONS:
            raise InputError(
                f"unknown normalisation {normalize!r}; use {', '.join(NORMALIZATIONS)}."
            )
        ps = list(params.parameters()) if isinstance(params, nn.Module) else list(params)
        self.params = [p for p in ps if p.requires_grad]
        if not self.params:
            raise InputError("MGDA needs parameters that require gradients.")
        self.normalize, self.max_iter, self.tol = normalize, max_iter, tol

    def weights(self, losses: Sequence[torch.Tensor]) -> torch.Tensor:
        """The min-norm weights ``(n,)`` of the losses' normalised gradients (see the module)."""
        grads = _shared_gradients(losses, self.params)
        if self.normalize != "none":  # "none" divides all by 1 + eps: the same weights
            grads = [g / (_normalizer(self.normalize, loss, g) + NORMALIZER_EPS)
                     for loss, g in zip(losses, grads, strict=True)]  # fmt: skip
        return min_norm_weights(grads, self.max_iter, self.tol)

    def __call__(self, losses: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        if len(losses) < 1:
            raise InputError("MGDA needs at least one loss.")
        w = self.weights(losses).to(losses[0].device)
        return sum(wi * li for wi, li in zip(w, losses, strict=True)), w


class FixedWeights:
    """Combine several losses with fixed weights: ``(sum_i w_i * loss_i, weights)``.

    The baseline to :class:`MGDA`, with the same call signature.

    Args:
        weights: one non-negative weight per loss, e.g. ``[1.0, 0.5]``.

    Shapes: ``losses`` a sequence of ``len(weights)`` scalar tensors -> a scalar loss and the
    ``(n,)`` weights on the first loss's device.

    Example:
        >>> combine = FixedWeights([1.0, 0.5])
        >>> combine([torch.tensor(2.0), torch.tensor(4.0)])[0]
        tensor(4.)
    """

    def __init__(self, weights: Sequence[float]) -> None:
        if not weights or any(w < 0 for w in weights):
            raise InputError(f"weights must be a non-empty list of numbers >= 0, got {weights}.")
        self.w = torch.tensor([float(w) for w in weights])

    def __call__(self, losses: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        if len(losses) != len(self.w):
            raise InputError(f"{len(self.w)} weights for {len(losses)} losses.")
        w = self.w.to(losses[0].device)
        return sum(wi * li for wi, li in zip(w, losses, strict=True)), w
