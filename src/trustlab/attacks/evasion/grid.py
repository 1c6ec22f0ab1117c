"""PNGs of image rows that say what they show: clean images, their modified versions
(adversarial, camouflaged, triggered) and the amplified differences (:func:`save_grid`, built by
:func:`grid_figure`), or any rows of equally sized images (:func:`save_rows`). Every row has a
label, the grid a title; captions (e.g. the predicted classes) and column labels are optional.
Drawn with :func:`trustlab.results.plots.image_rows_figure`, written atomically."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from trustlab.errors import InputError
from trustlab.results.plots import image_rows_figure, save_figure

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["grid_figure", "save_grid", "save_rows"]

#: the amplification of the difference row: ``0.5 + AMPLIFY * (adv - clean)``
AMPLIFY = 5.0


def _names(pred: Sequence[Any] | torch.Tensor, classes: Sequence[str] | None) -> list[str]:
    """Predicted classes as captions: ``"pred 3"``, or ``"pred 3 cat"`` with class names."""
    values = pred.tolist() if isinstance(pred, torch.Tensor) else list(pred)
    out = []
    for v in values:
        if isinstance(v, int) and classes is not None and 0 <= v < len(classes):
            name = str(classes[v])
            out.append(f"pred {v}" if name == str(v) else f"pred {v} {name}")
        else:
            out.append(f"pred {v}")
    return out


def grid_figure(
    x: torch.Tensor,
    adv: torch.Tensor,
    *,
    labels: tuple[str, str] = ("clean", "adversarial"),
    title: str | None = None,
    predictions: tuple[Sequence[Any] | torch.Tensor, Sequence[Any] | torch.Tensor] | None = None,
    classes: Sequence[str] | None = None,
    col_labels: Sequence[str] | None = None,
    scale: int = 4,
) -> Figure:
    """The figure of :func:`save_grid`: rows ``labels[0]`` (``x``), ``labels[1]`` (``adv``) and
    their difference ``0.5 + 5 * (adv - x)`` (grey = unchanged). The title is ``title`` (e.g.
    ``"pgd, eps 8/255"``; default ``"<labels[0]> vs <labels[1]>"``) and a second line with the
    largest change measured on the images (``max |adv - x|`` in 1/255 units). ``predictions``:
    the model's classes for ``x`` and for ``adv``, shown under each image (with names from
    ``classes``); a changed prediction is marked with ``*``.

    Example:
        >>> fig = grid_figure(torch.zeros(2, 1, 8, 8), torch.full((2, 1, 8, 8), 8 / 255))
        >>> from trustlab.results.plots import figure_texts
        >>> figure_texts(fig)[:3]
        ['clean', 'adversarial', 'difference x5\\n(grey = 0)']
    """
    if x.shape != adv.shape:
        raise InputError(f"x and adv must have one shape; got {tuple(x.shape)} and "
                         f"{tuple(adv.shape)}.")  # fmt: skip
    if len(labels) != 2:
        raise InputError(f"labels must name the two image rows, e.g. ('clean', 'triggered'); "
                         f"got {labels!r}.")  # fmt: skip
    x, adv = x.detach().float().cpu(), adv.detach().float().cpu()
    delta = adv - x
    diff = (0.5 + AMPLIFY * delta).clamp(0, 1)
    linf = float(delta.abs().max()) if delta.numel() else 0.0
    head = title if title else f"{labels[0]} vs {labels[1]}"
    full = f"{head}\nmax |{labels[1]} - {labels[0]}| = {linf * 255:.1f}/255"
    captions: list[list[str] | None] | None = None
    if predictions is not None:
        before, after = (_names(p, classes) for p in predictions)
        if not len(before) == len(after) == len(x):
            raise InputError(f"predictions must hold {len(x)} classes per row; got "
                             f"{len(before)} and {len(after)}.")  # fmt: skip
        after = [a + (" *" if a != b else "") for a, b in zip(after, before, strict=True)]
        captions = [before, after, None]
        full += "\n(* the prediction changed)"
    return image_rows_figure(
        [x, adv, diff],
        row_labels=[labels[0], labels[1], f"difference x{AMPLIFY:g}\n(grey = 0)"],
        col_labels=col_labels, captions=captions, title=full, scale=scale,
    )  # fmt: skip


def save_grid(
    path: str | Path,
    x: torch.Tensor,
    adv: torch.Tensor,
    scale: int = 4,
    *,
    labels: tuple[str, str] = ("clean", "adversarial"),
    title: str | None = None,
    predictions: tuple[Sequence[Any] | torch.Tensor, Sequence[Any] | torch.Tensor] | None = None,
    classes: Sequence[str] | None = None,
    col_labels: Sequence[str] | None = None,
) -> Path:
    """Write :func:`grid_figure` (rows: clean, adversarial, ``0.5 + 5 * (adv - clean)``, each
    labelled; a title; optional predicted classes) as a PNG to ``path``, atomically. For a
    backdoor pass ``labels=("clean", "triggered")``. Returns ``path``.

    Example:
        >>> x = torch.rand(4, 3, 32, 32)
        >>> save_grid(tmp / "g.png", x, (x + 0.03).clamp(0, 1), title="pgd, eps 8/255",
        ...           predictions=([1, 2, 3, 4], [1, 5, 3, 0]))  # doctest: +SKIP
    """
    fig = grid_figure(
        x, adv, labels=labels, title=title, predictions=predictions, classes=classes,
        col_labels=col_labels, scale=scale,
    )  # fmt: skip
    return save_figure(fig, path)


def save_rows(
    path: str | Path,
    rows: list[torch.Tensor],
    scale: int = 4,
    *,
    row_labels: Sequence[str] | None = None,
    col_labels: Sequence[str] | None = None,
    captions: Sequence[Sequence[str] | None] | None = None,
    title: str | None = None,
    marked: Collection[int] = (),
) -> Path:
    """One row per ``(k, C, H, W)`` batch in [0, 1] (grey rows are shown grey next to colour
    ones), with a label per row, optional labels per column, captions under the images, marked
    (red-framed) columns and a title: see
    :func:`~trustlab.results.plots.image_rows_figure`. Written atomically; returns ``path``.

    Example:
        >>> rows = [torch.rand(3, 1, 8, 8), torch.rand(3, 3, 8, 8)]
        >>> save_rows(tmp / "r.png", rows, row_labels=["mask", "mask x pattern"],
        ...           col_labels=["class 0", "class 1", "class 2"], marked=[1])  # doctest: +SKIP
    """
    fig = image_rows_figure(
        rows, row_labels=row_labels, col_labels=col_labels, captions=captions, title=title,
        marked=marked, scale=scale,
    )  # fmt: skip
    return save_figure(fig, path)
