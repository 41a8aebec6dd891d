"""Untrusted JSON in and strict JSON out: the one place talktime parses bytes it did not write.

Legal JSON can still break a naive reader, and a naive reader's exception can carry patient
text into a log. So every body, record and event is read by `loads`:

- A **lone surrogate escape** (`"\\ud83d"`: half an emoji, cut by a producer) is repaired to
  U+FFFD before parsing (`repair_unicode` says how many were repaired), so no string ever holds
  a surrogate that polars or an encoder would refuse (and quote in its error).
- **Nesting too deep** for the parser and **integers longer than Python converts** (4300 digits)
  raise `JsonError` with a reason and a message that never quotes the input. An integer too long
  to convert is read as `HugeInt`, which items report as out of range, so the envelope survives.
- **NaN and Infinity**, which Python's parser accepts, are written as `null` by `strict_json`
  (`transforms.jsonvalues`), so every stored JSON text is strict JSON.
"""

from __future__ import annotations

import json
import re
from typing import Any

from transforms.jsonvalues import HugeInt, strict_json

__all__ = ["JsonError", "has_lone_surrogate", "loads", "repair_unicode", "strict_json"]

# A JSON string escape: an escaped backslash (skipped, so `\\ud83d` stays text), a surrogate pair
# (kept), or a lone surrogate (repaired). Scanning left to right keeps the escapes aligned.
_ESCAPES = re.compile(
    rb"\\\\|\\u[dD][89abAB][0-9a-fA-F]{2}\\u[dD][c-fC-F][0-9a-fA-F]{2}|(\\u[dD][89a-fA-F][0-9a-fA-F]{2})"
)
_REPLACEMENT = rb"\ufffd"
_LONGEST_INT64 = 20  # characters of "-9223372036854775808"


class JsonError(ValueError):
    """Bytes that cannot be read as JSON; `reason` is machine-readable, the message quotes nothing."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def has_lone_surrogate(data: bytes) -> bool:
    """Whether the JSON text holds a lone surrogate escape (cheap when it holds no `\\ud` at all)."""
    if b"\\ud" not in data and b"\\uD" not in data:
        return False
    return any(match.group(1) for match in _ESCAPES.finditer(data))


def repair_unicode(data: bytes) -> tuple[bytes, int]:
    """The JSON text with every lone surrogate escape replaced by U+FFFD, and how many there were."""
    if not has_lone_surrogate(data):
        return data, 0
    repaired = 0

    def replace(match: re.Match[bytes]) -> bytes:
        nonlocal repaired
        if match.group(1) is None:
            return match.group(0)
        repaired += 1
        return _REPLACEMENT

    return _ESCAPES.sub(replace, data), repaired


def _parse_int(digits: str) -> int | HugeInt:
    return HugeInt(digits) if len(digits) > _LONGEST_INT64 else int(digits)


def loads(data: bytes | str) -> Any:
    """Parse untrusted JSON (lone surrogates repaired); JsonError, quoting nothing, when it cannot."""
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    try:  # strictly: json.loads would let UTF-8-encoded surrogates through
        text = repair_unicode(raw)[0].decode("utf-8")
    except UnicodeDecodeError:
        raise JsonError("not_json", "not UTF-8 text") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise JsonError("not_json", f"not JSON (at character {exc.pos})") from None
    except RecursionError:
        raise JsonError("too_deep", "JSON nested too deep to read") from None
    except ValueError:  # an integer of more digits than Python converts
        pass
    try:
        return json.loads(text, parse_int=_parse_int)
    except RecursionError:
        raise JsonError("too_deep", "JSON nested too deep to read") from None
    except ValueError:
        raise JsonError("not_json", "JSON that cannot be read") from None
