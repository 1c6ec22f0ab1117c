"""PNG pictures that say what they show, drawn with matplotlib (its Agg canvas: no display, and
no change to the backend a notebook or script has chosen) and written atomically.

- :func:`curves_figure` / :func:`curves_png`: curves on ROC-style axes (``x, y`` in ``[0, 1]``)
  with a title, axis labels, a legend (each curve's name and, for ROCs, its area under the
  curve) and the chance diagonal; linear axes, or with ``log_floor`` log-log axes from
  ``log_floor`` to 1 (the log-log ROC of membership inference, where the interesting part is
  the low-FPR corner; Carlini et al., S&P 2022).
- :func:`image_rows_figure`: rows of equally sized images with a label per row, optional labels
  per column, captions under the images (e.g. the predicted class), marked columns and a title
  (the attack grids of :mod:`trustlab.attacks.evasion.grid` and Neural Cleanse's triggers).
- :func:`rounds_figure` / :func:`rounds_png`: panels of series over rounds (collaborative
  learning's accuracy and credibility per party).
- :func:`save_figure`: a figure to a PNG, atomically (a temporary file renamed onto ``path``).

The ``*_figure`` functions return the :class:`matplotlib.figure.Figure` so that a caller (or a
test) can read its texts before it is saved.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from trustlab.errors import InputError
from trustlab.utils.io import atomic_path

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "COLOURS", "curves_figure", "curves_png", "figure_texts", "image_rows_figure", "rounds_figure",
    "rounds_png", "save_figure",
]  # fmt: skip

#: the colour of the i-th curve (matplotlib's tab10 order), as 0-255 RGB
COLOURS = (
    (31, 119, 180), (214, 39, 40), (44, 160, 44), (255, 127, 14), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (127, 127, 127),
)  # fmt: skip
#: the colour of marked columns and captions (matplotlib's tab:red)
MARK = "#d62728"
DPI = 100


def _new_figure(width: float, height: float) -> Figure:
    """A figure on its own Agg canvas (pyplot and the global backend are left alone)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Figure, path: str | Path, **savefig: Any) -> Path:
    """Write ``fig`` as a PNG to ``path`` atomically (white background, tight bounding box so
    that labels outside the axes are kept); ``savefig`` overrides the keyword arguments of
    :meth:`~matplotlib.figure.Figure.savefig`. Returns ``path``.

    Example:
        >>> fig = curves_figure({"a": ([0, 1], [0, 1])})
        >>> save_figure(fig, tmp / "a.png").stat().st_size > 1000  # doctest: +SKIP
        True
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    if not isinstance(fig.canvas, FigureCanvasAgg):
        FigureCanvasAgg(fig)
    options: dict[str, Any] = {
        "format": "png", "dpi": DPI, "bbox_inches": "tight", "pad_inches": 0.12,
        "facecolor": "white", "metadata": {"Software": None},
    }  # fmt: skip
    options.update(savefig)
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, **options)
    return path


def figure_texts(fig: Figure) -> list[str]:
    """Every non-empty text a person reads on ``fig``: titles, axis labels, tick labels, legend
    entries, annotations (in drawing order, figure texts first).

    Example:
        >>> fig = curves_figure({"attack": ([0, 1], [0, 1])}, title="ROC")
        >>> "ROC" in figure_texts(fig) and "false positive rate" in figure_texts(fig)
        True
    """
    from matplotlib.text import Text

    out = [fig.get_suptitle(), *(t.get_text() for t in fig.texts)]
    for ax in fig.axes:
        out += [ax.get_title(loc) for loc in ("left", "center", "right")]
        out += [ax.get_xlabel(), ax.get_ylabel()]
        if ax.axison:  # the tick labels inside the visible range
            for axis in (ax.xaxis, ax.yaxis):
                lo, hi = sorted(axis.get_view_interval())
                locs, texts = axis.get_majorticklocs(), axis.get_majorticklabels()
                out += [t.get_text() for v, t in zip(locs, texts, strict=False) if lo <= v <= hi]
        out += [c.get_text() for c in ax.get_children() if isinstance(c, Text)]
        legend = ax.get_legend()
        if legend is not None:
            out += [t.get_text() for t in legend.get_texts()]
            out.append(legend.get_title().get_text())
    seen: set[str] = set()
    return [t for t in out if t and not (t in seen or seen.add(t))]


# -- curves ---------------------------------------------------------------------------------
def _area(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Trapezoidal area under ``(xs, ys)`` (the AUC of a ROC curve)."""
    x, y = np.asarray(xs, float), np.asarray(ys, float)
    if len(x) < 2:
        return math.nan
    return float(np.sum(np.diff(x) * (y[1:] + y[:-1]) / 2))


