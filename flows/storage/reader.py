"""Reading a table as of one commit, through the ledger (for readers that run while writers do).

Plain globs (`pl.read_parquet("out/transcriptions/**/*.parquet")`) see whole files, never a
half-written one; but while a commit that replaces rows (a status change, a compaction) is being
applied, they can see an id's old and new rows for a moment. `read_table` keeps only the rows of
the batch the ledger names for each id, and retries (backing off, for up to a minute) if the
ledger changed during the read. Without a ledger it reads through the one the data files imply
(each id's newest batch, as a rebuild would); an unreadable ledger is a StorageError.
"""

from __future__ import annotations

import re
import time

import polars as pl

from flows.errors import StorageError
from flows.storage.ledger import LEDGER_PATH, UNREADABLE_LEDGER, load_ledger, parse_ledger
from flows.storage.store import Store
from transforms.schemas import TABLES, conform_table

_BATCH = re.compile(r"part-(.+)\.parquet$")
READ_BUDGET_S = 60.0


def _ledger_bytes(store: Store) -> bytes:
    return store.read_bytes(LEDGER_PATH) if store.exists(LEDGER_PATH) else b""


def _rows_with_batch(store: Store, table: str) -> pl.DataFrame:
    frames = []
    for path in store.list(table, ".parquet"):
        match = _BATCH.search(path)
        frame = conform_table(pl.DataFrame(store.read_parquet(path)), table)
        frames.append(frame.with_columns(pl.lit(match.group(1) if match else None, pl.String).alias("batch_id")))
    return pl.concat(frames) if frames else pl.DataFrame(schema={**TABLES[table], "batch_id": pl.String()})


def _pause(seconds: float) -> float:
    time.sleep(seconds)
    return min(seconds * 2, 1.0)


def read_table(out: str, table: str) -> pl.DataFrame:
    """The table's current rows (each id's latest commit), consistent even during a commit."""
    store = Store(out)
    deadline, pause = time.monotonic() + READ_BUDGET_S, 0.01
    while time.monotonic() < deadline:
        before = _ledger_bytes(store)
        try:
            rows = _rows_with_batch(store, table)
        except OSError:  # a file was replaced or compacted away while we listed: read again
            pause = _pause(pause)
            continue
        if _ledger_bytes(store) == before:
            ledger = parse_ledger(before) if before else load_ledger(store)
            if ledger is None:
                raise StorageError(UNREADABLE_LEDGER)
            current = ledger.select("transcription_id", "batch_id")
            return rows.join(current, on=["transcription_id", "batch_id"], how="semi").drop("batch_id")
        pause = _pause(pause)  # a commit landed meanwhile: back off, then read again
    raise StorageError(f"{out}: the datasets kept changing while {table} was read; try again")
