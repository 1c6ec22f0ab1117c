"""FDPDDL's reputation system as pure functions over ``n x n`` matrices.

Lyu, Li, Nandakumar, Yu, Ma, "How to democratise and protect AI: fair and differentially private
decentralised deep learning", IEEE TDSC 2020 (arXiv:2007.09370). Every party ``i`` keeps a
credibility ``c[i, j]`` for every other party ``j`` (row ``i`` is ``i``'s view; ``c[i, i] = 0``;
each row sums to 1 over the parties still in the game), and a number of tokens ``T[i]``: a party
pays one token for every coordinate of another party's update it downloads, and earns one for
every coordinate of its own that another party downloads.

Conventions, shared by every function here: ``n`` parties indexed ``0..n-1``; ``active`` is a
boolean ``(n,)`` mask of the parties not expelled (nor dropped); matrices are ``float64``
``(n, n)``; token counts and download sizes are ``int64``. Nothing here touches a model or the
network: :mod:`trustlab.collab.protocol` calls these with the numbers every party sees, so every
party computes the same matrices.

- :func:`majority_vote` / :func:`credibility`: stage 1's mutual evaluation. Every party labels
  the samples every party published (DPGAN samples); the consensus label of a sample is the
  majority vote of the active parties (the publisher included); ``c[i, j]`` is the fraction of
  ``i``'s samples on which ``j`` agrees with the consensus, rows normalised.
- :func:`threshold` ``tau = 1 / (3 (|C| - 1))`` and :func:`expel`: a party rated below ``tau`` by
  at least ``ceil(2/3 |C|)`` of the others is expelled.
- :func:`initial_tokens`: ``T[i] = floor(|theta| * s[i] * (n - 1))`` for sharing level ``s[i]``.
- :func:`download_sizes`: ``d[i, j] = min(floor(c[i, j] T[i]), floor(|theta| s[j]))`` when
  ``c[i, j] >= tau``, else 0; :func:`download_weights`: ``1 + c[i, j] / max_k c[i, k]``.
- :func:`transfer_tokens`: ``T[i] -= sum_j d[i, j]``, ``T[j] += sum_i d[i, j]`` (the sum of all
  tokens is constant).
- :func:`fade`: ``c <- keep * c_old + (1 - keep) * c_new`` (keep 0.2), the old credibility
  normalised and the new the raw agreement of the round's benchmark, then rows normalised again
  (the authors' code).
"""

from __future__ import annotations

import math

import torch

from trustlab.errors import InputError

FADE_KEEP = 0.2  # c <- 0.2 c_old + 0.8 c_new (the paper's fading of credibility)
EXPEL_FRACTION = 2.0 / 3.0  # expelled when at least 2/3 of the others rate a party below tau


def _mask(active: torch.Tensor | None, n: int) -> torch.Tensor:
    if active is None:
        return torch.ones(n, dtype=torch.bool)
    a = torch.as_tensor(active, dtype=torch.bool).flatten()
    if a.numel() != n:
        raise InputError(f"active has {a.numel()} entries for {n} parties; give one per party.")
    return a


def _square(c: torch.Tensor, name: str = "credibility") -> torch.Tensor:
    c = torch.as_tensor(c, dtype=torch.float64)
    if c.ndim != 2 or c.shape[0] != c.shape[1]:
        raise InputError(f"{name} must be an n x n matrix, got shape {tuple(c.shape)}.")
    return c


def majority_vote(labels: torch.Tensor, num_classes: int, voters: torch.Tensor) -> torch.Tensor:
    """Consensus label of each sample: the class most voters gave it.

    Ties go to the highest class, as in the authors' code (its loop keeps the last maximum).

    Args:
        labels: ``(V, m)`` int, voter ``v``'s label of sample ``s``.
        num_classes: ``K``.
        voters: ``(V,)`` bool, which voters count.

    Returns:
        ``(m,)`` int64 consensus labels.

    Example:
        >>> majority_vote(torch.tensor([[0, 1], [2, 1], [2, 0]]), 3, torch.ones(3, dtype=bool))
        tensor([2, 1])
    """
    onehot = torch.nn.functional.one_hot(labels.long().clamp_min(0), num_classes)
    counts = (onehot.to(torch.float64) * voters.to(torch.float64)[:, None, None]).sum(0)
    return num_classes - 1 - counts.flip(-1).argmax(-1)