def curves_figure(
    curves: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    *,
    size: int = 256,
    diagonal: bool = True,
    log_floor: float | None = None,
    title: str | None = None,
    xlabel: str = "false positive rate",
    ylabel: str = "true positive rate",
    labels: Mapping[str, str] | None = None,
    auc: bool = True,
    marks: Sequence[float] = (),
) -> Figure:
    """A figure of ``name -> (x, y)`` curves with ``x, y`` in ``[0, 1]`` (default axis labels:
    a ROC's false and true positive rates), the chance diagonal ``y = x`` (``diagonal``) and a
    legend: ``labels[name]`` where given, else the name and, with ``auc``, the area under the
    curve. ``marks``: x positions drawn as dotted vertical lines (e.g. ``0.01``, where the TPR
    at 1% FPR is read). ``size``: the side of the plot box in pixels, about (256 by default).

    ``log_floor`` (e.g. ``1e-3``, in ``(0, 1)``) draws both axes on a log scale from
    ``log_floor`` to 1; values below the floor (a ROC's zero FPR) are drawn on the floor.
    Default title: ``"ROC curve"`` (``"ROC curve (log-log)"`` with ``log_floor``).

    Example:
        >>> fig = curves_figure({"lira": ([0, 0.5, 1], [0, 0.9, 1])}, log_floor=1e-3)
        >>> fig.axes[0].get_xscale(), fig.axes[0].get_legend().get_texts()[0].get_text()
        ('log', 'lira (AUC 0.700)')
    """
    from matplotlib.ticker import FuncFormatter

    if log_floor is not None and not 0 < log_floor < 1:
        raise InputError(f"log_floor must be in (0, 1), e.g. 1e-3; got {log_floor}.")
    if size < 64:
        raise InputError(f"size must be at least 64 pixels, got {size}.")
    scale = size / 256
    fig = _new_figure(5.2 * scale, 4.6 * scale)
    ax = fig.add_axes((0.15, 0.13, 0.8, 0.77))
    lo = log_floor if log_floor is not None else 0.0
    for i, (name, (xs, ys)) in enumerate(curves.items()):
        x = np.asarray(xs, float)
        y = np.asarray(ys, float)
        if len(x) != len(y):
            raise InputError(f"curve {name!r}: {len(x)} x values but {len(y)} y values.")
        text = (labels or {}).get(name)
        if text is None:
            text = f"{name} (AUC {_area(x, y):.3f})" if auc else name
        colour = tuple(v / 255 for v in COLOURS[i % len(COLOURS)])
        ax.plot(np.clip(x, lo, 1), np.clip(y, lo, 1), color=colour, lw=1.6, label=text)
    if diagonal:
        ax.plot([lo, 1], [lo, 1], ls="--", color="0.6", lw=1, label="chance (y = x)")
    for m in marks:
        ax.axvline(m, ls=":", color="0.4", lw=1)
        ax.annotate(
            f"x = {m:g}", (m, 1), xycoords=("data", "axes fraction"), xytext=(2, -2),
            textcoords="offset points", ha="left", va="top", fontsize=7, color="0.3",
        )  # fmt: skip
    if log_floor is not None:
        ax.set_xscale("log")
        ax.set_yscale("log")
        fmt = FuncFormatter(lambda v, _: f"{v:g}")
        ax.xaxis.set_major_formatter(fmt)
        ax.yaxis.set_major_formatter(fmt)
    ax.set_xlim(lo, 1)
    ax.set_ylim(lo, 1)
    ax.grid(True, which="major", color="0.9", lw=0.8)
    ax.set_xlabel(xlabel + (" (log scale)" if log_floor is not None else ""))
    ax.set_ylabel(ylabel + (" (log scale)" if log_floor is not None else ""))
    if title is None:
        title = "ROC curve" + (" (log-log)" if log_floor is not None else "")
    ax.set_title(title, fontsize=10)
    ax.legend(loc="lower right", fontsize=8, framealpha=0.9)
    return fig


