"""Compaction: merge a partition's small files into one file per table.

`talktime compact` merges every partition holding more than one file in a table; a run, at its
end, merges the partitions it wrote to once a table there holds more than MAX_FILES_PER_PARTITION
files (`compact_written`), so small files stay few without anyone remembering to compact.

A compaction commits through the same `Transaction` as a batch (stage, commit record, apply), so
a crash at any point leaves the datasets as they were or as compacted, never half of each. The
merged file gets a new file id; the ledger entry of the commit moves the partition's ids to it;
the small files are deleted after the switch (never rewritten in place). Like `run` and `ingest`
it is a writer (`Dataset.writer`: the lease, recovery). A plain glob can see a partition's rows
twice from the moment its merged file lands until its last small file is deleted (see
`flows.storage.commit`, step 3); `read_table` never does.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable

import polars as pl
import pyarrow.parquet as pq

from flows.storage.commit import PARQUET_OPTIONS, Transaction, moved, rewritable, to_arrow
from flows.storage.dataset import Dataset
from flows.storage.layout import data_path, file_location, new_file_id, partition_dir
from flows.storage.store import Store
from transforms.schemas import TABLES, conform_table

MAX_FILES_PER_PARTITION = 16


def partitions(store: Store) -> dict[str, dict[str, list[str]]]:
    """fetched_date -> table -> that partition's data files."""
    found: dict[str, dict[str, list[str]]] = {}
    for table in TABLES:
        for path in store.list(table, ".parquet"):
            date = file_location(path)[1]
            if date is not None:
                found.setdefault(date, {}).setdefault(table, []).append(path)
    return found


def partition_files(store: Store, date: str) -> dict[str, list[str]]:
    """table -> the data files of one partition (one listing per table)."""
    return {table: paths for table in TABLES if (paths := store.list(partition_dir(table, date), ".parquet"))}


def compact_partition(dataset: Dataset, date: str, files: dict[str, list[str]]) -> None:
    """Merge each table's files of one partition into one new file, in one commit."""
    store = dataset.store
    transaction = Transaction(store, new_file_id())
    file_id = transaction.record.batch_id
    moves = moved(pl.Series([], dtype=pl.String), file_id, date)
    for table, paths in files.items():
        ids = _merge(store, table, paths, f"{transaction.staging}/{table}.parquet")
        transaction.adopt(f"{transaction.staging}/{table}.parquet", data_path(table, date, file_id))
        for path in paths:
            transaction.delete(path)
        if table == "transcriptions":
            moves = moved(ids, file_id, date)
    dataset.commit_moves(transaction, moves)


def _merge(store: Store, table: str, paths: list[str], staged: str) -> pl.Series:
    """Write the rows of `paths` as one Parquet file at `staged`, a file at a time (memory: the largest
    file, not the partition; each file's rows stay sorted, as row groups of the merged file); the
    ids it holds. Files of an older schema version get the columns added since as nulls."""
    ids: list[pl.Series] = []
    with tempfile.TemporaryDirectory(prefix="talktime-compact-") as scratch:
        local = os.path.join(scratch, "merged.parquet")
        schema = to_arrow(table, pl.DataFrame(schema=TABLES[table])).schema
        options = {k: v for k, v in PARQUET_OPTIONS.items() if k != "row_group_size"}
        with pq.ParquetWriter(local, schema, **options) as writer:
            for path in paths:
                rows = conform_table(rewritable(store.read_parquet(path), path), table)
                writer.write_table(to_arrow(table, rows), row_group_size=PARQUET_OPTIONS["row_group_size"])
                ids.append(rows["transcription_id"])
        store.put_file(local, staged)
    return pl.concat(ids).unique(maintain_order=True) if ids else pl.Series([], dtype=pl.String)


def compact_written(dataset: Dataset, limit: int = MAX_FILES_PER_PARTITION) -> int:
    """Merge the partitions this writer added files to where a table holds more than `limit` files;
    how many were merged."""
    merged = 0
    for date in sorted(dataset.written_dates):
        files = partition_files(dataset.store, date)
        if any(len(paths) > limit for paths in files.values()):
            compact_partition(dataset, date, files)
            merged += 1
    dataset.written_dates.clear()
    return merged


def compact(
    out: str, *, run: str = "talktime compact", progress: Callable[[int, int], None] | None = None
) -> tuple[int, int]:
    """Merge every partition that has more than one file in a table; (files before, files after).

    `progress(done, total)` is told the partitions to merge, then each one merged.
    """
    with Dataset.writer(out, run) as (dataset, _):
        found = partitions(dataset.store)
        before = sum(len(paths) for tables in found.values() for paths in tables.values())
        todo = [(date, files) for date, files in sorted(found.items()) if any(len(p) > 1 for p in files.values())]
        for done, (date, files) in enumerate(todo):
            if progress is not None:
                progress(done, len(todo))
            compact_partition(dataset, date, files)
        if progress is not None:
            progress(len(todo), len(todo))
        dataset.fold_if_due()
        after = sum(len(paths) for tables in partitions(dataset.store).values() for paths in tables.values())
    return before, after
