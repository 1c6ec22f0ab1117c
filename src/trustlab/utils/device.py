"""Device selection shared by the library and the CLI (``--device auto|cpu|cuda``)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from trustlab.errors import InputError


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cuda`` without a GPU is an input error."""
    if isinstance(device, torch.device):
        return device
    name = (device or "auto").lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise InputError(
                f"--device {name}: no CUDA device is available here. Use --device cpu or auto."
            )
        return torch.device(name)
    if name == "cpu":
        return torch.device("cpu")
    raise InputError(f"unknown device {device!r}. Use one of: auto, cpu, cuda, cuda:N.")


@contextlib.contextmanager
def single_threaded(device: str | torch.device = "cpu") -> Iterator[None]:
    """One torch intra-op thread inside when ``device`` is a CPU (restored on exit), so that
    numbers do not depend on how many cores a machine has or how many processes share it
    (floating-point sums change with the thread count)."""
    threads = torch.get_num_threads()
    if torch.device(device).type == "cpu":
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