def curves_png(
    path: str | Path,
    curves: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    size: int = 256,
    diagonal: bool = True,
    log_floor: float | None = None,
    *,
    title: str | None = None,
    xlabel: str = "false positive rate",
    ylabel: str = "true positive rate",
    labels: Mapping[str, str] | None = None,
    auc: bool = True,
    marks: Sequence[float] = (),
) -> dict[str, tuple[int, int, int]]:
    """Write :func:`curves_figure` of ``curves`` (same arguments) as a PNG to ``path``,
    atomically. Returns the colour of each curve (name -> 0-255 RGB).

    Example:
        >>> curves_png(tmp / "roc.png", {"a": ([0, 1], [0, 1])})  # doctest: +SKIP
        {'a': (31, 119, 180)}
    """
    fig = curves_figure(
        curves, size=size, diagonal=diagonal, log_floor=log_floor, title=title, xlabel=xlabel,
        ylabel=ylabel, labels=labels, auc=auc, marks=marks,
    )  # fmt: skip
    save_figure(fig, path)
    return {name: COLOURS[i % len(COLOURS)] for i, name in enumerate(curves)}


# -- rows of images -------------------------------------------------------------------------
def _as_images(batch: Any) -> np.ndarray:
    """``(k, C, H, W)`` (tensor or array) -> ``(k, H, W)`` grey or ``(k, H, W, 3)`` RGB floats
    in [0, 1]."""
    if hasattr(batch, "detach"):
        batch = batch.detach().float().cpu().numpy()
    arr = np.asarray(batch, dtype=np.float64)
    if arr.ndim != 4:
        raise InputError(f"each row must be a batch of images (k, C, H, W); got shape {arr.shape}.")
    arr = np.nan_to_num(np.clip(arr, 0, 1), nan=0.0)
    c = arr.shape[1]
    if c == 1:
        return arr[:, 0]
    if c >= 3:
        return arr[:, :3].transpose(0, 2, 3, 1)
    return arr[:, 0]  # two channels: the first, grey


