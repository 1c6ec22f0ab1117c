"""The shared page machinery (trustlab.results.html) in a real browser: no console errors,
embedded figures decode, sortable tables sort numerically both ways."""

from __future__ import annotations

from trustlab.results.html import Cell, figure, page, section, table, write_page
from trustlab.results.plots import curves_figure

from .conftest import images_rendered, open_page, table_texts


def test_page_renders_and_sorts(browser, tmp_path) -> None:
    rows = [["b", Cell("10.0% [9, 11]", 10.0)], ["a", 9.5], ["c", Cell("2.5%", 2.5)]]
    fig = curves_figure({"roc": ([0.0, 0.5, 1.0], [0.0, 0.8, 1.0])})
    path = write_page(
        tmp_path / "p.html", page("Title", section("S", table(["name", "value"], rows)),
                                  section("F", figure(fig, "roc curve", "a curve")))
    )  # fmt: skip
    assert open_page(browser, path) == []
    assert images_rendered(browser) == []
    header = browser.find_elements("css selector", "table.sortable thead th")
    header[1].click()
    assert [r[0] for r in table_texts(browser)[0][1:]] == ["c", "a", "b"]
    assert header[1].get_attribute("aria-sort") == "ascending"
    header[1].click()
    assert [r[0] for r in table_texts(browser)[0][1:]] == ["b", "a", "c"]
    header[0].click()
    assert [r[0] for r in table_texts(browser)[0][1:]] == ["a", "b", "c"]
