"""Saved responses and webhook events -> a `Decoded` batch: polars' JSON reader, or Python's.

The fast path hands a batch's NDJSON lines to polars' reader with an explicit schema in which
every string is read as Categorical (which, unlike String, refuses a number, a boolean, an object
or an array instead of turning it into text) and every time as Int64 (which refuses strings,
floats, booleans and integers beyond int64). A batch the reader refuses, or whose envelopes are
not all of the simple kind (a known status, a UUID id, a transcript array; no `failed` payload
to keep as JSON), goes through the Python path instead: `flows.jsontext.loads` per record and
the type-recording flattener. Both give the same tables (a property test holds them to it).
Lone surrogate escapes are repaired to U+FFFD before either path reads a byte
(`flows.jsontext.repair_unicode`), so both see the same text.

When one id appears several times, a terminal result beats `ongoing` and among equals the
record read last wins (within a batch here; across batches, at commit).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import polars as pl

from flows.inputs import EVENT_PREFIX, RawRecord, unwrap_event
from flows.jsontext import JsonError, loads, repair_unicode
from flows.outcomes import UUID_PATTERN, EnvelopeError, Outcome, outcome_from_response, responses_frame
from flows.transform import RAW_JSON_SCHEMA, Decoded, decode_outcomes
from flows.untrusted import printable
from transforms.flatten import RAW_INT_FIELDS, RAW_ITEMS_SCHEMA, RAW_STRING_FIELDS, Transcript, raw_items_json
from transforms.pipeline import rejected_keys
from transforms.schemas import RESPONSES, conform

DIALECT_A, DIALECT_B = "2024-04-22", "2024-10-01"
_RANK = {"ongoing": 0, "failed": 1, "succeeded": 1}

_ENVELOPE_FIELDS = ("id", "status", "client_request_id")


def reader_schema() -> dict[str, pl.DataType]:
    """The fast path's schema, its strings Categorical with categories of their own.

    Not the global categories (`pl.Categorical()`): those keep every string they ever saw for the
    life of the process, so a run kept every transcript text it read in memory (RSS grew by about
    25 MiB per batch of full-size responses, 1.5 GiB over 20,000). Categories of the batch's own
    go with its frames.
    """
    categorical = pl.Categorical(pl.Categories.random())
    item = pl.Struct({**dict.fromkeys(RAW_STRING_FIELDS, categorical), **{name: pl.Int64() for name in RAW_INT_FIELDS}})
    envelope: dict[str, pl.DataType] = dict.fromkeys(_ENVELOPE_FIELDS, categorical)
    envelope["payload"] = pl.Struct({"transcript": pl.List(item)})
    return {**envelope, "type": categorical, "data": pl.Struct(envelope)}


def api_version_of(body: dict[str, Any]) -> str:
    """The dialect a saved response was written in: dialect B spells statuses in upper case."""
    status = body.get("status")
    return DIALECT_B if isinstance(status, str) and status.isupper() else DIALECT_A


def _outcome_of(record: RawRecord, fetched_at: datetime) -> Outcome | str:
    """The record's outcome, or why it cannot be read (never its content; its file name printable)."""
    try:
        body = unwrap_event(loads(record.data))
    except JsonError as exc:
        return f"{printable(record.source)}: {exc}"
    try:
        version = api_version_of(body) if isinstance(body, dict) else None
        return outcome_from_response(body, fetched_at=fetched_at, api_version=version)
    except EnvelopeError as exc:
        return f"{printable(record.source)}: {exc}"


def best_per_id(outcomes: list[Outcome]) -> list[Outcome]:
    """One outcome per id: terminal beats ongoing, then the last read wins (first-seen order kept)."""
    best: dict[str, Outcome] = {}
    for outcome in outcomes:
        previous = best.get(outcome.transcription_id)
        if previous is None or _RANK[outcome.status] >= _RANK[previous.status]:
            best[outcome.transcription_id] = outcome
    return list(best.values())


def decode_slowly(records: Sequence[RawRecord], fetched_at: datetime) -> tuple[Decoded, list[str]]:
    """The Python path: every record decoded by `json`; unreadable ones named in the second value."""
    results = [_outcome_of(record, fetched_at) for record in records]
    outcomes = [r for r in results if isinstance(r, Outcome)]
    skipped = [r for r in results if isinstance(r, str)]
    return decode_outcomes(best_per_id(outcomes)), skipped


def decode_polled(outcomes: list[Outcome], fetched_at: datetime) -> Decoded:
    """A batch of polled outcomes -> Decoded: their bodies through the fast path when it takes them."""
    succeeded = [o for o in outcomes if o.status == "succeeded"]
    if not succeeded or any(o.body is None for o in succeeded):
        return decode_outcomes(outcomes)
    fast = decode_fast([RawRecord(o.transcription_id, o.body) for o in succeeded if o.body is not None], fetched_at)
    if fast is None:
        return decode_outcomes(outcomes)
    return Decoded(conform(responses_frame(outcomes), RESPONSES).collect(), fast.raw_items, fast.raw_json)


def decode_records(records: Sequence[RawRecord], fetched_at: datetime) -> tuple[Decoded, list[str]]:
    """A batch of records -> Decoded, by the fast path when it can take the batch."""
    fast = decode_fast(records, fetched_at)
    return (fast, []) if fast is not None else decode_slowly(records, fetched_at)


