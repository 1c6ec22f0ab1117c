"""Square Attack: Andriushchenko, Croce, Flammarion, Hein, "Square Attack: a query-efficient
black-box adversarial attack via random search", ECCV 2020 (as in AutoAttack's standard version).

A score-based black-box attack: it sees only the model's output scores (no gradients; the
whole attack runs under ``torch.no_grad()``). Random search on the margin
``z_y - max_{j != y} z_j``: from an initial point on the boundary of the ball, each query
proposes a change confined to one random square window of side ``s`` (per sample its own
position) and keeps it when the loss decreases; a sample stops as soon as it is misclassified.
The window's area is ``p * H * W`` with ``p`` shrinking along the piecewise-constant schedule
:func:`p_selection` (``p_init`` halved at iterations 10, 50, 200, 500, 1000, 2000, 4000, 6000
and 8000).

- L-inf: start from vertical stripes, ``x + eps * sign`` with one random sign per
  ``(channel, column)``; a proposal sets the window, per channel, to ``x +- eps`` (one random
  sign per channel), clipped to ``[0, 1]``.
- L2: start from a 5x5 grid of windows of side ``H // 5``, each holding a
  :func:`meta_pseudo_gaussian` bump (two opposite-signed "pseudo-Gaussian" halves, randomly
  transposed) times a random sign per channel, rescaled to norm ``eps``. A proposal picks two
  windows per sample: window 1 gets ``bump * sign + old / ||old||``, rescaled so that it holds
  the mass of windows 1 and 2 plus (per channel) ``1/C`` of the unused budget
  ``eps^2 - ||delta||^2``; window 2 is set to zero (mass moved from window 2 to window 1); the
  whole perturbation is rescaled to norm ``eps`` and clipped to ``[0, 1]``.

Defaults are AutoAttack's standard version (``autoattack/autoattack.py`` builds
``SquareAttack(p_init=.8, n_queries=5000, n_restarts=1, loss='margin', resc_schedule=False)``):
``p_init = 0.8``, ``n_queries = 5000``, ``restarts = 1``, ``loss = "margin"`` (also ``"ce"``:
the cross-entropy, minimised as ``-CE``), ``rescale_schedule = False`` (the schedule counts raw
iterations; ``True`` stretches it to ``n_queries`` as the authors' ``attack.py`` does).

Read: ``autoattack/square.py`` and ``autoattack/autoattack.py`` (fra31/auto-attack) and
``attack.py`` (max-andr/square-attack). trustlab follows AutoAttack's code, with these
choices and deviations:

- Window positions are drawn per sample (as the authors' L-inf code does; AutoAttack and the
  authors' L2 code draw one position per iteration for the whole batch), all at once; the
  L2 bump's random transpose and the L2 init's per-window transposes are also drawn per sample.
  A sample's search therefore does not depend on which other samples share its batch's
  window, and nothing loops over samples: windows are read and written with index tensors.
  The only Python loops are over queries (inherent) and restarts.
- Positions are uniform on ``{0, ..., H - s}`` as in the paper's Algorithm (both codes draw
  ``randint(0, H - s)``, which never places a window on the last row/column unless ``s = H``).
- Query budget: ``n_queries`` counts the initial point (the authors' convention:
  ``n_iters - 1`` updates after the init); AutoAttack makes ``n_queries`` updates after it. Each
  sample also costs one query on the clean input (to leave misclassified inputs unchanged, as
  AutoAttack's ``perturb`` does). ``atk.queries_`` holds per sample the queries the search used
  (0 for inputs already misclassified), at most ``n_queries * restarts``.
- Success is ``argmax != y`` (the references stop at margin ``<= 0``; they differ only at exact
  ties). A proposal is kept when it lowers the loss or misclassifies (AutoAttack's rule).
- For inputs still classified correctly the lowest-margin point found is returned (the
  authors' ``x_best``; AutoAttack returns the clean input there). Across restarts the point with
  the lowest margin is kept.
- The L-inf proposal follows AutoAttack (no redraw when a window would not change the point;
  the authors' L-inf code redraws its signs until it does). ``s`` is clipped to ``min(H, W)``
  (AutoAttack); the authors' L-inf code clips at ``H - 1``.
- The L2 init grid is cropped at the image border (AutoAttack's loop would fail on e.g.
  ``H = 12``); its window side is at least 1.
- The model sees each candidate after :class:`~trustlab.attacks.evasion.base.Ball` (the same
  clip the references apply), so the returned point is the one that was scored.

Measured (cnn-small trained 3 epochs on digits, first 200 test points, clean 97.0%,
``n_queries = 1000``, seeds 0/1/2, one CPU thread): robust accuracy at L-inf ``eps = 0.1``
20.5/20.0/19.5% here vs 25.5/25.0/23.0% with AutoAttack's ``square.py`` (torchattacks 3.5.1's
port gives the same 25.5% at seed 0) and 10.5% for APGD-CE; at L2 ``eps = 1.0`` 33.5/36.5/34.5%
vs 37.5/38.5/35.0% (APGD-CE 13.0%). With positions drawn on ``{0, ..., H - s - 1}`` as in the
codes, this implementation gives 24.5/23.0% (L-inf) and 37.0/36.0% (L2) at seeds 0/1: the gap
is the windows that can reach the last row and column. The model's forward passes take over
95% of the run time (25-40 s per run here on a loaded machine).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from trustlab.attacks.evasion.base import Attack, Ball, _view
from trustlab.attacks.evasion.losses import cw
from trustlab.errors import InputError
from trustlab.registry import EVASION

_SQUARE = (
    "Andriushchenko, Croce, Flammarion, Hein. Square Attack: a query-efficient black-box "
    "adversarial attack via random search. ECCV 2020."
)

LOSSES = ("margin", "ce")

#: iterations (on the 10000-iteration scale) after which ``p`` is halved again
_HALVINGS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)


def p_selection(p_init: float, it: int, n_queries: int, rescale: bool = False) -> float:
    """The fraction ``p`` of pixels a window covers at iteration ``it`` (0-based, after the init).

    ``p_init / 2**k`` with ``k`` the number of thresholds 10, 50, 200, 500, 1000, 2000, 4000,
    6000, 8000 that ``it`` exceeds; with ``rescale`` ``it`` is first mapped to
    ``int(it / n_queries * 10000)`` (the schedule stretched to the budget). E.g.
    ``p_selection(0.8, 11, 5000) == 0.4``, ``p_selection(0.8, 8001, 5000) == 0.8 / 512``.
    """
    if rescale:
        it = int(it / n_queries * 10000)
    return p_init / 2 ** sum(it > t for t in _HALVINGS)


def pseudo_gaussian_rectangle(rows: int, cols: int) -> torch.Tensor:
    """A ``(rows, cols)`` bump of unit L2 norm: nested rectangles around the centre
    ``(rows // 2, cols // 2)``, ring ``k`` adding ``1 / (k + 1)**2`` to every cell within
    Chebyshev distance ``k`` of it (float64)."""
    if rows == 0 or cols == 0:
        return torch.zeros(rows, cols, dtype=torch.float64)
    rings = max(rows // 2 + 1, cols // 2 + 1)
    weights = 1.0 / torch.arange(1, rings + 1, dtype=torch.float64) ** 2
    tail = weights.flip(0).cumsum(0).flip(0)  # tail[k] = sum of the weights of rings >= k
    di = (torch.arange(rows) - rows // 2).abs()
    dj = (torch.arange(cols) - cols // 2).abs()
    bump = tail[torch.maximum(di[:, None], dj[None, :])]
    return bump / bump.norm()


def meta_pseudo_gaussian(s: int) -> torch.Tensor:
    """The ``(s, s)`` L2 update shape of unit norm: the top ``s // 2`` rows a positive
    :func:`pseudo_gaussian_rectangle`, the rest a negative one (float64; the caller transposes
    it at random)."""
    out = torch.cat(
        [pseudo_gaussian_rectangle(s // 2, s), -pseudo_gaussian_rectangle(s - s // 2, s)]
    )
    return out / out.norm()


def _window_mask(top: torch.Tensor, left: torch.Tensor, s: int, h: int, w: int) -> torch.Tensor:
    """``(M, 1, h, w)`` boolean: per sample the ``s x s`` window at ``(top, left)``."""
    rows = torch.arange(h, device=top.device)
    cols = torch.arange(w, device=top.device)
    in_r = (rows >= top[:, None]) & (rows < top[:, None] + s)
    in_c = (cols >= left[:, None]) & (cols < left[:, None] + s)
    return (in_r[:, :, None] & in_c[:, None, :])[:, None]


@EVASION.register(
    "square",
    "Square Attack: score-based random search with square windows (AutoAttack)",
    paper=_SQUARE,
    threat="black-box (scores only), untargeted, L-inf or L2 ball",
)
class Square(Attack):
    """Square Attack (untargeted, score-based black-box): random search over square windows on
    the margin loss, using only the model's outputs; see the module docstring.

    Andriushchenko, Croce, Flammarion, Hein, "Square Attack: a query-efficient black-box
    adversarial attack via random search", ECCV 2020. Defaults are AutoAttack's standard
    version.

    Args:
        model: maps ``[0, 1]`` inputs to logits (normalisation inside the model); only its
            outputs are used, under ``torch.no_grad()``.
        eps: radius (default ``8/255``; a float or ``"8/255"``).
        norm: ``"linf"`` (default) or ``"l2"``.
        n_queries: query budget per sample and restart, the initial point included
            (default 5000).
        p_init: the window's initial fraction of the image, in ``(0, 1]`` (default 0.8).
        restarts: runs, each on the points still classified correctly (default 1).
        loss: ``"margin"`` (default; ``z_y - max_{j != y} z_j``) or ``"ce"``.
        rescale_schedule: stretch the ``p`` schedule to ``n_queries`` (default False, as
            AutoAttack's standard version).
        seed: seeds the random search (default 0).

    Shape:
        ``x``: ``(N, C, H, W)`` in ``[0, 1]``; ``y``: ``(N,)`` int64; returns a tensor of ``x``'s
        shape, dtype and device, inside the ``eps`` ball of ``x`` and ``[0, 1]``. After a call
        ``atk.queries_`` is the ``(N,)`` number of queries each sample's search used.

    Example::

        atk = Square(model, eps=8 / 255, n_queries=1000)
        x_adv = atk(x, y)
    """

    def __init__(
        self,
        model: nn.Module,
        eps: float | str = 8 / 255,
        norm: str = "linf",
        n_queries: int = 5000,
        p_init: float = 0.8,
        restarts: int = 1,
        loss: str = "margin",
        rescale_schedule: bool = False,
        seed: int = 0,
    ) -> None:
        super().__init__(model, eps, norm, targeted=False, seed=seed)
        if isinstance(n_queries, bool) or not isinstance(n_queries, int) or n_queries < 1:
            raise InputError(f"n_queries must be an integer >= 1, got {n_queries!r}.")
        if isinstance(restarts, bool) or not isinstance(restarts, int) or restarts < 1:
            raise InputError(f"restarts must be an integer >= 1, got {restarts!r}.")
        if not (isinstance(p_init, (int, float)) and 0 < p_init <= 1):
            raise InputError(f"p_init must be in (0, 1], got {p_init!r}; AutoAttack uses 0.8.")
        if loss not in LOSSES:
            raise InputError(f"unknown Square loss {loss!r}; use one of {', '.join(LOSSES)}.")
        self.n_queries = n_queries
        self.p_init = float(p_init)
        self.restarts = restarts
        self.loss_name = loss
        self.rescale_schedule = bool(rescale_schedule)
        self._bumps: dict[tuple[int, torch.dtype, torch.device], torch.Tensor] = {}

    # -- scores ---------------------------------------------------------------------------
    def scores(
        self, x: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(margin, loss to minimise, misclassified)`` per sample from one query."""
        logits = self.logits(x)
        margin = -cw(logits, y)
        loss = (
            margin if self.loss_name == "margin" else -F.cross_entropy(logits, y, reduction="none")
        )
        return margin, loss, logits.argmax(1) != y

    # -- random draws (CPU generator, moved to the device) --------------------------------
    @staticmethod
    def _signs(shape: tuple[int, ...], gen: torch.Generator, like: torch.Tensor) -> torch.Tensor:
        return (2 * torch.randint(0, 2, shape, generator=gen) - 1).to(like)

    @staticmethod
    def _ints(high: int, n: int, gen: torch.Generator, device: torch.device) -> torch.Tensor:
        """``n`` integers uniform on ``{0, ..., high}``."""
        return torch.randint(0, high + 1, (n,), generator=gen).to(device)

    def _bump(self, s: int, like: torch.Tensor) -> torch.Tensor:
        key = (s, like.dtype, like.device)
        if key not in self._bumps:
            self._bumps[key] = meta_pseudo_gaussian(s).to(like)
        return self._bumps[key]

    def _oriented(self, s: int, n: tuple[int, ...], gen, like) -> torch.Tensor:
        """``(*n, s, s)``: the L2 bump, transposed where a fair coin says so."""
        bump = self._bump(s, like)
        flip = torch.randint(0, 2, n, generator=gen).bool().to(like.device)
        return torch.where(flip[..., None, None], bump.T, bump)

    # -- initial points -------------------------------------------------------------------
    def _init_linf(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        n, c, _, w = x.shape
        return x + self.eps * self._signs((n, c, 1, w), gen, x)

    def _init_l2(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        n, c, h, w = x.shape
        s = max(h // 5, 1)
        start = max((h - 5 * s) // 2, 0)
        gh, gw = h // s, w // s
        bumps = self._oriented(s, (n, gh, gw), gen, x)  # (n, gh, gw, s, s)
        signs = self._signs((n, c, gh, gw), gen, x)
        grid = bumps[:, None] * signs[..., None, None]  # (n, c, gh, gw, s, s)
        grid = grid.permute(0, 1, 2, 4, 3, 5).reshape(n, c, gh * s, gw * s)
        delta = torch.zeros_like(x)
        rows, cols = min(gh * s, h - start), min(gw * s, w - start)
        delta[:, :, start : start + rows, start : start + cols] = grid[:, :, :rows, :cols]
        return x + self._to_radius(delta)

    def _to_radius(self, delta: torch.Tensor) -> torch.Tensor:
        """``delta`` rescaled to L2 norm ``eps`` per sample (AutoAttack's ``normalize``)."""
        return delta * (self.eps / (delta.flatten(1).norm(dim=1) + 1e-12)).view(-1, 1, 1, 1)

    # -- proposals ------------------------------------------------------------------------
    def _side(self, p: float, h: int, w: int, least: int) -> int:
        s = max(int(round(math.sqrt(p * h * w))), least)
        if least == 3 and s % 2 == 0:  # L2: odd sides
            s += 1
        return min(s, h, w)

    def _propose_linf(self, x, best, p, gen) -> torch.Tensor:
        m, c, h, w = x.shape
        s = self._side(p, h, w, 1)
        top, left = self._ints(h - s, m, gen, x.device), self._ints(w - s, m, gen, x.device)
        mask = _window_mask(top, left, s, h, w)
        return torch.where(mask, x + self.eps * self._signs((m, c, 1, 1), gen, x), best)

    def _propose_l2(self, x, best, p, gen) -> torch.Tensor:
        m, c, h, w = x.shape
        s = self._side(p, h, w, 3)
        dev = x.device
        top1, left1 = self._ints(h - s, m, gen, dev), self._ints(w - s, m, gen, dev)
        top2, left2 = self._ints(h - s, m, gen, dev), self._ints(w - s, m, gen, dev)
        bump = self._oriented(s, (m,), gen, x)[:, None]  # (m, 1, s, s)
        signs = self._signs((m, c, 1, 1), gen, x)
        delta = best - x
        ar = torch.arange(s, device=dev)
        idx = (
            torch.arange(m, device=dev).view(m, 1, 1, 1),
            torch.arange(c, device=dev).view(1, c, 1, 1),
            (top1[:, None] + ar).view(m, 1, s, 1),
            (left1[:, None] + ar).view(m, 1, 1, s),
        )
        old = delta[idx]  # (m, c, s, s): window 1
        both = _window_mask(top1, left1, s, h, w) | _window_mask(top2, left2, s, h, w)
        mass = (delta * both).square().sum((2, 3), keepdim=True)  # windows 1 and 2, per channel
        spare = (self.eps**2 - delta.flatten(1).square().sum(1)).clamp_min(0)
        new = bump * signs + old / (old.square().sum((2, 3), keepdim=True).sqrt() + 1e-12)
        new = new / (new.square().sum((2, 3), keepdim=True).sqrt() + 1e-12)
        new = new * (_view(spare, new) / c + mass).sqrt()
        delta = delta * ~_window_mask(top2, left2, s, h, w)
        delta = delta.index_put(idx, new)
        return x + self._to_radius(delta)

    # -- the search -----------------------------------------------------------------------
    def run(
        self, x: torch.Tensor, y: torch.Tensor, gen: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """One random search from a fresh initial point.

        Returns ``(best points, their margins, misclassified, queries used)`` per sample.
        """
        ball = Ball(x, self.eps, self.norm)
        init = self._init_linf if self.norm == "linf" else self._init_l2
        propose = self._propose_linf if self.norm == "linf" else self._propose_l2
        best = ball(init(x, gen))
        margin, loss, won = self.scores(best, y)
        queries = torch.ones_like(margin)
        for it in range(self.n_queries - 1):
            idx = (~won).nonzero().flatten()
            if idx.numel() == 0:
                break
            p = p_selection(self.p_init, it, self.n_queries, self.rescale_schedule)
            xi = x[idx]
            cand = Ball(xi, self.eps, self.norm)(propose(xi, best[idx], p, gen))
            m_new, l_new, w_new = self.scores(cand, y[idx])
            lower = l_new < loss[idx]
            keep = lower | w_new
            loss[idx] = torch.where(lower, l_new, loss[idx])
            margin[idx] = torch.where(keep, m_new, margin[idx])
            best[idx] = torch.where(_view(keep, cand), cand, best[idx])
            won[idx] = w_new
            queries[idx] += 1
        return best, margin, won, queries

    def perturb(
        self, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None
    ) -> torch.Tensor:
        if x.dim() != 4:
            raise InputError(
                f"Square needs images (N, C, H, W), got a tensor of shape {tuple(x.shape)}."
            )
        with torch.no_grad():
            gen = self.generator()
            n = x.shape[0]
            best = x.clone()
            best_margin = torch.full((n,), math.inf, dtype=x.dtype, device=x.device)
            done = self.logits(x).argmax(1) != y  # already misclassified: left unchanged
            self.queries_ = torch.zeros(n, dtype=torch.long, device=x.device)
            for _ in range(self.restarts):
                idx = (~done).nonzero().flatten()
                if idx.numel() == 0:
                    break
                out, margin, won, queries = self.run(x[idx], y[idx], gen)
                take = won | (margin < best_margin[idx])
                best[idx[take]] = out[take]
                best_margin[idx[take]] = margin[take]
                done[idx[won]] = True
                self.queries_[idx] += queries.long()
        return best
