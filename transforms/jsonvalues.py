"""Decoded JSON values that need care: integers too long to hold, and writing strict JSON back.

`HugeInt` stands for an integer literal too long for Python to convert (it is out of range
wherever it appears). `strict_json` writes a value as strict JSON: NaN and Infinity, which
Python's parser accepts, become null; a HugeInt is written back as its digits.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any


class HugeInt:
    """A JSON integer too long to convert, its digits kept as text."""

    __slots__ = ("digits",)

    def __init__(self, digits: str) -> None:
        self.digits = digits

    def __repr__(self) -> str:
        return f"HugeInt({len(self.digits)} digits)"


_HUGE_MARK = "\x00talktime-int:"
_HUGE_WRITTEN = re.compile(r'"\\u0000talktime-int:(-?[0-9]+)\\u0000"')


def _huge_as_mark(value: Any) -> str:
    if isinstance(value, HugeInt):
        return f"{_HUGE_MARK}{value.digits}\x00"
    raise TypeError(f"not JSON: {type(value).__name__}")


def _finite(value: Any) -> Any:
    """The value with every NaN or infinite float replaced by None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_finite(item) for item in value]
    return value


def strict_json(value: Any, **options: Any) -> str | None:
    """The value as strict JSON text (non-ASCII kept), or None when it is nested too deep to write."""
    options = {"ensure_ascii": False, **options, "allow_nan": False, "default": _huge_as_mark}
    try:
        try:
            text = json.dumps(value, **options)
        except ValueError:
            text = json.dumps(_finite(value), **options)
    except RecursionError:
        return None
    return _HUGE_WRITTEN.sub(r"\1", text) if _HUGE_MARK[1:] in text else text
