"""Run reports in a real browser: a training run's and a smoke reproduction's page open in
headless Chromium with no console errors, every image decodes, and the numbers on the page are
the store's (the summary, the reproduction's table, its claims' verdicts)."""

from __future__ import annotations

import json

import pytest

from tests.results.test_report import sce_smoke_run
from trustlab.results import RunStore, write_report
from trustlab.results.report import format_number
from trustlab.workflows.train import run_training

from .conftest import images_rendered, open_page, table_texts


def _sorts(browser, table_id: str) -> dict[str, str]:
    """``{first cell: data-sort of the second}`` of a two-column table."""
    return browser.execute_script(
        "var out={};document.querySelectorAll('#'+arguments[0]+' tbody tr').forEach("
        "function(r){out[r.cells[0].textContent.trim()]=r.cells[1].getAttribute('data-sort');});"
        "return out;",
        table_id,
    )


def test_training_run_report_in_the_browser(browser, tmp_path) -> None:
    store = RunStore(tmp_path / "store")
    cfg = {"dataset": "digits", "model": "mlp", "epochs": 2, "device": "cpu"}
    run, _ = run_training(cfg, store=store, progress=False)
    path = write_report(store.get(run.id))
    assert open_page(browser, path) == []
    assert images_rendered(browser) == []
    alts = browser.execute_script("return Array.from(document.images).map(i => i.alt);")
    assert {"loss per epoch", "accuracy per epoch"} <= set(alts)
    (summary,) = table_texts(browser, "#summary-table")
    shown = {row[0]: row[1] for row in summary[1:]}
    sorts = _sorts(browser, "summary-table")
    for name, value in run.summary.items():
        assert shown[name] == format_number(value), name
        if isinstance(value, float):
            assert float(sorts[name]) == value, name
    (metrics,) = table_texts(browser, "#metrics-epoch-table")
    assert len(metrics) - 1 == len(run.metrics()) == 2
    acc = metrics[0].index("test_accuracy")
    assert [r[acc] for r in metrics[1:]] == [
        format_number(m["test_accuracy"]) for m in run.metrics()
    ]


@pytest.mark.slow
def test_reproduction_report_in_the_browser(browser, tmp_path_factory) -> None:
    run = sce_smoke_run(tmp_path_factory)
    path = write_report(run, tmp_path_factory.mktemp("pages") / "sce.html")
    assert open_page(browser, path) == []
    assert images_rendered(browser) == []
    stored = json.loads((run.dir / "table.json").read_text())
    # every seed's values, as the store has them
    (rows,) = table_texts(browser, "#seeds-table")
    header = rows[0]
    assert [[format_number(rec[c]) for c in header] for rec in stored["rows"]] == rows[1:]
    # the results table: the cells report.md shows, one row per group
    md = [line for line in (run.dir / "report.md").read_text().splitlines() if line[:1] == "|"]
    (results,) = table_texts(browser, "#results-table")
    assert [[c.strip() for c in line.strip("|").split("|")] for line in md[2:]] == results[1:]
    # the claims' verdicts as stored
    (claims,) = table_texts(browser, "#claims-table")
    verdicts = {row[0]: row[1] for row in claims[1:]}
    assert verdicts == {k: c["verdict"] for k, c in run.summary["claims"].items()}
    # sorting the per-seed table by a metric sorts by the stored numbers
    metric = stored["metrics"][0]
    col = header.index(metric)
    browser.find_elements("css selector", "#seeds-table thead th")[col].click()
    (after,) = table_texts(browser, "#seeds-table")
    values = sorted(rec[metric] for rec in stored["rows"])
    assert [r[col] for r in after[1:]] == [format_number(v) for v in values]
