"""Local Intrinsic Dimensionality (LID) estimated in a minibatch, batched on torch.

Ma, Li, Wang, Erfani, Wijewickrema, Schoenebeck, Song, Houle & Bailey, "Characterizing
Adversarial Subspaces Using Local Intrinsic Dimensionality", ICLR 2018 (the maximum-likelihood
estimator of Amsaleg et al., KDD 2015, in a minibatch):

    LID(x) = -( (1/k) sum_{i=1..k} log(r_i(x) / r_k(x)) )^-1

with ``r_i(x)`` the distance from ``x`` to its ``i``-th nearest neighbour among the *reference*
points (the clean minibatch). ``x`` itself is excluded only when it is one of the reference
points (``exclude_self``; by default when ``queries is reference``; with aligned batches,
:func:`lid_in_batches` also excludes an adversarial copy's clean original, as the authors' code
does by dropping every query's nearest neighbour). The method-of-moments
estimate ``m / (r_k - m)``, ``m`` the mean of ``r_1 .. r_{k-1}`` (as the design's methods page
specifies it), is ``estimator="mom"``. Defaults: ``k = 20`` (the paper's choice for minibatches
of 100).

One implementation for the whole project: adversarial detection (LID features per layer) and
the LID-regularised inpainting GAN (differentiable: gradients flow to queries and references).
Everything runs on the inputs' device; rows are flattened, so any feature shape works.
"""

from __future__ import annotations

import torch

from trustlab.errors import InputError

ESTIMATORS = ("mle", "mom")
_TINY = 1e-12


