"""The attack grids say what they show: row labels, a title with the measured change, the
predicted classes where the caller has them; old call forms keep working."""

from __future__ import annotations

import pytest
import torch

from trustlab.attacks.evasion.grid import grid_figure, save_grid, save_rows
from trustlab.errors import InputError
from trustlab.results.plots import figure_texts


def _pair(k: int = 4, c: int = 1, size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(k, c, size, size, generator=g)
    return x, (x + 8 / 255 * torch.randn(x.shape, generator=g).sign()).clamp(0, 1)


def test_save_grid_old_call_writes_a_labelled_png(tmp_path) -> None:
    import imageio.v3 as iio

    x, adv = _pair()
    path = save_grid(tmp_path / "grid.png", x, adv, 4)  # the positional form callers use
    img = iio.imread(path)
    assert img.shape[0] > 250 and img.shape[1] > 300 and path.stat().st_size > 5_000
    assert [p.name for p in tmp_path.iterdir()] == ["grid.png"]  # atomic: no temp left


def test_grid_figure_default_rows_and_title_with_the_measured_change() -> None:
    x, adv = _pair()
    texts = figure_texts(grid_figure(x, adv))
    assert {"clean", "adversarial", "difference x5\n(grey = 0)"} <= set(texts)
    title = next(t for t in texts if t.startswith("clean vs adversarial"))
    assert "max |adversarial - clean| = 8.0/255" in title


def test_grid_figure_with_title_predictions_and_class_names() -> None:
    x, adv = _pair(k=3, c=3)
    fig = grid_figure(
        x, adv, title="pgd, eps 8/255", predictions=(torch.tensor([0, 1, 2]), [0, 2, 2]),
        classes=["cat", "dog", "ship"], col_labels=["a", "b", "c"],
    )  # fmt: skip
    texts = figure_texts(fig)
    assert any(t.startswith("pgd, eps 8/255\n") and "prediction changed" in t for t in texts)
    assert {"pred 0 cat", "pred 1 dog", "pred 2 ship", "pred 2 ship *", "a", "b", "c"} <= set(texts)
    assert "pred 0 cat *" not in texts  # unchanged predictions carry no mark


def test_grid_figure_for_a_backdoor_says_triggered() -> None:
    x, adv = _pair()
    texts = figure_texts(grid_figure(x, adv, labels=("clean", "triggered"), title="badnets"))
    assert "triggered" in texts and "adversarial" not in " ".join(texts)


def test_grid_refuses_mismatched_input(tmp_path) -> None:
    x, adv = _pair()
    with pytest.raises(InputError, match="one shape"):
        save_grid(tmp_path / "g.png", x, adv[:2])
    with pytest.raises(InputError, match="4 classes per row"):
        save_grid(tmp_path / "g.png", x, adv, predictions=([0, 1], [0, 1]))
    with pytest.raises(InputError, match="labels must name the two image rows"):
        grid_figure(x, adv, labels=("clean",))  # type: ignore[arg-type]
    assert not list(tmp_path.iterdir())


def test_save_rows_old_and_new_call_forms(tmp_path) -> None:
    rows = [torch.rand(3, 1, 8, 8), torch.rand(3, 3, 8, 8)]
    old = save_rows(tmp_path / "old.png", rows, 4)
    new = save_rows(
        tmp_path / "new.png", rows, row_labels=["mask", "mask x pattern"],
        col_labels=["class 0", "class 1", "class 2"], title="triggers", marked=[1],
    )  # fmt: skip
    for path in (old, new):
        assert path.read_bytes()[:4] == b"\x89PNG" and path.stat().st_size > 2_000
