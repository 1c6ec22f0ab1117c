"""Small argument validators shared by the library (one implementation of each check)."""

from __future__ import annotations

import operator
from typing import Any

from trustlab.errors import InputError


def check_int(
    name: str, value: Any, minimum: int | None = None, maximum: int | None = None, fix: str = ""
) -> int:
    """``value`` as an ``int`` (bools and non-integers refused) within ``[minimum, maximum]``.

    Raises :class:`InputError` naming ``name``, the bound and ``fix`` (a hint to append).
    """
    try:
        number = None if isinstance(value, bool) else operator.index(value)
    except TypeError:
        number = None
    bounds = []
    if minimum is not None:
        bounds.append(f">= {minimum}")
    if maximum is not None:
        bounds.append(f"<= {maximum}")
    rule = f"an integer {' and '.join(bounds)}".rstrip()
    if (
        number is None
        or (minimum is not None and number < minimum)
        or (maximum is not None and number > maximum)
    ):
        hint = f" {fix}" if fix else ""
        raise InputError(f"{name} must be {rule}, got {value!r}.{hint}")
    return int(number)
