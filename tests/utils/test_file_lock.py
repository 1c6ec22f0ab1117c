"""utils.io.file_lock: an exclusive lock that workers sharing a folder take in turns."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from trustlab.utils.io import file_lock


def test_file_lock_serialises_holders(tmp_path: Path) -> None:
    lock = tmp_path / "sub" / "model.lock"  # the folder is made
    events: list[str] = []
    held = threading.Event()

    def first() -> None:
        with file_lock(lock):
            events.append("first in")
            held.set()
            time.sleep(0.3)
            events.append("first out")

    t = threading.Thread(target=first)
    t.start()
    held.wait()
    with file_lock(lock):  # waits until the first holder leaves
        events.append("second in")
    t.join()
    assert events == ["first in", "first out", "second in"]
    with file_lock(lock):  # released: taken again at once
        pass
