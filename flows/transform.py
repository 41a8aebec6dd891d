"""Batch steps shared by the polling and the ingest flows: transform, write, summarise."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import polars as pl

from flows.outcomes import Outcome, responses_frame, transcripts_of
from transforms.flatten import flatten_transcripts, raw_items_json
from transforms.metrics import speaker_metrics
from transforms.pipeline import collect_tables, item_tables, rejected_keys
from transforms.schemas import RESPONSES, SORT_KEYS, conform
from transforms.transcriptions import transcription_metrics

T = TypeVar("T")


def batched(values: Sequence[T], size: int) -> Iterator[list[T]]:
    """Consecutive slices of at most `size` values (itertools.batched is Python 3.12+)."""
    if size < 1:
        raise ValueError("batch size must be at least 1")
    for start in range(0, len(values), size):
        yield list(values[start : start + size])


def transform_outcomes(outcomes: list[Outcome]) -> dict[str, pl.DataFrame]:
    """The four tables for a batch of outcomes (raw JSON serialised only for rejected items)."""
    transcripts = transcripts_of(outcomes)
    raw = flatten_transcripts(transcripts).collect().lazy()
    raw_json = raw_items_json(transcripts, rejected_keys(raw).collect()).lazy()
    items = collect_tables(item_tables(raw, raw_json))
    items_lazy, rejected_lazy = items["transcript_items"].lazy(), items["rejected_items"].lazy()
    # Collected stage by stage: polars would otherwise recompute speaker metrics for transcriptions.
    speakers = speaker_metrics(items_lazy).collect()
    responses = conform(responses_frame(outcomes), RESPONSES)
    transcriptions = transcription_metrics(responses, items_lazy, rejected_lazy, speakers.lazy()).collect()
    tables = {"transcriptions": transcriptions, "speaker_metrics": speakers, **items}
    return {name: frame.sort(*SORT_KEYS[name]) for name, frame in tables.items()}


@dataclass
class RunSummary:
    """What a run did: outcomes by status, rows written by table, and whether it stopped early."""

    statuses: Counter[str] = field(default_factory=Counter)
    rows: Counter[str] = field(default_factory=Counter)
    batches: int = 0
    already_final: int = 0
    stopped_early: str | None = None
    skipped: list[str] = field(default_factory=list)
    talk: list[pl.DataFrame] = field(default_factory=list)

    def add(self, polled: list[Outcome], frames: dict[str, pl.DataFrame]) -> None:
        """Account for one committed batch: what was polled, and the rows written."""
        self.batches += 1
        self.statuses.update(o.status for o in polled)
        self.rows.update({table: frame.height for table, frame in frames.items()})
        self.talk.append(frames["speaker_metrics"].group_by("speaker").agg(pl.col("talk_time_ms").sum()))

    def status_table(self) -> pl.DataFrame:
        """Transcriptions per status."""
        return pl.DataFrame(
            {"status": list(self.statuses), "transcriptions": list(self.statuses.values())},
            schema={"status": pl.String, "transcriptions": pl.Int64},
        ).sort("status")

    def talk_table(self) -> pl.DataFrame:
        """Talk time per speaker over the whole run, in minutes and as a share."""
        if not self.talk:
            return pl.DataFrame(schema={"speaker": pl.String, "talk_minutes": pl.Float64, "share": pl.Float64})
        totals = pl.concat(self.talk).group_by("speaker").agg(pl.col("talk_time_ms").sum())
        return totals.select(
            "speaker",
            (pl.col("talk_time_ms") / 60_000).round(1).alias("talk_minutes"),
            (pl.col("talk_time_ms") / pl.col("talk_time_ms").sum()).round(3).alias("share"),
        ).sort("speaker")

    def as_dict(self) -> dict[str, object]:
        """A JSON-friendly summary."""
        return {
            "statuses": dict(self.statuses),
            "rows": dict(self.rows),
            "batches": self.batches,
            "already_final": self.already_final,
            "stopped_early": self.stopped_early,
            "skipped_inputs": len(self.skipped),
        }
