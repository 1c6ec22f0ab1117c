"""Test-wide settings: every test writes to a temporary store; generated datasets are cached once
per checkout (under .pytest_cache) so that parallel workers share them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from hypothesis import settings

# CI runs the property tests on a fixed set of examples (no flaky failures from a lucky draw);
# locally hypothesis keeps exploring new ones.
settings.register_profile("ci", derandomize=True, deadline=None)
if os.environ.get("CI"):
    settings.load_profile("ci")

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("TRUSTLAB_CACHE", str(REPO / ".pytest_cache" / "trustlab-cache"))
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test gets its own ``$TRUSTLAB_HOME`` so nothing lands in ./runs."""
    home = tmp_path / "home"
    monkeypatch.setenv("TRUSTLAB_HOME", str(home))
    return home
