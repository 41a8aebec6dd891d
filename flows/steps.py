"""The bodies of the flows' storage steps, free of Prefect (the tasks in pipeline.py wrap them)."""

from __future__ import annotations

from datetime import UTC, datetime

import polars as pl

from flows.outcomes import Outcome
from flows.storage.commit import commit_batch, new_batch_id, recover
from flows.storage.ledger import load_ledger, superseded, updated_ledger
from flows.storage.store import Store


def recover_and_load(out: str) -> tuple[pl.DataFrame, int]:
    """Finish or drop what a crashed run left; the ledger and how many batches were finished."""
    store = Store(out)
    finished = recover(store)
    return load_ledger(store), finished


def commit_outcomes(
    out: str, frames: dict[str, pl.DataFrame], polled: list[Outcome], written: list[Outcome], ledger: pl.DataFrame
) -> pl.DataFrame:
    """Commit one batch's rows, the rows they supersede, and the ledger; returns the new ledger."""
    now = datetime.now(UTC)
    batch_id, fetched_date = new_batch_id(), now.date().isoformat()
    new_ledger = updated_ledger(ledger, polled, written, batch_id, fetched_date, now)
    commit_batch(
        Store(out),
        frames,
        batch_id=batch_id,
        fetched_date=fetched_date,
        ledger=new_ledger,
        superseded=superseded(ledger, written),
    )
    return new_ledger
