"""Flatten decoded transcripts into a raw items frame that keeps every field's JSON type.

This is the one place where Python touches individual items: polars cannot decode JSON
whose values change type from item to item (an integer here, a string there), and the
validity rules in `shared/metrics.md` depend on exactly those types. So each field is
recorded as a `<field>__kind` tag plus its value when it has the expected type; every
rule is then a polars expression (see `items.py`).

Output columns: transcription_id, client_request_id, item_index, item_kind, raw_item,
and for each of RAW_STRING_FIELDS / RAW_INT_FIELDS: `<field>` and `<field>__kind`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

import polars as pl

RAW_STRING_FIELDS = ("speaker", "speaker_type", "text")
RAW_INT_FIELDS = ("start_time_ms", "start_offset_ms", "end_time_ms", "end_offset_ms")

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_KINDS: dict[type, str] = {
    bool: "bool",
    int: "int",
    float: "float",
    str: "string",
    dict: "object",
    list: "array",
    type(None): "null",
}
_MISSING = object()


class Transcript(NamedTuple):
    """A succeeded transcription's items as decoded from the API (any JSON values)."""

    transcription_id: str
    client_request_id: str | None
    items: Sequence[Any]


def kind_of(value: Any) -> str:
    """The JSON type of a decoded value: int, float, bool, string, null, object, array, missing."""
    if value is _MISSING:
        return "missing"
    kind = _KINDS.get(type(value), "other")
    if kind == "int" and not _INT64_MIN <= value <= _INT64_MAX:
        return "int_overflow"
    return kind


def _raw_schema() -> dict[str, pl.DataType]:
    schema: dict[str, pl.DataType] = {
        "transcription_id": pl.String(),
        "client_request_id": pl.String(),
        "item_index": pl.Int32(),
        "item_kind": pl.String(),
        "raw_item": pl.String(),
    }
    for name in RAW_STRING_FIELDS:
        schema[name] = pl.String()
        schema[f"{name}__kind"] = pl.String()
    for name in RAW_INT_FIELDS:
        schema[name] = pl.Int64()
        schema[f"{name}__kind"] = pl.String()
    return schema


RAW_ITEMS_SCHEMA = pl.Schema(_raw_schema())


def flatten_transcripts(transcripts: Iterable[Transcript]) -> pl.LazyFrame:
    """One row per transcript item, in API order, with each field's value and JSON kind."""
    columns: dict[str, list[Any]] = {name: [] for name in RAW_ITEMS_SCHEMA}
    for transcript in transcripts:
        for index, item in enumerate(transcript.items):
            _append_item(columns, transcript, index, item)
    return pl.LazyFrame(columns, schema=RAW_ITEMS_SCHEMA)


def _append_item(columns: dict[str, list[Any]], transcript: Transcript, index: int, item: Any) -> None:
    fields = item if isinstance(item, dict) else {}
    columns["transcription_id"].append(transcript.transcription_id)
    columns["client_request_id"].append(transcript.client_request_id)
    columns["item_index"].append(index)
    columns["item_kind"].append(kind_of(item))
    columns["raw_item"].append(json.dumps(item, ensure_ascii=False, separators=(",", ":")))
    for name, expected in [*((n, "string") for n in RAW_STRING_FIELDS), *((n, "int") for n in RAW_INT_FIELDS)]:
        value = fields.get(name, _MISSING)
        kind = kind_of(value)
        columns[name].append(value if kind == expected else None)
        columns[f"{name}__kind"].append(kind)
