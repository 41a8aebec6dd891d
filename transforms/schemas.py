"""Column names and exact schemas of every output table (the contract with analysts).

`shared/metrics.md` defines the columns; writers cast to these schemas and tests assert them.
Columns may be added, never renamed or dropped.
"""

from __future__ import annotations

import polars as pl

SCHEMA_VERSION = 1

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


def conform(frame: pl.LazyFrame, schema: pl.Schema) -> pl.LazyFrame:
    """Select exactly the schema's columns, in order, strictly cast to its types."""
    return frame.select(pl.col(name).cast(dtype, strict=True) for name, dtype in schema.items())
