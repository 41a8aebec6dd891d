"""Raw items -> valid items (the `transcript_items` table) and rejected items with a reason.

Both API dialects map onto the same columns (`shared/metrics.md`, "Items"):
`speaker`/`speaker_type` -> speaker (lower-cased, absent or null -> unspecified),
`start_time_ms`/`start_offset_ms` -> start_time_ms, `end_time_ms`/`end_offset_ms` -> end_time_ms.
"""

from __future__ import annotations

import polars as pl

from transforms.schemas import MAX_TIME_MS, REJECTED_ITEMS, SPEAKERS, TRANSCRIPT_ITEMS, conform

_ABSENT = ("missing", "null")

# Python's str.split() splits on Unicode whitespace plus the separators \x1c-\x1f,
# which the regex class \s does not include.
WORD_PATTERN = r"[^\s\x1c-\x1f]+"


def _pick(primary: str, fallback: str) -> tuple[pl.Expr, pl.Expr]:
    """(kind, value) of the first of two fields that is present and not null."""
    use_primary = ~pl.col(f"{primary}__kind").is_in(_ABSENT)
    kind = pl.when(use_primary).then(pl.col(f"{primary}__kind")).otherwise(pl.col(f"{fallback}__kind"))
    value = pl.when(use_primary).then(pl.col(primary)).otherwise(pl.col(fallback))
    return kind, value


def _time_reason(kind: pl.Expr, label: str) -> pl.Expr:
    return (
        pl.when(kind.is_in(_ABSENT))
        .then(pl.lit(f"missing_{label}"))
        .when(kind == "int_overflow")
        .then(pl.lit(f"{label}_out_of_range"))
        .when(kind != "int")
        .then(pl.lit(f"{label}_not_integer"))
    )


def rejection_reason() -> pl.Expr:
    """Why an item is rejected (the first rule it breaks), or null when it is valid."""
    start_kind, start = _pick("start_time_ms", "start_offset_ms")
    end_kind, end = _pick("end_time_ms", "end_offset_ms")
    speaker_kind, speaker = _pick("speaker", "speaker_type")
    return pl.coalesce(
        pl.when(pl.col("item_kind") != "object").then(pl.lit("not_an_object")),
        _time_reason(start_kind, "start_time"),
        _time_reason(end_kind, "end_time"),
        pl.when(start < 0).then(pl.lit("negative_start_time")),
        pl.when(start > MAX_TIME_MS).then(pl.lit("start_time_out_of_range")),
        pl.when(end > MAX_TIME_MS).then(pl.lit("end_time_out_of_range")),
        pl.when(end < start).then(pl.lit("end_before_start")),
        pl.when(~speaker_kind.is_in(("string", *_ABSENT))).then(pl.lit("speaker_not_string")),
        pl.when(~speaker.str.to_lowercase().is_in(SPEAKERS)).then(pl.lit("unknown_speaker")),
        pl.when(~pl.col("text__kind").is_in(("string", *_ABSENT))).then(pl.lit("text_not_string")),
    ).alias("reason")


def parse_items(raw: pl.LazyFrame) -> pl.LazyFrame:
    """Raw items (see flatten.py) -> dialect-neutral columns plus `reason` (null when valid)."""
    _, start = _pick("start_time_ms", "start_offset_ms")
    _, end = _pick("end_time_ms", "end_offset_ms")
    _, speaker = _pick("speaker", "speaker_type")
    return raw.with_columns(
        speaker.str.to_lowercase().fill_null("unspecified").alias("speaker"),
        start.alias("start_time_ms"),
        end.alias("end_time_ms"),
        rejection_reason(),
    )


def valid_items(parsed: pl.LazyFrame) -> pl.LazyFrame:
    """Valid parsed items as the `transcript_items` table, with duration_ms and word_count."""
    items = parsed.filter(pl.col("reason").is_null()).with_columns(
        (pl.col("end_time_ms") - pl.col("start_time_ms")).alias("duration_ms"),
        pl.col("text").str.count_matches(WORD_PATTERN).fill_null(0).alias("word_count"),
    )
    return conform(items, TRANSCRIPT_ITEMS)


def rejected_items(parsed: pl.LazyFrame, raw_json: pl.LazyFrame | None = None) -> pl.LazyFrame:
    """Rejected parsed items as the `rejected_items` table, with the item as JSON from `raw_json`

    (transcription_id, item_index, raw_item; see flatten.raw_items_json), null where absent.
    """
    rejected = parsed.filter(pl.col("reason").is_not_null())
    if raw_json is None:
        rejected = rejected.with_columns(pl.lit(None, pl.String).alias("raw_item"))
    else:
        rejected = rejected.join(raw_json, on=["transcription_id", "item_index"], how="left")
    return conform(rejected, REJECTED_ITEMS)
