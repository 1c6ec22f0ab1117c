"""The dependency-free curve plot."""

from __future__ import annotations

import numpy as np

from trustlab.results.plots import curves_png


def test_curves_png_draws_each_curve_in_its_colour(tmp_path) -> None:
    import imageio.v3 as iio

    path = tmp_path / "roc.png"
    legend = curves_png(path, {"a": ([0, 0, 1], [0, 1, 1]), "b": ([0, 1], [0, 1])}, size=64)
    img = iio.imread(path)
    assert img.shape == (80, 80, 3)
    for colour in legend.values():
        assert (img.reshape(-1, 3) == np.array(colour)).all(1).any()
    assert not list(tmp_path.glob("*.tmp*"))


def test_curves_png_log_scale_places_decades_and_refuses_a_bad_floor(tmp_path) -> None:
    import imageio.v3 as iio
    import pytest

    from trustlab.errors import InputError

    size, pad = 61, 8  # 3 decades over 60 pixels: 1e-2 at 20, 1e-1 at 40
    path = tmp_path / "roc.png"
    # a curve from (0, 0) (drawn on the floor) through (1e-2, 1e-1) to (1, 1)
    legend = curves_png(
        path, {"a": ([0.0, 1e-2, 1.0], [0.0, 1e-1, 1.0])}, size=size, diagonal=False,
        log_floor=1e-3,
    )  # fmt: skip
    img = iio.imread(path)
    colour = np.array(legend["a"])
    assert (img[pad + 60 - 40, pad + 20] == colour).all()  # the point (1e-2, 1e-1)
    assert (img[pad + 60, pad] == colour).all()  # (0, 0) lies on the floor corner
    with pytest.raises(InputError, match="log_floor"):
        curves_png(path, {"a": ([0, 1], [0, 1])}, log_floor=1.0)
