"""The `transcriptions` table: one row per requested id, whatever its outcome.

Metrics are measured only for `succeeded` transcriptions; for every other status they are
null (there is no transcript to measure). A succeeded transcription without valid items has
zero counts and null times, as `shared/metrics.md` defines.
"""

from __future__ import annotations

import polars as pl

from tests.transforms.previous.metrics import TID, transcription_time, turns
from transforms.schemas import TRANSCRIPTIONS, conform

_ZERO_WHEN_NO_ITEMS = (
    "item_count",
    "rejected_item_count",
    "speaker_count",
    "total_talk_ms",
    "overlap_ms",
    "speaker_switches",
)


def switches_per_minute() -> pl.Expr:
    """speaker_switches per minute of span; null when span_ms is 0 or null."""
    span = pl.col("span_ms")
    return pl.when(span > 0).then(pl.col("speaker_switches") * 60_000 / span).alias("switches_per_minute")


def doctor_patient_ratio(speaker_metrics: pl.LazyFrame) -> pl.LazyFrame:
    """Per transcription: doctor talk time over patient talk time; null unless both talk."""
    talk = pl.col("talk_time_ms")
    doctor = talk.filter(pl.col("speaker") == "doctor").first()
    patient = talk.filter(pl.col("speaker") == "patient").first()
    return speaker_metrics.group_by(TID).agg(pl.when(patient > 0).then(doctor / patient).alias("doctor_patient_ratio"))


def item_summary(items: pl.LazyFrame) -> pl.LazyFrame:
    """Per transcription: item_count, speaker_count, first_start_ms, last_end_ms, span_ms."""
    return items.group_by(TID).agg(
        pl.len().alias("item_count"),
        pl.col("speaker").n_unique().alias("speaker_count"),
        pl.col("start_time_ms").min().alias("first_start_ms"),
        pl.col("end_time_ms").max().alias("last_end_ms"),
        (pl.col("end_time_ms").max() - pl.col("start_time_ms").min()).alias("span_ms"),
    )


def transcription_metrics(
    responses: pl.LazyFrame,
    items: pl.LazyFrame,
    rejected: pl.LazyFrame,
    speaker_metrics: pl.LazyFrame,
) -> pl.LazyFrame:
    """Responses + valid items + rejected items + speaker metrics -> the `transcriptions` table."""
    switches = turns(items).group_by(TID).agg((pl.len() - 1).alias("speaker_switches"))
    rejected_counts = rejected.group_by(TID).agg(pl.len().alias("rejected_item_count"))
    succeeded = pl.col("status") == "succeeded"
    table = (
        responses.join(item_summary(items), on=TID, how="left")
        .join(rejected_counts, on=TID, how="left")
        .join(transcription_time(items), on=TID, how="left")
        .join(switches, on=TID, how="left")
        .join(doctor_patient_ratio(speaker_metrics), on=TID, how="left")
        .with_columns(pl.when(succeeded).then(pl.col(c).fill_null(0)) for c in _ZERO_WHEN_NO_ITEMS)
        .with_columns((pl.col("span_ms") - pl.col("total_talk_ms")).alias("silence_ms"), switches_per_minute())
    )
    return conform(table, TRANSCRIPTIONS).sort(TID)
