"""The item stage of a batch's transform, and collecting plans (flows/batches.py composes the stages)."""

from __future__ import annotations

import polars as pl

from transforms.items import parse_items, rejected_items, valid_items


def item_tables(raw_items: pl.LazyFrame, raw_json: pl.LazyFrame | None = None) -> dict[str, pl.LazyFrame]:
    """Flattened items (flatten.py) -> `transcript_items` and `rejected_items`.

    `raw_json` holds the rejected items' JSON (flatten.raw_items_json: serialising only those is
    much cheaper than every item).
    """
    parsed = parse_items(raw_items)
    return {"transcript_items": valid_items(parsed), "rejected_items": rejected_items(parsed, raw_json)}


def rejected_keys(raw_items: pl.LazyFrame) -> pl.LazyFrame:
    """(transcription_id, item_index) of the items that break a validity rule."""
    return parse_items(raw_items).filter(pl.col("reason").is_not_null()).select("transcription_id", "item_index")


def collect_tables(tables: dict[str, pl.LazyFrame]) -> dict[str, pl.DataFrame]:
    """Collect all tables in one pass so shared sub-plans are computed once."""
    frames = pl.collect_all(list(tables.values()))
    return dict(zip(tables, frames, strict=True))
