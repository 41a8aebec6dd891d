"""Reading a table as of one commit, through the ledger (for readers that run while writers do).

Plain globs (`pl.read_parquet("out/transcriptions/**/*.parquet")`) see whole files, never a
half-written one; but while a commit that replaces rows (a status change, a compaction) is being
applied, they can see an id's old and new rows for a moment. `read_table` keeps only the rows of
the batch the ledger names for each id, and retries (backing off, for up to a minute) if the
ledger changed during the read. Without a ledger it reads through the one the data files imply
(each id's newest batch, as a rebuild would); an unreadable ledger is a StorageError.
"""

from __future__ import annotations

import time

import polars as pl

from flows.errors import StorageError
from flows.storage.layout import file_location
from flows.storage.ledgerlog import current_version, stored_or_rebuilt
from flows.storage.store import Store
from transforms.schemas import TABLES, conform_table

READ_BUDGET_S = 60.0


def _rows_with_batch(
    store: Store, table: str, columns: list[str] | None = None, ids: list[str] | None = None
) -> pl.DataFrame:
    frames = []
    filters = None if ids is None else [("transcription_id", "in", ids)]
    for path in store.list(table, ".parquet"):
        file_id = file_location(path)[0]
        frame = conform_table(pl.DataFrame(store.read_parquet(path, columns, filters)), table, columns)
        frames.append(frame.with_columns(pl.lit(file_id, pl.String).alias("batch_id")))
    schema = TABLES[table] if columns is None else {c: TABLES[table][c] for c in columns}
    return pl.concat(frames) if frames else pl.DataFrame(schema={**schema, "batch_id": pl.String()})


def _pause(seconds: float) -> float:
    time.sleep(seconds)
    return min(seconds * 2, 1.0)


def read_table(out: str, table: str, columns: list[str] | None = None, ids: list[str] | None = None) -> pl.DataFrame:
    """The table's current rows (each id's latest commit), consistent even during a commit; only
    `columns` (and transcription_id) and only the rows of `ids`, when given (Parquet filters: the
    rest is never read)."""
    store = Store(out)
    deadline, pause = time.monotonic() + READ_BUDGET_S, 0.01
    while time.monotonic() < deadline:
        before = current_version(store)
        try:
            wanted = None if columns is None else ["transcription_id", *(c for c in columns if c != "transcription_id")]
            rows = _rows_with_batch(store, table, wanted, ids)
            ledger, _ = stored_or_rebuilt(store, before)
        except FileNotFoundError:  # a file was replaced or compacted away after the listing: read again
            pause = _pause(pause)
            continue
        except StorageError:  # an unreadable ledger, unless a fold replaced its files meanwhile
            if current_version(store) == before:
                raise
            pause = _pause(pause)
            continue
        if current_version(store) == before:
            current = ledger.select("transcription_id", "batch_id")
            found = rows.join(current, on=["transcription_id", "batch_id"], how="semi").drop("batch_id")
            return found if columns is None or "transcription_id" in columns else found.drop("transcription_id")
        pause = _pause(pause)  # a commit landed meanwhile: back off, then read again
    raise StorageError(f"{out}: the datasets kept changing while {table} was read; try again")
