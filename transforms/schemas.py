"""Column names and exact schemas of every output table (the contract with analysts).

`shared/metrics.md` defines the columns; writers cast to these schemas and tests assert them.
Columns may be added (at the end of a table, with a new SCHEMA_VERSION, and listed in
ADDED_COLUMNS), never renamed, reordered or dropped.
"""

from __future__ import annotations

from collections.abc import Sequence

import polars as pl

SCHEMA_VERSION = 2

SPEAKERS = ("doctor", "patient", "unspecified")
# Audio is at most 60 minutes long (shared/api-contract.md): no item starts or ends later.
MAX_TIME_MS = 3_600_000
STATUSES = ("succeeded", "failed", "ongoing", "not_found", "error", "expired")

UTC_TIMESTAMP = pl.Datetime("us", "UTC")

TRANSCRIPT_ITEMS = pl.Schema(
    {
        "transcription_id": pl.String(),
        "client_request_id": pl.String(),
        "item_index": pl.Int32(),
        "speaker": pl.String(),
        "text": pl.String(),
        "start_time_ms": pl.Int64(),
        "end_time_ms": pl.Int64(),
        "duration_ms": pl.Int64(),
        "word_count": pl.Int32(),
    }
)

REJECTED_ITEMS = pl.Schema(
    {
        "transcription_id": pl.String(),
        "item_index": pl.Int32(),
        "reason": pl.String(),
        "raw_item": pl.String(),
    }
)

SPEAKER_METRICS = pl.Schema(
    {
        "transcription_id": pl.String(),
        "speaker": pl.String(),
        "item_count": pl.Int32(),
        "talk_time_ms": pl.Int64(),
        "talk_share": pl.Float64(),
        "word_count": pl.Int64(),
        "words_per_minute": pl.Float64(),
        "turn_count": pl.Int32(),
        "mean_turn_ms": pl.Float64(),
        "longest_turn_ms": pl.Int64(),
        "overlap_ms": pl.Int64(),
        "interruption_count": pl.Int32(),
        # schema version 2
        "question_count": pl.Int32(),
        "first_turn_ms": pl.Int64(),
        "mean_response_gap_ms": pl.Float64(),
    }
)

# The per-transcription outcome, as fetched or ingested (input of the metrics).
RESPONSES = pl.Schema(
    {
        "transcription_id": pl.String(),
        "client_request_id": pl.String(),
        "status": pl.String(),
        "error_code": pl.String(),
        "error_message": pl.String(),
        "error_payload": pl.String(),
        "api_version": pl.String(),
        "fetched_at": UTC_TIMESTAMP,
    }
)

TRANSCRIPTION_METRICS = pl.Schema(
    {
        "item_count": pl.Int32(),
        "rejected_item_count": pl.Int32(),
        "speaker_count": pl.Int32(),
        "first_start_ms": pl.Int64(),
        "last_end_ms": pl.Int64(),
        "span_ms": pl.Int64(),
        "total_talk_ms": pl.Int64(),
        "silence_ms": pl.Int64(),
        "overlap_ms": pl.Int64(),
        "speaker_switches": pl.Int32(),
        "switches_per_minute": pl.Float64(),
        "doctor_patient_ratio": pl.Float64(),
    }
)

TRANSCRIPTIONS = pl.Schema({**RESPONSES, **TRANSCRIPTION_METRICS})

TABLES: dict[str, pl.Schema] = {
    "transcriptions": TRANSCRIPTIONS,
    "speaker_metrics": SPEAKER_METRICS,
    "transcript_items": TRANSCRIPT_ITEMS,
    "rejected_items": REJECTED_ITEMS,
}

# How each table's rows are ordered on disk: by transcription, then time.
SORT_KEYS: dict[str, tuple[str, ...]] = {
    "transcriptions": ("transcription_id",),
    "speaker_metrics": ("transcription_id", "speaker"),
    "transcript_items": ("transcription_id", "start_time_ms", "end_time_ms", "item_index"),
    "rejected_items": ("transcription_id", "item_index"),
}


# Columns added after schema version 1, per table: column -> the version that added it. Files
# written before that version lack them; `conform_table` reads them as nulls (not recomputed).
ADDED_COLUMNS: dict[str, dict[str, int]] = {
    "speaker_metrics": {"question_count": 2, "first_turn_ms": 2, "mean_response_gap_ms": 2},
}


def conform(frame: pl.LazyFrame, schema: pl.Schema) -> pl.LazyFrame:
    """Select exactly the schema's columns, in order, strictly cast to its types."""
    return frame.select(pl.col(name).cast(dtype, strict=True) for name, dtype in schema.items())


def conform_table(frame: pl.DataFrame, table: str, columns: Sequence[str] | None = None) -> pl.DataFrame:
    """Rows read from one data file of `table`, of any schema version, in the current schema.

    Columns added since the file was written (ADDED_COLUMNS) are added as typed nulls: they are
    not recomputed (that needs the items). Columns are put in the schema's order (or that of
    `columns`, a subset of it) and cast to its types; columns the schema does not know are
    dropped. A file lacking any other column raises ColumnNotFoundError (a PolarsError): it is not
    a file of this table.
    """
    schema = TABLES[table]
    added = ADDED_COLUMNS.get(table, {})
    present = set(frame.columns)
    return frame.select(
        pl.col(name).cast(schema[name])
        if name in present or name not in added
        else pl.lit(None, schema[name]).alias(name)
        for name in (schema.names() if columns is None else columns)
    )
