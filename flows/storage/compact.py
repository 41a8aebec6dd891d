"""`talktime compact`: merge each partition's small files into one file per table.

It commits through the same `Transaction` as a batch (stage, commit record, apply), so a crash at any
point leaves the datasets as they were or as compacted, never half of each. The ledger's
pointers (which batch holds an id's rows) move to the merged files in the same commit.

Like `run` and `ingest` it is a writer: it takes the output's lease first (`LeaseHeldError` while
another writer holds it), recovers what a crashed writer left before anything else, renews the
lease before each partition's commit, and releases it at the end. A plain glob can see a
partition's rows twice from the moment its first merged file lands until its last small file is
deleted (see `flows.storage.commit`, step 3); `read_table` never does.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import polars as pl

from flows.storage.commit import (
    PARQUET_OPTIONS,
    PARTITION,
    Transaction,
    data_path,
    new_batch_id,
    recover,
    rewritable,
    to_arrow,
)
from flows.storage.lease import Lease
from flows.storage.ledger import LEDGER_PATH, load_ledger
from flows.storage.store import Store
from transforms.schemas import TABLES, conform_table

_DATE = re.compile(rf"/{PARTITION}=([0-9-]+)/")


def partitions(store: Store) -> dict[str, dict[str, list[str]]]:
    """fetched_date -> table -> that partition's data files."""
    found: dict[str, dict[str, list[str]]] = {}
    for table in TABLES:
        for path in store.list(table, ".parquet"):
            match = _DATE.search(f"/{path}")
            if match:
                found.setdefault(match.group(1), {}).setdefault(table, []).append(path)
    return found


def _compact_partition(lease: Lease, date: str, files: dict[str, list[str]], ledger: pl.DataFrame) -> pl.DataFrame:
    store = lease.store
    transaction = Transaction(store, new_batch_id())
    batch_id = transaction.record.batch_id
    for table, paths in files.items():
        # Files of an older schema version get the columns added since as nulls (not recomputed).
        merged = pl.concat([conform_table(rewritable(store.read_parquet(p), p), table) for p in paths])
        transaction.stage(
            f"{table}.parquet", to_arrow(table, merged), data_path(table, date, batch_id), **PARQUET_OPTIONS
        )
        for path in paths:
            transaction.delete(path)
    moved = pl.col("fetched_date") == date
    ledger = ledger.with_columns(pl.when(moved).then(pl.lit(batch_id)).otherwise(pl.col("batch_id")).alias("batch_id"))
    transaction.stage("ledger.parquet", ledger.to_arrow(), LEDGER_PATH, compression="zstd")
    lease.renew()  # still the one writer, right before the commit record
    transaction.commit()
    return ledger


def compact(
    out: str, *, run: str = "talktime compact", progress: Callable[[int, int], None] | None = None
) -> tuple[int, int]:
    """Merge every partition that has more than one file in a table; (files before, files after).

    `progress(done, total)` is told the partitions to merge, then each one merged.
    """
    store = Store(out)
    with Lease(store, run) as lease:
        recover(store, lease)
        ledger = load_ledger(store)
        found = partitions(store)
        before = sum(len(paths) for tables in found.values() for paths in tables.values())
        todo = [(date, files) for date, files in sorted(found.items()) if any(len(p) > 1 for p in files.values())]
        for done, (date, files) in enumerate(todo):
            if progress is not None:
                progress(done, len(todo))
            ledger = _compact_partition(lease, date, files, ledger)
        if progress is not None:
            progress(len(todo), len(todo))
        after = sum(len(paths) for tables in partitions(store).values() for paths in tables.values())
    return before, after
