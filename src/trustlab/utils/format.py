"""How numbers are written in every table trustlab prints or stores (terminal, log file,
``report.md``, the bench matrix): one place, so that they read the same everywhere."""

from __future__ import annotations

import math
from typing import Any

__all__ = ["NOT_APPLICABLE", "format_interval", "format_value"]

#: a cell whose value does not apply to its row (no value, or NaN)
NOT_APPLICABLE = "—"


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def format_value(v: Any) -> str:
    """One value: floats to 4 decimals (4 significant digits when large, or when tiny and not
    zero, e.g. a DP delta of ``1e-05``), ``—`` for NaN."""
    if _missing(v):
        return NOT_APPLICABLE
    if isinstance(v, float):
        return f"{v:.4f}" if (1e-3 <= abs(v) < 1e4 or v == 0) else f"{v:.4g}"
    return str(v)


def format_interval(mean: float, lo: float, hi: float, scale: float = 1.0, digits: int = 2) -> str:
    """``"mean [lo, hi]"`` scaled and rounded (just ``"mean"`` when the interval is a point: one
    seed); ``—`` when the value does not apply (NaN)."""
    if _missing(mean):
        return NOT_APPLICABLE
    m = f"{mean * scale:.{digits}f}"
    if _missing(lo) or _missing(hi) or lo == hi:
        return m
    return f"{m} [{lo * scale:.{digits}f}, {hi * scale:.{digits}f}]"
