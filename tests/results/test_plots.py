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