def decode_fast(records: Sequence[RawRecord], fetched_at: datetime) -> Decoded | None:
    """The fast path (see the module docstring), or None when the batch needs the Python path."""
    if not records or any(b"\n" in r.data for r in records):  # a pretty-printed .json file
        return None
    data, _ = repair_unicode(b"\n".join(r.data for r in records))
    try:
        frame = pl.read_ndjson(io.BytesIO(data), schema=reader_schema())
    except (pl.exceptions.PolarsError, OSError):
        return None
    if frame.height != len(records):
        return None
    envelopes = _envelopes(frame)
    if envelopes is None:
        return None
    envelopes = _best_per_id(envelopes)
    raw = _raw_items(envelopes)
    try:
        rejected = _rejected_json(raw, envelopes, records)
    except JsonError:  # polars read deeper than Python can: let the Python path decide
        return None
    responses = envelopes.select(
        pl.col("id").str.to_lowercase().alias("transcription_id"),
        pl.col("client_request_id"),
        pl.col("status").str.to_lowercase(),
        *(pl.lit(None, pl.String).alias(c) for c in ("error_code", "error_message", "error_payload")),
        pl.when(pl.col("status") == pl.col("status").str.to_uppercase())
        .then(pl.lit(DIALECT_B))
        .otherwise(pl.lit(DIALECT_A))
        .alias("api_version"),
        pl.lit(fetched_at).cast(RESPONSES["fetched_at"]).alias("fetched_at"),
    )
    return Decoded(responses.cast(dict(RESPONSES)), raw, rejected)  # type: ignore[arg-type]


def _envelopes(frame: pl.DataFrame) -> pl.DataFrame | None:
    """One row per record (events unwrapped): id, status, client_request_id, items, line; None if any is odd."""
    is_event = pl.col("type").cast(pl.String).str.starts_with(EVENT_PREFIX).fill_null(False)
    envelope = frame.with_row_index("line").select(
        "line",
        *(
            pl.when(is_event).then(pl.col("data").struct.field(name)).otherwise(pl.col(name)).alias(name)
            for name in (*_ENVELOPE_FIELDS, "payload")
        ),
    )
    envelope = envelope.with_columns(
        pl.col("id", "status", "client_request_id").cast(pl.String),
        pl.col("payload").struct.field("transcript").alias("items"),
    ).drop("payload")
    status = pl.col("status").str.to_lowercase()
    simple = (
        pl.col("id").str.contains(f"^{UUID_PATTERN.pattern}$").fill_null(False)
        & status.is_in(["ongoing", "succeeded"]).fill_null(False)
        & ((status != "succeeded") | pl.col("items").is_not_null())
    )
    if not envelope.select(simple.all()).item():
        return None
    return envelope


def _best_per_id(envelopes: pl.DataFrame) -> pl.DataFrame:
    rank = (pl.col("status").str.to_lowercase() == "succeeded").cast(pl.Int8)
    keyed = envelopes.with_columns(pl.col("id").str.to_lowercase().alias("key"), rank.alias("rank"))
    best = keyed.sort("rank", "line").unique(subset="key", keep="last").sort("line")
    return best.drop("key", "rank")


def _raw_items(envelopes: pl.DataFrame) -> pl.DataFrame:
    """The items of the succeeded envelopes as RAW_ITEMS_SCHEMA (every value here is well typed)."""
    status = pl.col("status").str.to_lowercase()
    succeeded = envelopes.filter((status == "succeeded") & (pl.col("items").list.len() > 0))
    exploded = succeeded.select(
        pl.col("id").str.to_lowercase().alias("transcription_id"),
        "client_request_id",
        pl.int_ranges(pl.col("items").list.len(), dtype=pl.Int32).alias("item_index"),
        "items",
    ).explode("item_index", "items")
    item = pl.col("items")
    columns = [
        pl.when(item.is_null()).then(pl.lit("null")).otherwise(pl.lit("object")).alias("item_kind"),
    ]
    for name in RAW_STRING_FIELDS:
        value = item.struct.field(name).cast(pl.String)
        columns += [value.alias(name), pl.when(value.is_null()).then(pl.lit("null")).otherwise(pl.lit("string"))]
        columns[-1] = columns[-1].alias(f"{name}__kind")
    for name in RAW_INT_FIELDS:
        value = item.struct.field(name)
        kind = pl.when(value.is_null()).then(pl.lit("null")).otherwise(pl.lit("int")).alias(f"{name}__kind")
        columns += [value.alias(name), kind]
    return exploded.select("transcription_id", "client_request_id", "item_index", *columns).select(
        RAW_ITEMS_SCHEMA.names()
    )


def _rejected_json(raw: pl.DataFrame, envelopes: pl.DataFrame, records: Sequence[RawRecord]) -> pl.DataFrame:
    """The raw JSON of the items that will be rejected: their records decoded again, by Python."""
    keys = rejected_keys(raw.lazy()).collect()
    if keys.is_empty():
        return pl.DataFrame(schema=RAW_JSON_SCHEMA)
    lines = envelopes.filter(pl.col("id").str.to_lowercase().is_in(keys["transcription_id"].unique().implode()))
    transcripts = []
    for line, tid in lines.select("line", "id").iter_rows():
        body = unwrap_event(loads(records[line].data))
        transcripts.append(Transcript(tid.lower(), None, body["payload"]["transcript"]))
    return raw_items_json(transcripts, keys)
