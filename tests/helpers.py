"""Small builders shared by the tests."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import polars as pl

from flows.outcomes import Outcome
from flows.transform import transform_outcomes

TID = "5b0c0a44-8a38-4a0e-9d52-6f1b0c6f7e01"
FETCHED_AT = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def item(speaker: Any, start: Any, end: Any, text: Any = "word", **extra: Any) -> dict[str, Any]:
    """A dialect-A item."""
    return {"speaker": speaker, "start_time_ms": start, "end_time_ms": end, "text": text, **extra}


def tables_for(items: list[Any], tid: str = TID) -> dict[str, pl.DataFrame]:
    """The four tables for one succeeded transcription with these raw items."""
    return transform_outcomes([Outcome(tid, "succeeded", FETCHED_AT, api_version="2024-04-22", items=items)])


def metrics_by_speaker(items: list[Any]) -> dict[str, dict[str, Any]]:
    """speaker -> that speaker's metrics row."""
    rows = tables_for(items)["speaker_metrics"].to_dicts()
    return {row["speaker"]: row for row in rows}


def commit_outcomes(out: str, outcomes: list[Outcome]) -> None:
    """Stage and commit these outcomes as one batch of a run of their own (as the flows do)."""
    from flows.batch import BatchSpec, stage_outcomes
    from flows.storage.commit import new_batch_id
    from flows.storage.dataset import Dataset

    dataset = Dataset(out)
    run_id = new_batch_id()
    staged = stage_outcomes(out, BatchSpec.new(1, dataset.write_snapshot(run_id)), outcomes)
    dataset.commit(staged.files, staged.polled, run_batches=frozenset())
    dataset.drop_snapshot(run_id)
