"""Value checks shared by the stage configs' ``__post_init__`` (errors name the key and the value)."""

from __future__ import annotations

import math
import numbers
from typing import Any

from msagg.data.errors import ConfigError


def check_int(name: str, value: Any, low: int) -> None:
    """Raises ConfigError unless ``value`` is an integer (not a bool) >= ``low``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise ConfigError(f"{name} must be an integer >= {low}, got {value!r}")


def check_number(name: str, value: Any, low: float, low_open: bool, high: float | None = None) -> None:
    """Raises ConfigError unless ``value`` is a finite real number above ``low`` (and <= ``high``)."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value > low if low_open else value >= low) and (high is None or value <= high)
    if not ok:
        bound = f"> {low}" + (f" and <= {high}" if high is not None else "")
        raise ConfigError(f"{name} must be a number {bound}, got {value!r}")