def image_rows_figure(
    rows: Sequence[Any],
    *,
    row_labels: Sequence[str] | None = None,
    col_labels: Sequence[str] | None = None,
    captions: Sequence[Sequence[str] | None] | None = None,
    title: str | None = None,
    marked: Collection[int] = (),
    scale: int = 4,
) -> Figure:
    """A figure of image rows: one row per ``(k, C, H, W)`` batch in [0, 1] (tensor or array;
    grey and colour rows may be mixed; rows may hold different numbers of images of one size).

    Args:
        rows: the batches, top to bottom.
        row_labels: one label per row, left of it (e.g. ``"clean"``, ``"adversarial"``).
        col_labels: one label per column, above it (e.g. the true class).
        captions: per row, one text per image under it (e.g. ``"pred 3"``), or None for a row
            without captions.
        title: above everything (several lines allowed).
        marked: column indices framed in red, their labels in red (e.g. flagged classes).
        scale: each image is drawn ``scale`` times its size, within 0.9 to 2.4 inches at 100 dpi.

    Example:
        >>> fig = image_rows_figure([np.zeros((2, 1, 8, 8))], row_labels=["clean"], title="t")
        >>> sorted(figure_texts(fig))
        ['clean', 't']
    """
    if not rows:
        raise InputError("image_rows_figure needs at least one row of images.")
    imgs = [_as_images(r) for r in rows]
    sizes = {im.shape[1:3] for im in imgs if len(im)}
    if len(sizes) > 1:
        raise InputError(f"all images must have one size (H, W); got {sorted(sizes)}.")
    if not sizes:
        raise InputError("image_rows_figure needs at least one image.")
    for name, seq in (("row_labels", row_labels), ("captions", captions)):
        if seq is not None and len(seq) != len(rows):
            raise InputError(f"{name} has {len(seq)} entries for {len(rows)} rows.")
    (h, w) = sizes.pop()
    ncol = max(len(im) for im in imgs)
    nrow = len(imgs)
    cell_in = float(np.clip(max(h, w) * scale / DPI, 0.9, 2.4))  # the long side of a cell
    cw, ch = w / max(h, w), h / max(h, w)  # a cell's size in data units (long side 1)
    pt = 1 / 72 / cell_in  # one point in data units
    has_captions = captions is not None and any(c for c in captions)
    gx = 0.06
    gy = 0.06 + (11 * pt if has_captions else 0)
    width, height = ncol * cw + (ncol - 1) * gx, nrow * ch + (nrow - 1) * gy
    fig = _new_figure(width * cell_in, height * cell_in)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, width)
    ax.set_ylim(height, 0)
    ax.set_axis_off()
    interp = "nearest" if max(h, w) <= cell_in * DPI else "antialiased"

    def x0(c: int) -> float:
        return c * (cw + gx)

    def y0(r: int) -> float:
        return r * (ch + gy)

    for r, im in enumerate(imgs):
        for c, img in enumerate(im):
            ax.imshow(
                img, cmap="gray", vmin=0, vmax=1, interpolation=interp, aspect="auto",
                extent=(x0(c), x0(c) + cw, y0(r) + ch, y0(r)),
            )  # fmt: skip
        if row_labels is not None and row_labels[r]:
            ax.annotate(
                row_labels[r], (0, y0(r) + ch / 2), xytext=(-5, 0), textcoords="offset points",
                ha="right", va="center", fontsize=9,
            )  # fmt: skip
        if captions is not None and captions[r]:
            for c, text in enumerate(captions[r][: len(im)]):
                ax.annotate(
                    text, (x0(c) + cw / 2, y0(r) + ch), xytext=(0, -1.5),
                    textcoords="offset points", ha="center", va="top", fontsize=7,
                )  # fmt: skip
    label_lines = 0
    if col_labels is not None:
        label_lines = max((str(t).count("\n") + 1 for t in col_labels), default=0)
        for c, text in enumerate(col_labels[:ncol]):
            ax.annotate(
                text, (x0(c) + cw / 2, 0), xytext=(0, 3), textcoords="offset points",
                ha="center", va="bottom", fontsize=8, color=MARK if c in marked else "black",
                fontweight="bold" if c in marked else "normal",
            )  # fmt: skip
    from matplotlib.patches import Rectangle

    pad = 0.025
    below = 11 * pt if captions is not None and captions[-1] else 0.0  # the last row's captions
    for c in sorted(marked):
        if 0 <= c < ncol:
            ax.add_patch(
                Rectangle(
                    (x0(c) - pad, -pad), cw + 2 * pad, height + below + 2 * pad, fill=False,
                    edgecolor=MARK, lw=2, clip_on=False,
                )
            )  # fmt: skip
    if title:
        ax.annotate(
            title, (0.5, 1), xycoords="axes fraction", xytext=(0, 6 + 10 * label_lines),
            textcoords="offset points", ha="center", va="bottom", fontsize=10,
        )  # fmt: skip
    return fig


def rounds_figure(
    panels: Mapping[str, Mapping[str, Sequence[float]]],
    *,
    title: str | None = None,
    xlabel: str = "round",
) -> Figure:
    """Side-by-side panels of series over rounds: ``{panel title: {series name: values}}``
    (value ``t`` is drawn at round ``t + 1``; NaN leaves a gap), one colour per series name
    across panels and one legend.

    Example:
        >>> fig = rounds_figure({"accuracy": {"party 0": [0.5, 0.7], "party 1": [0.4, 0.8]}})
        >>> [t for t in figure_texts(fig) if t.startswith("party")]
        ['party 0', 'party 1']
    """
    if not panels:
        raise InputError("rounds_figure needs at least one panel.")
    names = list(dict.fromkeys(n for series in panels.values() for n in series))
    fig = _new_figure(4.2 * len(panels), 3.4)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (panel, series) in zip(axes, panels.items(), strict=True):
        for name, ys in series.items():
            colour = tuple(v / 255 for v in COLOURS[names.index(name) % len(COLOURS)])
            y = np.asarray(list(ys), float)
            ax.plot(np.arange(1, len(y) + 1), y, color=colour, lw=1.5, marker=".", label=name)
        ax.set_title(panel, fontsize=9)
        ax.set_xlabel(xlabel)
        ax.grid(True, color="0.9", lw=0.8)
    axes[-1].legend(loc="best", fontsize=7, framealpha=0.9)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def rounds_png(
    path: str | Path,
    panels: Mapping[str, Mapping[str, Sequence[float]]],
    *,
    title: str | None = None,
    xlabel: str = "round",
) -> Path:
    """:func:`rounds_figure` saved as a PNG at ``path`` (atomically)."""
    return save_figure(rounds_figure(panels, title=title, xlabel=xlabel), path)
