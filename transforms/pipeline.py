"""The whole transform for one batch: transcripts and outcomes in, the four tables out."""

from __future__ import annotations

import polars as pl

from transforms.items import parse_items, rejected_items, valid_items
from transforms.metrics import speaker_metrics
from transforms.schemas import RESPONSES, SORT_KEYS, conform
from transforms.transcriptions import transcription_metrics


def item_tables(raw_items: pl.LazyFrame, raw_json: pl.LazyFrame | None = None) -> dict[str, pl.LazyFrame]:
    """Flattened items (flatten.py) -> `transcript_items` and `rejected_items`.

    `raw_json` holds the rejected items' JSON (flatten.raw_items_json: serialising only those is
    much cheaper than every item).
    """
    parsed = parse_items(raw_items)
    return {"transcript_items": valid_items(parsed), "rejected_items": rejected_items(parsed, raw_json)}


def metric_tables(responses: pl.LazyFrame, items: pl.LazyFrame, rejected: pl.LazyFrame) -> dict[str, pl.LazyFrame]:
    """Responses, valid and rejected items -> `speaker_metrics` and `transcriptions`.

    Pass collected items (and collect speaker metrics once) when running both: polars does not
    share the common sub-plans between the two tables by itself.
    """
    speakers = speaker_metrics(items)
    return {
        "transcriptions": transcription_metrics(conform(responses, RESPONSES), items, rejected, speakers),
        "speaker_metrics": speakers,
    }


def build_tables(
    responses: pl.LazyFrame, raw_items: pl.LazyFrame, raw_json: pl.LazyFrame | None = None
) -> dict[str, pl.LazyFrame]:
    """Responses and flattened items -> the four tables, one lazy plan each (sorted for writing)."""
    items = item_tables(raw_items, raw_json)
    tables = {**metric_tables(responses, items["transcript_items"], items["rejected_items"]), **items}
    return {name: frame.sort(*SORT_KEYS[name]) for name, frame in tables.items()}


def rejected_keys(raw_items: pl.LazyFrame) -> pl.LazyFrame:
    """(transcription_id, item_index) of the items that break a validity rule."""
    return parse_items(raw_items).filter(pl.col("reason").is_not_null()).select("transcription_id", "item_index")


def collect_tables(tables: dict[str, pl.LazyFrame]) -> dict[str, pl.DataFrame]:
    """Collect all tables in one pass so shared sub-plans are computed once."""
    frames = pl.collect_all(list(tables.values()))
    return dict(zip(tables, frames, strict=True))
