"""The ledger: each id's state across runs, stored beside the datasets (`flows.storage.ledgerlog`).

It records when an id was first seen and last polled, how often it was polled, its latest status,
whether that status is final, and which batch's files hold its rows. A run skips final ids,
re-polls `ongoing` and `error` ones, and turns ids pending longer than `expire_after` into
`expired`. Rows are only (re)written when an id's status changes, so running the same manifest
again changes nothing.

The data files say which ids they hold (`transcriptions` has a row per id and batch, the path
names the batch and its date): a missing ledger is rebuilt from them (`ledger_from_data`), and
`flows.storage.verify` checks one against the other.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from flows.errors import StorageError
from flows.outcomes import Outcome
from flows.storage.layout import file_location
from flows.storage.store import Store
from transforms.schemas import ADDED_COLUMNS, TABLES, UTC_TIMESTAMP, conform_table

UNREADABLE_LEDGER = (
    "the ledger (_talktime/ledger/) is unreadable (truncated or corrupt): "
    "run `talktime verify --out DIR --repair` to rebuild it from the data files"
)
FORGOTTEN = "forgotten"  # erased by `talktime forget`: no rows, never written again
FINAL_STATUSES = ("succeeded", "failed", "not_found", "expired", FORGOTTEN)
NEVER_SENT = "invalid_id"  # an error that no retry can change
DEFAULT_EXPIRE_AFTER = timedelta(hours=24)

LEDGER_SCHEMA = pl.Schema(
    {
        "transcription_id": pl.String(),
        "status": pl.String(),
        "final": pl.Boolean(),
        "first_seen_at": UTC_TIMESTAMP,
        "last_polled_at": UTC_TIMESTAMP,
        "attempts": pl.Int32(),
        "batch_id": pl.String(),
        "fetched_date": pl.String(),
    }
)


def final_expr() -> pl.Expr:
    """`is_final` over a frame with `status` and `error_code`."""
    return pl.col("status").is_in(FINAL_STATUSES) | (pl.col("error_code") == NEVER_SENT).fill_null(False)


def is_final(outcome: Outcome) -> bool:
    """Whether no later poll can change this outcome."""
    return outcome.status in FINAL_STATUSES or outcome.error_code == NEVER_SENT


# Where a row is: the batch and date its file's path names (null when the path does not follow the
# layout), the file, and the row's position in it.
LOCATION = pl.Schema({"batch_id": pl.String(), "fetched_date": pl.String(), "path": pl.String(), "row": pl.UInt32()})
REBUILD_COLUMNS = ("transcription_id", "status", "error_code", "fetched_at")
UNREADABLE = (pa.ArrowException, OSError, pl.exceptions.PolarsError)  # raised by parsing bytes in memory
log = logging.getLogger(__name__)
STATE_COLUMNS = ("status", "final", "first_seen_at", "last_polled_at", "attempts")


def ledger_from_data(rows: pl.DataFrame) -> pl.DataFrame:
    """The ledger that `transcriptions` rows (REBUILD_COLUMNS + batch_id, fetched_date) imply.

    Each id's current rows are those of its newest batch (batch ids sort by creation time); rows
    whose path names no batch are left out. What the data cannot say is approximated:
    `first_seen_at` is the earliest `fetched_at` among the id's rows and `last_polled_at` that of
    its current row (polls that changed nothing left no row, and replaced rows are deleted, so
    both can be later than the truth: a pending id expires later, never earlier); `attempts` is
    the number of batches holding a row of the id (a lower bound, usually 1).
    """
    located = rows.filter(pl.col("batch_id").is_not_null() & pl.col("fetched_date").is_not_null())
    per_id = (
        located.sort("transcription_id", "batch_id", "fetched_at", nulls_last=False)
        .group_by("transcription_id")
        .agg(
            pl.col("status", "error_code", "fetched_at", "batch_id", "fetched_date").last(),
            pl.col("fetched_at").min().alias("first_seen_at"),
            pl.col("batch_id").n_unique().alias("attempts"),
        )
    )
    ledger = per_id.with_columns(final_expr().alias("final"), pl.col("fetched_at").alias("last_polled_at"))
    return ledger.select(LEDGER_SCHEMA.names()).cast(dict(LEDGER_SCHEMA)).sort("transcription_id")  # type: ignore[arg-type]


@dataclass(frozen=True)
class DataFiles:
    """Some columns of every readable data file of one table, each row with its LOCATION."""

    rows: pl.DataFrame
    files: int  # data files listed, readable or not
    unreadable: tuple[str, ...]  # paths of files that are not Parquet files holding these columns


Progress = Callable[[int], None]


def read_data_files(
    store: Store,
    table: str,
    columns: Sequence[str],
    dates: tuple[str, str] | None = None,
    progress: Progress | None = None,
) -> DataFiles:
    """These columns of every data file of `table` (of the partitions from `dates[0]` to `dates[1]`,
    ISO dates, inclusive, when given); `progress` told of each file read (I/O errors: StorageError)."""
    paths = store.list(table, ".parquet")
    if dates is not None:
        paths = [p for p in paths if (d := file_location(p)[1]) is not None and dates[0] <= d <= dates[1]]
    frames, unreadable = [], []
    for path in paths:
        if progress is not None:
            progress(1)
        frame = _read_columns(store, path, table, columns)
        if frame is None:
            unreadable.append(path)
            continue
        batch, date = file_location(path)
        where = {"batch_id": batch, "fetched_date": date, "path": path}
        frames.append(frame.with_columns(pl.lit(v, pl.String).alias(k) for k, v in where.items()).with_row_index("row"))
    schema = pl.Schema({**{c: TABLES[table][c] for c in columns}, **LOCATION})
    rows = pl.concat(frames) if frames else pl.DataFrame(schema=schema)
    return DataFiles(rows.select(schema.names()), len(paths), tuple(unreadable))


def _read_columns(store: Store, path: str, table: str, columns: Sequence[str]) -> pl.DataFrame | None:
    """The file's columns cast to the table's types; None when its bytes are not such a Parquet file."""
    data = read_stored(store, path)
    try:
        parquet = pq.ParquetFile(pa.BufferReader(data))
        stored = [c for c in columns if c in parquet.schema_arrow.names]
        if not set(columns) - set(stored) <= set(ADDED_COLUMNS.get(table, {})):
            return None  # a column lacks that no schema version of the table lacked
        return conform_table(pl.DataFrame(parquet.read(columns=stored)), table, columns)
    except UNREADABLE:
        return None


def read_stored(store: Store, path: str) -> bytes:
    """A whole file (StorageError when the storage fails: a file's content is judged once in memory)."""
    try:
        return store.read_bytes(path)
    except OSError as exc:
        raise StorageError(f"cannot read {path} from the output location: {exc}") from None


@dataclass(frozen=True)
class Plan:
    """What a run will do with its manifest."""

    to_fetch: list[str]
    expired: list[Outcome]
    already_final: int
    refetched: list[str]  # final ids polled again (`refetch`): their rows will be replaced


def plan_run(
    ledger: pl.DataFrame, ids: list[str], now: datetime, expire_after: timedelta, refetch: Sequence[str] = ()
) -> Plan:
    """Skip final ids, expire ids pending too long, fetch the rest (manifest order kept).

    Ids whose final status is in `refetch` are fetched again (never expired: they were answered).
    """
    manifest = pl.DataFrame({"transcription_id": ids}, schema={"transcription_id": pl.String()})
    columns = ["transcription_id", "status", "final", "first_seen_at"]
    known = manifest.join(ledger.select(columns), on="transcription_id", how="left", maintain_order="left")
    refetched = pl.col("final").fill_null(False) & pl.col("status").is_in(list(refetch))
    final = pl.col("final").fill_null(False) & ~refetched
    expired = ~final & ~refetched & (pl.col("first_seen_at") < now - expire_after).fill_null(False)
    expired_rows = known.filter(expired).select("transcription_id", "status").iter_rows()
    return Plan(
        to_fetch=known.filter(~final & ~expired)["transcription_id"].to_list(),
        expired=[
            Outcome(
                tid,
                "expired",
                now,
                error_code="expired",
                error_message=f"still {status} {expire_after} after it was first requested",
            )
            for tid, status in expired_rows
        ],
        already_final=known.filter(final).height,
        refetched=known.filter(refetched)["transcription_id"].to_list(),
    )


POLLED_SCHEMA = pl.Schema(
    {"transcription_id": pl.String(), "status": pl.String(), "final": pl.Boolean(), "written": pl.Boolean()}
)


def polled_frame(outcomes: list[Outcome], written: set[str]) -> pl.DataFrame:
    """What a batch learnt of each polled id: status, whether final, whether its rows are (re)written."""
    return pl.DataFrame(
        {
            "transcription_id": [o.transcription_id for o in outcomes],
            "status": [o.status for o in outcomes],
            "final": [is_final(o) for o in outcomes],
            "written": [o.transcription_id in written for o in outcomes],
        },
        schema=POLLED_SCHEMA,
    )


def superseded(ledger: pl.DataFrame, ids: pl.Series) -> dict[tuple[str, str], set[str]]:
    """(batch_id, fetched_date) of the files holding earlier rows of these ids -> those ids."""
    earlier = ledger.filter(pl.col("transcription_id").is_in(ids.implode()) & pl.col("batch_id").is_not_null())
    found: dict[tuple[str, str], set[str]] = {}
    for tid, batch, date in earlier.select("transcription_id", "batch_id", "fetched_date").iter_rows():
        found.setdefault((batch, date), set()).add(tid)
    return found


def updated_ledger(
    ledger: pl.DataFrame, polled: pl.DataFrame, batch_id: str, fetched_date: str, now: datetime
) -> pl.DataFrame:
    """The ledger after a batch (`polled`: POLLED_SCHEMA): every polled id's state, and where the
    written ones' rows are."""
    update = polled.select(
        "transcription_id",
        "status",
        "final",
        pl.lit(now, UTC_TIMESTAMP).alias("last_polled_at"),
        pl.when(pl.col("written")).then(pl.lit(batch_id)).otherwise(pl.lit(None, pl.String)).alias("new_batch_id"),
    )
    merged = ledger.join(update, on="transcription_id", how="full", coalesce=True, suffix="_new")
    written_now = pl.col("new_batch_id").is_not_null()
    result = merged.with_columns(
        pl.coalesce("status_new", "status").alias("status"),
        pl.coalesce("final_new", "final").alias("final"),
        pl.coalesce("first_seen_at", pl.lit(now, UTC_TIMESTAMP)).alias("first_seen_at"),
        pl.coalesce("last_polled_at_new", "last_polled_at").alias("last_polled_at"),
        (pl.col("attempts").fill_null(0) + pl.col("status_new").is_not_null().cast(pl.Int32)).alias("attempts"),
        pl.when(written_now).then(pl.col("new_batch_id")).otherwise(pl.col("batch_id")).alias("batch_id"),
        pl.when(written_now).then(pl.lit(fetched_date)).otherwise(pl.col("fetched_date")).alias("fetched_date"),
    )
    return result.select(LEDGER_SCHEMA.names()).cast(dict(LEDGER_SCHEMA)).sort("transcription_id")  # type: ignore[arg-type]


def overlay(prior: pl.DataFrame, entries: pl.DataFrame) -> pl.DataFrame:
    """`prior` (one row per id) with the log `entries` applied in order: a full row replaces the
    id's state; a move (status null) changes only where its rows are (batch_id, fetched_date)."""
    ordered = pl.concat(
        [
            prior.with_columns(pl.lit(-1, pl.Int64).alias("order")),
            entries.with_columns(pl.int_range(pl.len(), dtype=pl.Int64).alias("order")),
        ]
    ).sort("order", maintain_order=True)
    touched = ordered.group_by("transcription_id", maintain_order=True).agg(
        *[pl.col(c).drop_nulls().last() for c in STATE_COLUMNS],
        pl.col("batch_id", "fetched_date").last(),
    )
    touched = touched.filter(pl.col("status").is_not_null())  # a move of an id the ledger never held
    untouched = prior.join(entries.select("transcription_id"), on="transcription_id", how="anti")
    return pl.concat([untouched, touched.select(LEDGER_SCHEMA.names()).cast(dict(LEDGER_SCHEMA))])  # type: ignore[arg-type]


def forgotten_rows(prior: pl.DataFrame, ids: list[str], now: datetime) -> pl.DataFrame:
    """The ledger rows that mark `ids` forgotten: final, no rows; first seen and attempts kept."""
    asked = pl.DataFrame({"transcription_id": ids}, schema={"transcription_id": pl.String()})
    known = asked.join(prior.select("transcription_id", "first_seen_at", "attempts"), on="transcription_id", how="left")
    return known.select(
        "transcription_id",
        pl.lit(FORGOTTEN).alias("status"),
        pl.lit(True).alias("final"),
        pl.coalesce("first_seen_at", pl.lit(now, UTC_TIMESTAMP)).alias("first_seen_at"),
        pl.lit(now, UTC_TIMESTAMP).alias("last_polled_at"),
        pl.col("attempts").fill_null(0),
        pl.lit(None, pl.String).alias("batch_id"),
        pl.lit(None, pl.String).alias("fetched_date"),
    ).cast(LEDGER_SCHEMA)
