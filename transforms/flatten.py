"""Flatten decoded transcripts into a raw items frame that keeps every field's JSON type.

This is the one place where Python touches individual items: polars cannot decode JSON
whose values change type from item to item (an integer here, a string there), and the
validity rules in `shared/metrics.md` depend on exactly those types. So each field is
recorded as a `<field>__kind` tag plus its value when it has the expected type; every
rule is then a polars expression (see `items.py`).

Output columns: transcription_id, client_request_id, item_index, item_kind, and for each of
RAW_STRING_FIELDS / RAW_INT_FIELDS: `<field>` and `<field>__kind`. The raw JSON of an item is
serialised only for the items that end up rejected (`raw_items_json`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

import polars as pl

from transforms.jsonvalues import HugeInt, strict_json

# A webhook landing that hashed an item's text keeps its hash here (transforms.text).
LANDED_HASH_FIELD = "talktime_text_hmac"
RAW_STRING_FIELDS = ("speaker", "speaker_type", "text", LANDED_HASH_FIELD)
RAW_INT_FIELDS = ("start_time_ms", "start_offset_ms", "end_time_ms", "end_offset_ms")

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


class _Missing:
    """The value of a field an item does not have."""


_MISSING = _Missing()
_NOT_AN_OBJECT: dict[str, Any] = {}
_KINDS: dict[type, str] = {
    bool: "bool",
    int: "int",
    float: "float",
    str: "string",
    dict: "object",
    list: "array",
    type(None): "null",
    _Missing: "missing",
    HugeInt: "int_overflow",
}


class Transcript(NamedTuple):
    """A succeeded transcription's items as decoded from the API (any JSON values)."""

    transcription_id: str
    client_request_id: str | None
    items: Sequence[Any]


def kind_of(value: Any) -> str:
    """The JSON type of a decoded value: int, float, bool, string, null, object, array, missing."""
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
    }
    for name in RAW_STRING_FIELDS:
        schema[name] = pl.String()
        schema[f"{name}__kind"] = pl.String()
    for name in RAW_INT_FIELDS:
        schema[name] = pl.Int64()
        schema[f"{name}__kind"] = pl.String()
    return schema


RAW_ITEMS_SCHEMA = pl.Schema(_raw_schema())


def _field_columns(objects: list[dict[str, Any]], name: str, expected: str) -> tuple[list[Any], list[str]]:
    """A field's values (where they have the expected kind, else None) and kinds, for every item."""
    if not any(name in o for o in objects):  # the other dialect's field: absent everywhere
        return [None] * len(objects), ["missing"] * len(objects)
    values = [o.get(name, _MISSING) for o in objects]
    kinds = [_KINDS.get(type(v), "other") for v in values]
    if expected == "int":
        kinds = [kind_of(v) if k == "int" else k for v, k in zip(values, kinds, strict=True)]
    return [v if k == expected else None for v, k in zip(values, kinds, strict=True)], kinds


def flatten_transcripts(transcripts: Iterable[Transcript]) -> pl.LazyFrame:
    """One row per transcript item, in API order, with each field's value and JSON kind.

    Built column by column (list comprehensions), the fastest way through Python objects.
    """
    transcripts = list(transcripts)
    items = [item for t in transcripts for item in t.items]
    columns: dict[str, list[Any]] = {
        "transcription_id": [t.transcription_id for t in transcripts for _ in t.items],
        "client_request_id": [t.client_request_id for t in transcripts for _ in t.items],
        "item_index": [i for t in transcripts for i in range(len(t.items))],
        "item_kind": [_KINDS.get(type(item), "other") for item in items],
    }
    objects = [item if type(item) is dict else _NOT_AN_OBJECT for item in items]
    for name in RAW_STRING_FIELDS:
        columns[name], columns[f"{name}__kind"] = _field_columns(objects, name, "string")
    for name in RAW_INT_FIELDS:
        columns[name], columns[f"{name}__kind"] = _field_columns(objects, name, "int")
    return pl.LazyFrame(columns, schema=RAW_ITEMS_SCHEMA)


def raw_items_json(transcripts: Iterable[Transcript], keys: pl.DataFrame) -> pl.DataFrame:
    """The items at `keys` (transcription_id, item_index) as JSON text, column `raw_item`.

    Only rejected items need their raw JSON, so it is serialised for those alone.
    """
    wanted: dict[str, list[int]] = {}
    for tid, index in keys.select("transcription_id", "item_index").iter_rows():
        wanted.setdefault(tid, []).append(index)
    rows = [
        (t.transcription_id, index, strict_json(t.items[index], separators=(",", ":")))
        for t in transcripts
        for index in wanted.get(t.transcription_id, ())
    ]
    schema = {"transcription_id": pl.String(), "item_index": pl.Int32(), "raw_item": pl.String()}
    return pl.DataFrame(rows, schema=schema, orient="row")
