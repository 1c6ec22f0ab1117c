"""The audit's scorecard in a real browser: it opens with no console errors, every plot
renders, the numbers on the page equal scorecard.json's, the summary sorts; a screenshot is
saved to $TRUSTLAB_SCREENSHOT_DIR when set (docs/images/scorecard.png is made this way).

By default the page is a fresh small audit (a user's tiny network on digits, seconds); with
$TRUSTLAB_SCORECARD set to a stored audit run's folder (its scorecard.html and scorecard.json)
that page is checked instead, e.g. the one `make demo` made."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .conftest import images_rendered, open_page, table_texts


class SmallNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding=1, stride=2)
        self.fc = nn.Linear(8 * 8 * 8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(F.relu(self.conv(x)).flatten(1))


def _fresh_scorecard(folder: Path) -> Path:
    from trustlab.data import load_dataset
    from trustlab.results.html import write_page
    from trustlab.utils.io import write_json_atomic
    from trustlab.workflows.audit import Budget, audit, scorecard_html

    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    torch.manual_seed(0)
    net = SmallNet()
    opt = torch.optim.Adam(net.parameters(), 1e-2)
    for _ in range(4):
        for i in range(0, len(train), 64):
            loss = F.cross_entropy(net(train.x[i : i + 64]), train.y[i : i + 64])
            opt.zero_grad()
            loss.backward()
            opt.step()
    budget = Budget(clean_n=100, robust_n=40, sanity_n=8, nc_samples=32, nc_epochs=2,
                    nc_batch=16, privacy_n=80, detect_n=60, detect_steps=5)  # fmt: skip
    card = audit(net.eval(), test, train_data=train, eps=0.3, budget=budget, progress=False)
    write_json_atomic(folder / "scorecard.json", card.to_dict())
    write_page(folder / "scorecard.html", scorecard_html(card))
    return folder


def test_scorecard_page(browser, tmp_path: Path) -> None:
    given = os.environ.get("TRUSTLAB_SCORECARD")
    folder = Path(given) if given else _fresh_scorecard(tmp_path)
    doc = json.loads((folder / "scorecard.json").read_text())
    assert open_page(browser, folder / "scorecard.html") == []
    assert images_rendered(browser) == []
    n_images = browser.execute_script("return document.images.length")
    assert n_images == browser.execute_script(
        "return document.querySelectorAll('section[id] figure img').length"
    )
    assert n_images >= sum(s["status"] == "ok" for s in doc["sections"].values())

    # the summary's value cells hold exactly scorecard.json's headline numbers
    shown = browser.execute_script(
        "return Array.from(document.querySelectorAll('#summary tbody tr')).map(r => "
        "[r.cells[0].textContent.trim(), r.cells[2].getAttribute('data-sort')]);"
    )
    from trustlab.workflows.audit import HEADLINES, TITLES

    expected = {
        TITLES[name]: s["metrics"][HEADLINES[name][0][1]] if s["status"] == "ok" else None
        for name, s in doc["sections"].items()
    }
    assert len(shown) == len(expected)
    assert {t: None if v is None else float(v) for t, v in shown} == expected
    # each check's own table shows its numbers (the first rows: its measures)
    for name, s in doc["sections"].items():
        if s["status"] != "ok":
            continue
        cells = browser.execute_script(
            "return Array.from(document.querySelectorAll(arguments[0])).map(c => "
            "c.getAttribute('data-sort')).filter(v => v !== null);",
            f"#{name}-metrics td",
        )
        numbers = [
            float(v) for v in s["metrics"].values()
            if isinstance(v, int | float) and not isinstance(v, bool)
        ]  # fmt: skip
        assert sorted(float(c) for c in cells) == sorted(numbers), name
    warnings = browser.find_elements("css selector", "#warnings p.warning")
    assert len(warnings) == len(doc["warnings"])

    # the summary sorts by its time column
    header = browser.find_elements("css selector", "#summary thead th")
    header[-1].click()
    times = [float(r[-1]) for r in table_texts(browser, "#summary")[0][1:]]
    assert times == sorted(times)

    out = os.environ.get("TRUSTLAB_SCREENSHOT_DIR")
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        open_page(browser, folder / "scorecard.html")
        browser.set_window_size(1400, 1500)
        try:
            assert browser.save_screenshot(str(Path(out) / "scorecard.png"))
        finally:
            browser.set_window_size(1400, 1000)
