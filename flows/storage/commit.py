"""The four Parquet datasets and their commit protocol.

Layout: `{out}/{table}/fetched_date=YYYY-MM-DD/part-{batch_id}.parquet` (Hive-style), plus
`{out}/_talktime/` for the ledger, staging and commit records (never matched by table globs).

Commit protocol for one batch (local disk or object storage):
1. Stage: write the batch's four files, the rewritten versions of older files that held
   superseded rows of the same ids, and the new ledger, under `_talktime/staging/{batch}/`.
2. Commit: write `_talktime/commits/{batch}.json` listing every move and delete. Writing this
   one small file is the commit point: before it the batch does not exist, after it, it does.
3. Apply: move staged files into place (new data first, then the ledger, then the rewritten
   older files), delete emptied files, then delete the commit record and the staging folder.
   The ledger says which batch's rows are current for each id, and it switches in one atomic
   step between "new rows added" and "old rows removed": `flows.storage.reader.read_table` reads
   through it and so always sees a whole commit, even while one is being applied.
4. Recover (start of every run): apply every commit record left by a crash (each step is
   idempotent: a move whose source is gone was done), then drop staging left without a record.
Data files are whole-object writes (temporary name + fsync + rename on disk, a single PUT on
object storage), so a reader never sees a half-written file.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

import polars as pl
import pyarrow as pa

from flows import __version__
from flows.errors import StorageError
from flows.storage.ledger import LEDGER_PATH
from flows.storage.store import Store
from transforms.schemas import SCHEMA_VERSION, SORT_KEYS, TABLES

PARQUET_OPTIONS: dict[str, object] = {
    "compression": "zstd",
    "row_group_size": 256 * 1024,
    "write_statistics": True,
}
INTERNAL = "_talktime"
PARTITION = "fetched_date"


def new_batch_id() -> str:
    """A unique batch id that sorts by creation time."""
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ") + "-" + uuid.uuid4().hex[:8]


def table_metadata(table: str) -> dict[bytes, bytes]:
    """Key-value metadata stored in every file: table, schema version, producer."""
    return {
        b"talktime.table": table.encode(),
        b"talktime.schema_version": str(SCHEMA_VERSION).encode(),
        b"talktime.producer": f"talktime {__version__}".encode(),
    }


def to_arrow(table: str, frame: pl.DataFrame) -> pa.Table:
    """The frame checked against the table's declared schema, as Arrow with our metadata."""
    if frame.schema != TABLES[table]:
        raise StorageError(f"{table}: output schema {dict(frame.schema)} differs from the declared one")
    return frame.sort(*SORT_KEYS[table]).to_arrow().replace_schema_metadata(table_metadata(table))


def data_path(table: str, fetched_date: str, batch_id: str) -> str:
    return f"{table}/{PARTITION}={fetched_date}/part-{batch_id}.parquet"


@dataclass
class CommitRecord:
    """Everything a batch changes, in the order it is applied."""

    batch_id: str
    moves: list[tuple[str, str]] = field(default_factory=list)
    deletes: list[str] = field(default_factory=list)

    def to_json(self) -> bytes:
        return json.dumps({"batch_id": self.batch_id, "moves": self.moves, "deletes": self.deletes}).encode()

    @classmethod
    def from_json(cls, data: bytes) -> CommitRecord:
        raw = json.loads(data)
        return cls(raw["batch_id"], [tuple(m) for m in raw["moves"]], list(raw["deletes"]))


def _stage_replacements(
    store: Store, staging: str, superseded: dict[tuple[str, str], set[str]], record: CommitRecord
) -> None:
    """Rewrite older files without the rows of ids this batch supersedes."""
    for (old_batch, old_date), ids in sorted(superseded.items()):
        for table in TABLES:
            old = data_path(table, old_date, old_batch)
            if not store.exists(old):
                continue
            kept = pl.DataFrame(store.read_parquet(old)).filter(~pl.col("transcription_id").is_in(sorted(ids)))
            staged = f"{staging}/replace/{table}/{old_batch}.parquet"
            store.write_parquet(staged, to_arrow(table, kept.cast(dict(TABLES[table]))), **PARQUET_OPTIONS)  # type: ignore[arg-type]
            record.moves.append((staged, old))


def commit_batch(
    store: Store,
    frames: dict[str, pl.DataFrame],
    *,
    batch_id: str,
    fetched_date: str,
    ledger: pl.DataFrame,
    superseded: dict[tuple[str, str], set[str]],
) -> None:
    """Stage, commit and apply one batch (see the module docstring).

    A batch with no rows to write (every id unchanged) commits only the ledger.
    """
    staging = f"{INTERNAL}/staging/{batch_id}"
    record = CommitRecord(batch_id)
    arrow = {table: to_arrow(table, frame) for table, frame in frames.items()}  # schema check before any write
    try:
        for table, data in arrow.items() if any(t.num_rows for t in arrow.values()) else []:
            staged = f"{staging}/{table}.parquet"
            store.write_parquet(staged, data, **PARQUET_OPTIONS)
            record.moves.append((staged, data_path(table, fetched_date, batch_id)))
        store.write_parquet(f"{staging}/ledger.parquet", ledger.to_arrow(), compression="zstd")
        record.moves.append((f"{staging}/ledger.parquet", LEDGER_PATH))
        _stage_replacements(store, staging, superseded, record)
        store.write_bytes(f"{INTERNAL}/commits/{batch_id}.json", record.to_json())
    except OSError as exc:
        raise StorageError(f"cannot write to {store.url}: {exc}") from exc
    apply_commit(store, record)


def apply_commit(store: Store, record: CommitRecord) -> None:
    """Carry out a committed batch; safe to repeat after a crash at any point."""
    for src, dst in record.moves:
        if store.exists(src):
            store.move(src, dst)
    for path in record.deletes:
        store.delete(path)
    store.delete(f"{INTERNAL}/commits/{record.batch_id}.json")
    store.delete_dir(f"{INTERNAL}/staging/{record.batch_id}")


def recover(store: Store) -> int:
    """Finish batches committed before a crash, drop uncommitted staging; returns batches finished."""
    records = store.list(f"{INTERNAL}/commits", ".json")
    for path in records:
        apply_commit(store, CommitRecord.from_json(store.read_bytes(path)))
    store.delete_dir(f"{INTERNAL}/staging")
    return len(records)


def read_every_file(store: Store, table: str) -> pl.DataFrame:
    """The rows of every data file of one table, as a plain glob reads them (between commits,
    the table itself). Empty, with the declared schema, when nothing was written."""
    files = store.list(table, ".parquet")
    if not files:
        return pl.DataFrame(schema=TABLES[table])
    frames = [pl.DataFrame(store.read_parquet(f)) for f in files]
    return pl.concat(frames).cast(dict(TABLES[table]))  # type: ignore[arg-type]
