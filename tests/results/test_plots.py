"""The PNG plots say what they show: titles, axis labels, legends, row and column labels."""

from __future__ import annotations

import numpy as np
import pytest

from trustlab.errors import InputError
from trustlab.results.plots import (
    curves_figure,
    curves_png,
    figure_texts,
    image_rows_figure,
    save_figure,
)


def _read(path):
    import imageio.v3 as iio

    return iio.imread(path)


def test_curves_png_writes_a_labelled_roc_with_each_curve_in_its_colour(tmp_path) -> None:
    path = tmp_path / "roc.png"
    legend = curves_png(path, {"a": ([0, 0, 1], [0, 1, 1]), "b": ([0, 1], [0, 1])})
    img = _read(path)
    assert img.shape[0] > 300 and img.shape[1] > 300 and 10_000 < path.stat().st_size < 500_000
    for colour in legend.values():  # each curve is drawn in the colour returned for it
        assert (img[..., :3].reshape(-1, 3) == np.array(colour)).all(1).any()
    assert not list(tmp_path.glob(".*.tmp"))  # written atomically, nothing left behind


def test_curves_figure_has_title_axis_labels_legend_with_auc_and_chance_line() -> None:
    fig = curves_figure({"deep": ([0, 0.5, 1], [0, 1, 1]), "lid": ([0, 1], [0, 1])})
    ax = fig.axes[0]
    assert ax.get_title() == "ROC curve"
    assert ax.get_xlabel() == "false positive rate" and ax.get_ylabel() == "true positive rate"
    texts = [t.get_text() for t in ax.get_legend().get_texts()]
    assert texts == ["deep (AUC 0.750)", "lid (AUC 0.500)", "chance (y = x)"]
    assert ax.get_xlim() == (0, 1) and ax.get_ylim() == (0, 1)
    assert {"0.0", "0.4", "1.0"} <= set(figure_texts(fig))  # tick labels


def test_curves_figure_log_scale_with_labels_marks_and_floor() -> None:
    fig = curves_figure(
        {"a": ([0.0, 1e-2, 1.0], [0.0, 1e-1, 1.0])}, log_floor=1e-3, title="membership",
        labels={"a": "a: AUC 0.9, TPR 10% at 1% FPR"}, marks=(0.01,),
    )  # fmt: skip
    ax = fig.axes[0]
    assert ax.get_xscale() == ax.get_yscale() == "log"
    assert ax.get_xlim() == pytest.approx((1e-3, 1)) and ax.get_ylim() == pytest.approx((1e-3, 1))
    texts = figure_texts(fig)
    assert "membership" in texts and "a: AUC 0.9, TPR 10% at 1% FPR" in texts
    assert "false positive rate (log scale)" in texts and "true positive rate (log scale)" in texts
    assert {"0.001", "0.01", "0.1", "1"} <= set(texts)  # readable decade ticks
    xs, ys = ax.get_lines()[0].get_data()
    assert xs[0] == ys[0] == pytest.approx(1e-3)  # (0, 0) is drawn on the floor corner


def test_curves_refuse_bad_arguments(tmp_path) -> None:
    path = tmp_path / "roc.png"
    with pytest.raises(InputError, match="log_floor"):
        curves_png(path, {"a": ([0, 1], [0, 1])}, log_floor=1.0)
    with pytest.raises(InputError, match="2 x values but 3 y values"):
        curves_png(path, {"a": ([0, 1], [0, 0.5, 1])})
    assert not path.exists() and not list(tmp_path.iterdir())


def test_image_rows_figure_labels_rows_columns_captions_and_marks() -> None:
    from matplotlib.patches import Rectangle

    rows = [np.full((3, 1, 8, 8), 0.2), np.full((3, 3, 8, 8), 0.8)]  # grey next to colour
    fig = image_rows_figure(
        rows, row_labels=["mask", "mask x pattern"], col_labels=["c0", "c1", "c2"],
        captions=[["a", "b", "c"], None], title="what it shows", marked=[1],
    )  # fmt: skip
    texts = figure_texts(fig)
    assert {"mask", "mask x pattern", "c0", "c1", "c2", "a", "b", "c", "what it shows"} <= set(
        texts
    )
    ax = fig.axes[0]
    assert len(ax.get_images()) == 6
    frames = [p for p in ax.patches if isinstance(p, Rectangle)]
    assert len(frames) == 1  # the marked column is framed
    marked = next(t for t in ax.texts if t.get_text() == "c1")
    assert marked.get_color() != next(t for t in ax.texts if t.get_text() == "c0").get_color()


def test_image_rows_figure_refuses_mismatched_input() -> None:
    with pytest.raises(InputError, match="one size"):
        image_rows_figure([np.zeros((2, 1, 8, 8)), np.zeros((2, 1, 9, 8))])
    with pytest.raises(InputError, match="row_labels has 1 entries for 2 rows"):
        image_rows_figure([np.zeros((2, 1, 8, 8))] * 2, row_labels=["x"])
    with pytest.raises(InputError, match=r"\(k, C, H, W\)"):
        image_rows_figure([np.zeros((8, 8))])
    with pytest.raises(InputError, match="at least one row"):
        image_rows_figure([])


def test_save_figure_is_atomic_and_leaves_the_global_backend_alone(tmp_path) -> None:
    import matplotlib

    before = matplotlib.get_backend()
    path = save_figure(
        image_rows_figure([np.random.rand(2, 3, 16, 16)], title="t"), tmp_path / "a.png"
    )
    assert path.read_bytes()[:4] == b"\x89PNG" and path.stat().st_size > 1000
    assert matplotlib.get_backend() == before
    assert [p.name for p in tmp_path.iterdir()] == ["a.png"]