def normalise_rows(c: torch.Tensor, active: torch.Tensor | None = None) -> torch.Tensor:
    """Rows scaled to sum to 1 over the active columns (the diagonal and inactive parties are 0;
    an all-zero row stays 0)."""
    c = _square(c)
    n = c.shape[0]
    a = _mask(active, n)
    keep = a[None, :] & a[:, None] & ~torch.eye(n, dtype=torch.bool)
    c = torch.where(keep, c, torch.zeros_like(c))
    total = c.sum(1, keepdim=True)
    return torch.where(total > 0, c / total.clamp_min(1e-300), torch.zeros_like(c))


def agreement(
    labels: torch.Tensor,
    num_classes: int,
    active: torch.Tensor | None = None,
    ties: str = "highest",
) -> tuple[torch.Tensor, torch.Tensor]:
    """The raw agreement matrix of one benchmark, before normalisation.

    Args:
        labels: ``(n, n, m)`` int: ``labels[i, j]`` are party ``j``'s labels of the samples party
            ``i`` published; ``-1`` pads row ``i`` when it published fewer than ``m`` samples.
        num_classes: ``K``.
        active: ``(n,)`` bool, the parties still in the game (default all).
        ties: a sample whose vote is tied: ``"highest"`` (default, the authors' code) takes the
            highest tied class; ``"skip"`` leaves the sample out (it has no consensus, so it
            counts for nobody).

    Returns:
        ``(agree, consensus)``: ``consensus`` (``(n, m)``) the majority labels of each party's
        samples, voted by every active party (the publisher included, as in the authors' code;
        ties go to the highest class); ``agree[i, j]`` (float64 ``(n, n)``) the fraction of
        ``i``'s samples on which ``j`` gave the consensus label (0 on the diagonal and for
        inactive parties).
    """
    labels = torch.as_tensor(labels).long()
    if labels.ndim != 3 or labels.shape[0] != labels.shape[1]:
        raise InputError(
            f"labels must be (n, n, m): labels[i, j] = party j's labels of party i's samples; "
            f"got shape {tuple(labels.shape)}."
        )
    if labels.numel() and int(labels.max()) >= num_classes:
        raise InputError(f"labels go up to {int(labels.max())} but num_classes is {num_classes}.")
    n = labels.shape[0]
    a = _mask(active, n)
    valid = labels[torch.arange(n), torch.arange(n)] >= 0  # (n, m): row i's real samples
    onehot = torch.nn.functional.one_hot(labels.clamp_min(0), num_classes).to(torch.float64)
    counts = (onehot * a.to(torch.float64)[None, :, None, None]).sum(1)  # (n, m, K)
    consensus = num_classes - 1 - counts.flip(-1).argmax(-1)  # ties: the highest class
    if ties == "skip":
        top = counts.max(-1).values
        valid = valid & ((counts == top[..., None]).sum(-1) == 1)
    elif ties != "highest":
        raise InputError(f"ties must be 'highest' or 'skip', got {ties!r}.")
    hits = ((labels == consensus[:, None, :]) & valid[:, None, :]).to(torch.float64).sum(-1)
    agree = hits / valid.sum(-1, keepdim=True).clamp_min(1).to(torch.float64)
    keep = a[:, None] & a[None, :] & ~torch.eye(n, dtype=torch.bool)
    agree = torch.where(keep, agree, torch.zeros_like(agree))
    return agree, torch.where(valid, consensus, torch.full_like(consensus, -1))


