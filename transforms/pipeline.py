"""The whole transform for one batch: transcripts and outcomes in, the four tables out."""

from __future__ import annotations

from collections.abc import Iterable

import polars as pl

from transforms.flatten import Transcript, flatten_transcripts
from transforms.items import parse_items, rejected_items, valid_items
from transforms.metrics import speaker_metrics
from transforms.schemas import RESPONSES, SORT_KEYS, conform
from transforms.transcriptions import transcription_metrics


def build_tables(responses: pl.LazyFrame, transcripts: Iterable[Transcript]) -> dict[str, pl.LazyFrame]:
    """One row per response in `transcriptions`; items, rejected items and speaker metrics."""
    parsed = parse_items(flatten_transcripts(transcripts))
    items = valid_items(parsed)
    rejected = rejected_items(parsed)
    speakers = speaker_metrics(items)
    transcriptions = transcription_metrics(conform(responses, RESPONSES), items, rejected, speakers)
    tables = {
        "transcriptions": transcriptions,
        "speaker_metrics": speakers,
        "transcript_items": items,
        "rejected_items": rejected,
    }
    return {name: frame.sort(*SORT_KEYS[name]) for name, frame in tables.items()}


def collect_tables(tables: dict[str, pl.LazyFrame]) -> dict[str, pl.DataFrame]:
    """Collect all tables in one pass so shared sub-plans are computed once."""
    frames = pl.collect_all(list(tables.values()))
    return dict(zip(tables, frames, strict=True))