def pairwise_distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Euclidean distances ``(N, M)`` between the rows of ``a (N, ...)`` and ``b (M, ...)`` in the
    fast form ``|a|^2 + |b|^2 - 2 a.b`` (one matrix product, in the inputs' dtype), with a
    gradient that stays finite at zero distance. Its rounding error on ``d^2`` is about machine
    epsilon times ``|a|^2 + |b|^2``: a relative 1e-5 in float32 for points whose distance is a
    tenth of their norm, more only for near-duplicates (pass float64 where those matter)."""
    return _fast_distances(a.flatten(1)[None], b.flatten(1)[None])[0]


def _fast_distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Batched: ``(B, N, D)`` and ``(B, M, D)`` -> ``(B, N, M)``."""
    na = torch.linalg.vector_norm(a, dim=2).square()
    nb = na if a is b else torch.linalg.vector_norm(b, dim=2).square()
    sq = torch.baddbmm(na[:, :, None] + nb[:, None, :], a, b.transpose(1, 2), alpha=-2)
    return sq.clamp_min(_TINY).sqrt()


def _check(queries: torch.Tensor, reference: torch.Tensor, k: int, exclude_self: bool) -> None:
    if queries.dim() < 2 or reference.dim() < 2:
        raise InputError("LID needs batches of points: tensors (N, ...) and (M, ...).")
    if queries[0].numel() != reference[0].numel():
        raise InputError(
            f"queries of {queries[0].numel()} features and references of "
            f"{reference[0].numel()} features cannot be compared."
        )
    available = reference.shape[0] - (1 if exclude_self else 0)
    if not 1 <= k <= available:
        raise InputError(
            f"k = {k} neighbours needs at least {k + int(exclude_self)} reference points, "
            f"got {reference.shape[0]}."
        )
    if exclude_self and queries.shape[0] != reference.shape[0]:
        raise InputError(
            "exclude_self needs queries aligned with the reference (the same number of points)."
        )


def _knn(q: torch.Tensor, ref: torch.Tensor, k: int, exclude_self: bool) -> torch.Tensor:
    """``(B, N, D)``, ``(B, M, D)`` -> sorted ``(B, N, k)`` nearest-neighbour distances."""
    d = _fast_distances(q, ref)
    if exclude_self:
        eye = torch.eye(d.shape[1], dtype=torch.bool, device=d.device)
        d = d.masked_fill(eye, float("inf"))
    return d.topk(k, dim=2, largest=False).values  # ascending


def _estimate(r: torch.Tensor, estimator: str) -> torch.Tensor:
    """LID from sorted neighbour distances ``(..., k)``."""
    if estimator == "mle":
        logs = torch.log(r.clamp_min(_TINY) / r[..., -1:].clamp_min(_TINY))
        return -1.0 / logs.mean(-1).clamp_max(-_TINY)
    m = r[..., :-1].mean(-1)
    return m / (r[..., -1] - m).clamp_min(_TINY)


def _check_estimator(estimator: str, k: int) -> None:
    if estimator not in ESTIMATORS:
        raise InputError(
            f"unknown LID estimator {estimator!r}; use one of {', '.join(ESTIMATORS)}."
        )
    if estimator == "mom" and k < 2:
        raise InputError("the method-of-moments estimate needs k >= 2.")


def knn_distances(
    queries: torch.Tensor,
    reference: torch.Tensor,
    k: int,
    exclude_self: bool | None = None,
) -> torch.Tensor:
    """Sorted distances ``(N, k)`` from each query to its ``k`` nearest reference points."""
    same = queries is reference if exclude_self is None else exclude_self
    _check(queries, reference, k, same)
    qv = queries.flatten(1)[None]
    return _knn(qv, qv if reference is queries else reference.flatten(1)[None], k, same)[0]


def lid(
    queries: torch.Tensor,
    reference: torch.Tensor | None = None,
    k: int = 20,
    estimator: str = "mle",
    exclude_self: bool | None = None,
) -> torch.Tensor:
    """LID estimate ``(N,)`` of each query against the reference points (default: the queries
    themselves, excluding each point from its own neighbours); see the module."""
    _check_estimator(estimator, k)
    if reference is None:
        reference = queries
    return _estimate(knn_distances(queries, reference, k, exclude_self), estimator)


def lid_per_set(
    queries: torch.Tensor,
    reference: torch.Tensor,
    k: int = 20,
    estimator: str = "mle",
) -> torch.Tensor:
    """LID of many independent sets at once: ``queries (B, N, D)`` against ``reference
    (B, M, D)``, set ``b``'s queries against set ``b``'s references only -> ``(B, N)``.

    No point is excluded (queries and references are different points, e.g. the feature vectors
    of a restored image against those of its original). One batched matrix product; gradients
    flow to both, as :func:`lid`'s."""
    _check_estimator(estimator, k)
    if queries.dim() != 3 or reference.dim() != 3:
        raise InputError("lid_per_set takes sets of points: tensors (B, N, D) and (B, M, D).")
    if queries.shape[0] != reference.shape[0] or queries.shape[2] != reference.shape[2]:
        raise InputError(
            f"query sets {tuple(queries.shape)} and reference sets {tuple(reference.shape)} "
            "must have the same number of sets B and features D."
        )
    if not 1 <= k <= reference.shape[1]:
        raise InputError(
            f"k = {k} neighbours needs at least {k} reference points per set, "
            f"got {reference.shape[1]}."
        )
    return _estimate(_knn(queries, reference, k, False), estimator)


#: how :func:`lid_in_batches` keeps a query's own reference point out of its neighbours
EXCLUSIONS = ("position", "nearest")


def lid_in_batches(
    queries: torch.Tensor,
    reference: torch.Tensor,
    batch_size: int = 100,
    k: int = 20,
    estimator: str = "mle",
    exclude: str = "position",
) -> torch.Tensor:
    """LID of ``queries[i]`` against the clean minibatch ``reference[j:j+b]`` that holds the
    same positions (the paper's protocol: queries and references are aligned, e.g. adversarial
    examples of the clean points). Each query excludes the reference point at its own position:
    itself for the clean points, its clean original for a noisy or adversarial copy (the
    authors' code drops the nearest neighbour of every query, which is that point). ``k``
    shrinks to ``b - 1`` for a short last batch; a last batch of fewer than 3 points joins the
    one before. All full minibatches are computed at once (batched matrix products).

    ``exclude="nearest"`` is the authors' rule instead: every query drops its nearest reference
    point, whichever it is. For the clean points both rules drop the point itself; for a noisy or
    adversarial copy they differ where its nearest clean point is not its own original (in deep
    layers an adversarial input's nearest clean neighbour is often another image)."""
    if exclude not in EXCLUSIONS:
        raise InputError(f"unknown exclusion rule {exclude!r}; use one of {', '.join(EXCLUSIONS)}.")
    if queries.shape[0] != reference.shape[0]:
        raise InputError("queries and reference must be aligned (the same number of points).")
    if batch_size < 3:
        raise InputError(f"batch_size must be >= 3, got {batch_size}.")
    _check_estimator(estimator, k)
    n, b = queries.shape[0], batch_size
    if n < 3:
        raise InputError(f"LID in minibatches needs at least 3 points, got {n}.")
    q, ref = queries.flatten(1), reference.flatten(1)
    same = queries is reference
    full = (n // b) * b
    if 0 < n - full < 3 and full:  # a tiny last batch joins the one before
        full -= b
    out = []

    def knn(qv: torch.Tensor, rv: torch.Tensor, kk: int) -> torch.Tensor:
        if exclude == "position":
            return _knn(qv, rv, kk, True)
        return _knn(qv, rv, kk + 1, False)[..., 1:]  # drop each query's nearest

    if full:
        kk = min(k, b - 1)
        qv = q[:full].view(-1, b, q.shape[1])
        rv = qv if same else ref[:full].view(-1, b, q.shape[1])
        out.append(_estimate(knn(qv, rv, kk), estimator).flatten())
    if full < n:
        kk = min(k, n - full - 1)
        out.append(_estimate(knn(q[full:][None], ref[full:][None], kk), estimator)[0])
    return torch.cat(out)