def credibility(
    labels: torch.Tensor,
    num_classes: int,
    active: torch.Tensor | None = None,
    ties: str = "highest",
) -> torch.Tensor:
    """``c[i, j]``: how far party ``i`` trusts party ``j`` (stage 1's benchmark), rows normalised.

    ``labels[i, j]`` are party ``j``'s labels of party ``i``'s published samples (``(n, n, m)``).

    Example:
        >>> labels = torch.tensor([  # labels[i, j]: party j's labels of party i's 2 samples
        ...     [[0, 0], [0, 0], [0, 0], [1, 1]],
        ...     [[1, 1], [0, 0], [1, 1], [0, 1]],
        ...     [[2, 2], [2, 0], [0, 0], [0, 0]],
        ...     [[3, 3], [3, 3], [3, 3], [0, 0]]])
        >>> credibility(labels, num_classes=4)
        tensor([[0.0000, 0.5000, 0.5000, 0.0000],
                [0.4000, 0.0000, 0.4000, 0.2000],
                [0.2500, 0.5000, 0.0000, 0.2500],
                [0.3333, 0.3333, 0.3333, 0.0000]], dtype=torch.float64)
    """
    agree, _ = agreement(labels, num_classes, active, ties)
    return normalise_rows(agree, active)


def threshold(num_active: int) -> float:
    """``tau = 1 / (3 (|C| - 1))`` for ``|C|`` parties in the game (``inf`` below 2 parties)."""
    if num_active < 2:
        return math.inf
    return 1.0 / (3.0 * (num_active - 1))


def expel(
    credibility: torch.Tensor,
    active: torch.Tensor | None = None,
    abstain: torch.Tensor | None = None,
) -> torch.Tensor:
    """The parties still in the game after one vote.

    Every active party ``i`` votes against each active ``j`` it rates below :func:`threshold`
    (``c[i, j] < tau``); ``j`` is expelled with at least ``ceil(2/3 |C|)`` votes, ``|C|`` the
    number of active parties (the authors' code; with 4 parties that is every other party).
    With fewer than 3 active parties nobody is expelled (the authors stop collaborating there).
    ``abstain``: ``(n,)`` bool, parties whose row says nothing this time (none of their samples
    had a consensus) and so cast no vote; default none.

    Returns the new ``(n,)`` bool mask (a subset of ``active``).

    Example:
        >>> c = torch.tensor([[0, .5, .45, .05], [.5, 0, .45, .05],
        ...                   [.5, .45, 0, .05], [.4, .3, .3, 0]])
        >>> expel(c).tolist()
        [True, True, True, False]
    """
    c = _square(credibility)
    n = c.shape[0]
    a = _mask(active, n)
    k = int(a.sum())
    if k < 3:
        return a.clone()
    tau = threshold(k)
    raters = a[:, None] & a[None, :] & ~torch.eye(n, dtype=torch.bool)  # (i, j): i rates j
    if abstain is not None:
        raters = raters & ~torch.as_tensor(abstain, dtype=torch.bool)[:, None]
    votes = ((c < tau) & raters).sum(0)  # per j: how many others rate j below tau
    return a & ~(votes >= math.ceil(EXPEL_FRACTION * k - 1e-9))


def initial_tokens(num_params: int, sharing: torch.Tensor) -> torch.Tensor:
    """``T[i] = floor(|theta| * s[i] * (n - 1))``: what party ``i`` could earn if every other
    party downloaded everything it shares once.

    Example:
        >>> initial_tokens(1000, torch.tensor([0.1, 0.2, 0.5]))
        tensor([ 200,  400, 1000])
    """
    s = torch.as_tensor(sharing, dtype=torch.float64).flatten()
    if num_params < 1:
        raise InputError(f"num_params must be >= 1, got {num_params}.")
    if (s <= 0).any() or (s > 1).any():
        raise InputError(f"sharing levels must be in (0, 1], got {s.tolist()}.")
    n = s.numel()
    return torch.floor(num_params * s * (n - 1) + 1e-9).to(torch.int64)


