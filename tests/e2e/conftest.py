"""Browser tests: trustlab's HTML pages opened in headless Chromium through Selenium.

They need Debian's ``chromium`` and ``chromium-driver`` packages and Selenium from PyPI (the
``dev`` extra); no browser is ever downloaded (the driver is Debian's ``/usr/bin/chromedriver``,
so Selenium Manager is never asked). Without them the tests skip and say what to install.
``.ci/run`` installs the packages when it runs as root.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = next((p for p in ("chromium", "chromium-browser") if shutil.which(p)), None)
DRIVER = shutil.which("chromedriver")


def _missing() -> str | None:
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[dev]')"
    if CHROMIUM is None or DRIVER is None:
        return (
            "headless Chromium is not installed (as root: apt-get install chromium "
            "chromium-driver; .ci/run does this when it runs as root)"
        )
    return None


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """A headless Chromium driven by Selenium, with the browser console log readable."""
    why = _missing()
    if why:
        pytest.skip(why)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which(CHROMIUM) or CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1400,1000", "--disable-extensions", "--no-first-run"):  # fmt: skip
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=DRIVER), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def open_page(driver: Any, path: str | Path) -> list[dict[str, Any]]:
    """Open a local HTML file (or an http URL) and return the console's errors (severe entries).

    Example:
        >>> assert open_page(browser, tmp_path / "report.html") == []  # doctest: +SKIP
    """
    url = str(path) if str(path).startswith("http") else Path(path).resolve().as_uri()
    driver.get_log("browser")  # drop what earlier pages logged
    driver.get(url)
    driver.execute_script("return document.readyState")
    return [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"]


def images_rendered(driver: Any) -> list[str]:
    """The ``alt`` text of every ``<img>`` that did not decode (an empty list: all rendered)."""
    return driver.execute_script(
        "return Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0))"
        ".map(i => i.alt);"
    )


def table_texts(driver: Any, css: str = "table") -> list[list[list[str]]]:
    """Every matching table's rows (header row first) as lists of cell texts."""
    return driver.execute_script(
        "return Array.from(document.querySelectorAll(arguments[0])).map(t => "
        "Array.from(t.rows).map(r => Array.from(r.cells).map(c => c.textContent.trim())));",
        css,
    )
