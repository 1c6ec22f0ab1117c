"""The leaderboard site in headless Chromium: every page opens with no console errors (from the
folder and served over HTTP), its plots render, the numbers are the store's, and clicking a
leaderboard's column header sorts it both ways."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest

from trustlab.experiments.bench_backdoor import matrix
from trustlab.experiments.results import reproduction_results
from trustlab.platform.leaderboard import PAGES, build_site, serve
from trustlab.results import RunStore
from trustlab.utils.format import format_interval

from ..platform.leaderboard_data import filled_store, stored_scores
from .conftest import images_rendered, open_page, table_texts


@pytest.fixture(scope="module")
def store_and_site(browser: Any, tmp_path_factory: pytest.TempPathFactory) -> tuple[RunStore, Path]:
    # `browser` first: without Chromium the test skips before the runs are made
    root = tmp_path_factory.mktemp("leaderboard-e2e")
    store = filled_store(root / "store")
    return store, build_site(store, root / "site").parent


def _column(driver: Any, table_id: str, header: str) -> list[str]:
    head, *rows = table_texts(driver, f"table#{table_id}")[0]
    i = head.index(header)
    return [r[i] for r in rows]


def test_every_page_opens_and_renders(browser: Any, store_and_site: tuple[RunStore, Path]) -> None:
    _, site = store_and_site
    for name, _ in PAGES:
        assert open_page(browser, site / name) == [], name
        assert images_rendered(browser) == [], name
        # the navigation reaches every page
        hrefs = browser.execute_script(
            "return Array.from(document.querySelectorAll('nav a')).map(a => a.href)"
        )
        assert [h.rsplit("/", 1)[1] for h in hrefs] == [n for n, _ in PAGES]
    open_page(browser, site / "robustness.html")
    assert browser.execute_script("return document.images[0].naturalWidth") > 300


def test_numbers_on_the_pages_are_the_stores(
    browser: Any, store_and_site: tuple[RunStore, Path]
) -> None:
    store, site = store_and_site
    open_page(browser, site / "robustness.html")
    scores = stored_scores(store, "robustness-quick")
    labels = _column(browser, "robustness-quick-leaderboard", "submission")
    for metric in ("robust_accuracy", "clean_accuracy"):
        shown = _column(browser, "robustness-quick-leaderboard", metric)
        expected = [format_interval(*(scores[x][metric][k] for k in ("mean", "lo", "hi")),
                                    digits=4) for x in labels]  # fmt: skip
        assert shown == expected
    open_page(browser, site / "reproductions.html")
    (result,) = [r for r in reproduction_results(store) if r.claims]
    run = store.get(result.run_id)
    measured = _column(browser, "reproductions-table", "measured")
    assert measured == [run.summary["claims"][c.claim]["detail"] for c in result.claims]
    assert _column(browser, "reproductions-table", "verdict") == [c.verdict for c in result.claims]
    open_page(browser, site / "backdoor.html")
    (bench,) = [r for r in store.list(kind="reproduce") if r.name == "bench-backdoor-smoke"]
    rows = json.loads((bench.dir / "table.json").read_text())["rows"]
    header, lines = matrix(rows)
    assert table_texts(browser, "table#backdoor-matrix")[0] == [header, *lines]


@pytest.mark.parametrize(
    ("page_name", "table_id", "column", "ascending"),
    [
        ("robustness.html", "robustness-quick-leaderboard", "robust_accuracy",
         ["plain", "Madry-AT", "trades"]),
        ("privacy.html", "privacy-quick-leaderboard", "test_accuracy", ["jem", "undefended"]),
    ],
)  # fmt: skip
def test_clicking_a_header_sorts_the_leaderboard(
    browser: Any,
    store_and_site: tuple[RunStore, Path],
    page_name: str,
    table_id: str,
    column: str,
    ascending: list[str],
) -> None:
    _, site = store_and_site
    assert open_page(browser, site / page_name) == []
    before = _column(browser, table_id, "submission")
    assert _column(browser, table_id, "rank") == [str(i + 1) for i in range(len(before))]
    heads = browser.find_elements("css selector", f"table#{table_id} thead th")
    head = next(h for h in heads if h.text.strip() == column)
    head.click()
    assert _column(browser, table_id, "submission") == ascending
    assert head.get_attribute("aria-sort") == "ascending"
    head.click()
    assert _column(browser, table_id, "submission") == ascending[::-1]
    assert head.get_attribute("aria-sort") == "descending"
    rank = next(h for h in heads if h.text.strip() == "rank")
    rank.click()  # back to the leaderboard's own order
    assert _column(browser, table_id, "submission") == before


def test_served_site_opens_without_console_errors(
    browser: Any, store_and_site: tuple[RunStore, Path], tmp_path: Path
) -> None:
    store, _ = store_and_site
    ready: list[str] = []
    stop = threading.Event()
    thread = threading.Thread(
        target=serve, args=(store, tmp_path / "site", "127.0.0.1", 0, 0.2),
        kwargs={"on_ready": ready.append, "stop": stop},
    )  # fmt: skip
    thread.start()
    try:
        for _ in range(600):
            if ready or not thread.is_alive():
                break
            stop.wait(0.05)
        (url,) = ready
        for name in ("index.html", "robustness.html"):
            assert open_page(browser, url + name) == [], name
            assert images_rendered(browser) == []
        browser.find_element("link text", "Privacy").click()
        assert browser.current_url == url + "privacy.html"
        assert browser.find_element("css selector", "h1").text == "trustlab leaderboard: privacy"
    finally:
        stop.set()
        thread.join(10)
