"""trustlab: attack, defend and measure deep-learning models on every axis of trust.

The short public API below is imported lazily, so ``import trustlab.results`` (and CLI commands
such as ``trustlab runs``) do not pay for importing torch. Everything else lives in the
sub-packages: ``trustlab.data``, ``trustlab.models``, ``trustlab.train``, ``trustlab.results``.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "ArrayDataset": "trustlab.data",
    "load_dataset": "trustlab.data",
    "InputError": "trustlab.errors",
    "Normalized": "trustlab.models",
    "create_model": "trustlab.models",
    "feature_taps": "trustlab.models",
    "RunStore": "trustlab.results",
    "Trainer": "trustlab.train",
    "TrainSettings": "trustlab.train",
    "audit": "trustlab.workflows.audit",
    "evaluate": "trustlab.train",
    "fit": "trustlab.train",
    "load_model": "trustlab.train",
    "save_model": "trustlab.train",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'trustlab' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*_EXPORTS, "__version__"])
