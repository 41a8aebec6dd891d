"""The emulator's version handling: which dialect a request gets, and dialect B rendering."""

from __future__ import annotations

import re
from typing import Any

VERSION_A = "2024-04-22"
FIRST_VERSION_B = "2024-10-01"
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def resolve_version(prefix_is_b: bool, requested: str | None) -> str | None:
    """'A' or 'B' for a request, or None for an unknown version (answered with 400)."""
    if requested is None:
        return "B" if prefix_is_b else "A"
    if requested == VERSION_A:
        return "A"
    if _DATE.fullmatch(requested) and requested >= FIRST_VERSION_B:
        return "B"
    return None


def _item_b(item: Any) -> Any:
    if not isinstance(item, dict):
        return item
    renamed: dict[str, Any] = {}
    for key, value in item.items():
        if key == "speaker":
            renamed["speaker_type"] = value.upper() if isinstance(value, str) else value
        elif key in ("start_time_ms", "end_time_ms"):
            renamed[key.replace("time", "offset")] = value
        else:
            renamed[key] = value
    return renamed


def render_dialect_b(record: dict[str, Any]) -> dict[str, Any]:
    """A stored dialect-A response as dialect B: upper-case status and speakers, offset fields."""
    rendered = dict(record)
    if isinstance(record.get("status"), str):
        rendered["status"] = record["status"].upper()
    payload = record.get("payload")
    if isinstance(payload, dict) and isinstance(payload.get("transcript"), list):
        rendered["payload"] = payload | {"transcript": [_item_b(i) for i in payload["transcript"]]}
    return rendered
