"""How numbers are written in tables: one place (trustlab.utils.format)."""

from __future__ import annotations

import math

from trustlab.utils.format import NOT_APPLICABLE, format_interval, format_value


def test_floats_have_four_decimals_and_tiny_or_large_ones_four_significant_digits() -> None:
    assert format_value(0.5) == "0.5000" and format_value(0.0) == "0.0000"
    assert format_value(1e-5) == "1e-05"  # a DP delta, not 0.0000
    assert format_value(12345.6) == "1.235e+04"
    assert format_value(3) == "3" and format_value("x") == "x"
    assert format_value(math.nan) == format_value(None) == NOT_APPLICABLE


def test_intervals() -> None:
    assert format_interval(0.5, 0.4, 0.6, scale=100) == "50.00 [40.00, 60.00]"
    assert format_interval(0.5, 0.5, 0.5) == "0.50"
    assert format_interval(math.nan, 0, 1) == NOT_APPLICABLE
