"""Small argument validators shared by the library (one implementation of each check)."""

from __future__ import annotations

import difflib
import math
import operator
from typing import Any

from pydantic import BaseModel, ValidationError

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


def check_float(
    name: str,
    value: Any,
    minimum: float | None = None,
    maximum: float | None = None,
    fix: str = "",
) -> float:
    """``value`` as a finite ``float`` (bools, non-numbers, NaN and inf refused) within
    ``[minimum, maximum]``.

    Raises :class:`InputError` naming ``name``, the bounds and ``fix`` (a hint to append).
    """
    try:
        number = None if isinstance(value, (bool, str)) else float(value)
    except (TypeError, ValueError, OverflowError):
        number = None
    bounds = []
    if minimum is not None:
        bounds.append(f">= {minimum:g}")
    if maximum is not None:
        bounds.append(f"<= {maximum:g}")
    rule = f"a finite number {' and '.join(bounds)}".rstrip()
    if (
        number is None
        or not math.isfinite(number)
        or (minimum is not None and number < minimum)
        or (maximum is not None and number > maximum)
    ):
        hint = f" {fix}" if fix else ""
        raise InputError(f"{name} must be {rule}, got {value!r}.{hint}")
    return number


def format_validation_error(exc: ValidationError, model: type[BaseModel]) -> str:
    """One readable line per problem, naming the key and what is allowed."""
    allowed = list(model.model_fields)
    lines = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "(config)"
        if err["type"] == "extra_forbidden":
            close = difflib.get_close_matches(key, allowed, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            lines.append(
                f"config key {key!r}: unknown key{hint}. Allowed keys: {', '.join(allowed)}."
            )
        elif not err["loc"]:  # a check across keys; its message names them
            lines.append("config: " + err["msg"].removeprefix("Value error, "))
        else:
            msg = err["msg"].removeprefix("Value error, ")
            got = err.get("input")
            shown = f" (got {got!r})" if got is not None and not isinstance(got, dict) else ""
            lines.append(f"config key {key!r}: {msg}{shown}")
    return "\n".join(lines)


def parse_config(model: type[BaseModel], data: dict[str, Any]) -> Any:
    """Validate ``data`` against ``model``; raise :class:`InputError` with readable lines."""
    try:
        return model(**data)
    except InputError:
        raise
    except ValidationError as exc:
        # an InputError raised inside a validator (unknown dataset/model) keeps its own message
        for err in exc.errors():
            inner = (err.get("ctx") or {}).get("error")
            if isinstance(inner, InputError):
                raise InputError(f"config key {err['loc'][0]!r}: {inner}") from None
        raise InputError(format_validation_error(exc, model)) from None