def shared_size(num_params: int, sharing: torch.Tensor) -> torch.Tensor:
    """``floor(|theta| s[j])``: how many coordinates party ``j`` releases per round."""
    s = torch.as_tensor(sharing, dtype=torch.float64).flatten()
    return torch.floor(num_params * s + 1e-9).to(torch.int64)


def download_sizes(
    credibility: torch.Tensor,
    tokens: torch.Tensor,
    num_params: int,
    sharing: torch.Tensor,
    active: torch.Tensor | None = None,
) -> torch.Tensor:
    """``d[i, j] = min(floor(c[i, j] T[i]), floor(|theta| s[j]))`` for ``c[i, j] >= tau``, else 0.

    Rows of ``c`` sum to at most 1, so ``sum_j d[i, j] <= T[i]``: no party spends more tokens than
    it holds.

    Example:
        >>> c = torch.tensor([[0, .6, .4], [.5, 0, .5], [.9, .1, 0]])
        >>> download_sizes(c, torch.tensor([100, 100, 100]), 100, torch.tensor([.5, .5, .3]))
        tensor([[ 0, 50, 30],
                [50,  0, 30],
                [50,  0,  0]])
    """
    c = _square(credibility)
    n = c.shape[0]
    a = _mask(active, n)
    t = torch.as_tensor(tokens, dtype=torch.int64).flatten()
    if t.numel() != n:
        raise InputError(f"tokens has {t.numel()} entries for {n} parties.")
    tau = threshold(int(a.sum()))
    want = torch.floor(c * t.clamp_min(0)[:, None].to(torch.float64) + 1e-9).to(torch.int64)
    cap = shared_size(num_params, sharing)[None, :].expand(n, n)
    d = torch.minimum(want, cap)
    ok = (c >= tau) & a[:, None] & a[None, :] & ~torch.eye(n, dtype=torch.bool)
    return torch.where(ok, d, torch.zeros_like(d))


def download_weights(credibility: torch.Tensor) -> torch.Tensor:
    """``w[i, j] = 1 + c[i, j] / max_k c[i, k]`` (1 for a row of zeros): more credible parties'
    coordinates count more in ``i``'s aggregation."""
    c = _square(credibility)
    top = c.max(1, keepdim=True).values
    return 1.0 + torch.where(top > 0, c / top.clamp_min(1e-300), torch.zeros_like(c))


def transfer_tokens(tokens: torch.Tensor, sizes: torch.Tensor) -> torch.Tensor:
    """Pay for downloads: ``T[i] - sum_j d[i, j] + sum_j d[j, i]`` (the total is unchanged)."""
    t = torch.as_tensor(tokens, dtype=torch.int64)
    d = torch.as_tensor(sizes, dtype=torch.int64)
    return t - d.sum(1) + d.sum(0)


def fade(old: torch.Tensor, new: torch.Tensor, keep: float = FADE_KEEP) -> torch.Tensor:
    """``keep * old + (1 - keep) * new`` (the paper keeps 0.2 of the old credibility)."""
    if not 0.0 <= keep <= 1.0:
        raise InputError(f"keep must be in [0, 1], got {keep}.")
    return keep * _square(old) + (1.0 - keep) * _square(new)


def top_k(update: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` largest-magnitude coordinates of a flat update, as ``(indices, values)`` sorted by
    decreasing magnitude (ties: the lower index first), so a prefix of length ``d <= k`` is the
    top ``d``."""
    flat = update.detach().flatten()
    k = max(0, min(int(k), flat.numel()))
    # a stable sort: equal magnitudes keep index order on every machine
    order = torch.sort(flat.abs(), descending=True, stable=True).indices[:k]
    return order, flat[order]


__all__ = [
    "EXPEL_FRACTION",
    "FADE_KEEP",
    "agreement",
    "credibility",
    "download_sizes",
    "download_weights",
    "expel",
    "fade",
    "initial_tokens",
    "majority_vote",
    "normalise_rows",
    "shared_size",
    "threshold",
    "top_k",
    "transfer_tokens",
]
