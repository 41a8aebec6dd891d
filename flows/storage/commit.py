"""The four Parquet datasets and their commit protocol.

Layout: `{out}/{table}/fetched_date=YYYY-MM-DD/part-{batch_id}.parquet` (Hive-style), plus
`{out}/_talktime/` for the ledger, staging, commit records and the writer's lease (never matched
by table globs).

One writer per output location: every command that writes holds the lease
(`flows.storage.lease`) from before its recovery to its end, and checks it still holds it right
before each commit record.

Commit protocol for one batch (local disk or object storage):
1. Stage: a batch task writes the batch's four files under `_talktime/staging/{batch}/`
   (several batches at once, anywhere: nothing else is touched); then the one writer stages
   there the rewritten versions of older files that held superseded rows of the same ids, and
   the new ledger (`Transaction`; batches are committed one at a time, in order).
2. Commit: write `_talktime/commits/{batch}.json` listing every move and delete. Writing this
   one small file is the commit point: before it the batch does not exist, after it, it does.
3. Apply: put staged files in place (new data first, then the ledger, then the rewritten older
   files), delete the files they replace, then delete the commit record and the staging folder.
   Between the first file placed and the last one deleted a plain glob can see an id's old and
   new rows, so that window holds nothing else: which staged files exist is listed once before
   it, a placement is one rename (disk) or one server-side copy (object store: the staged
   source goes with the staging folder, after the window), and the deletes follow at once (on
   S3 in one request per 1,000 files). The ledger says which batch's rows are current for each
   id, and it switches in one atomic step between "new rows added" and "old rows removed":
   `flows.storage.reader.read_table` reads through it and so always sees a whole commit, even
   while one is being applied, or after a crash in the middle of one. That is also why the
   window cannot shrink to "one table's new file, then its old files": the ledger, one file for
   all four tables, must switch after every new file and before every old file goes.
4. Recover (start of every command that writes, under the lease, so that what it finds was left
   by a dead writer): apply every commit record left by a crash (each step is idempotent: a
   move whose source is gone was done; a copy redone gives the same object), then drop staging
   left without a record.
Data files are whole-object writes (temporary name + fsync + rename on disk, a single PUT on
object storage), so a reader never sees a half-written file.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field

import polars as pl
import pyarrow as pa

from flows import __version__
from flows.errors import StorageError
from flows.storage.layout import COMMITS, INTERNAL, PARTITION, commit_path, data_path, new_file_id, staging_dir
from flows.storage.lease import Lease
from flows.storage.store import Store
from transforms.dictionary import descriptions
from transforms.schemas import SCHEMA_VERSION, SORT_KEYS, TABLES, conform_table

# Free text gets no dictionary: its values rarely repeat, so pyarrow would build a dictionary per
# page only to fall back to plain (a 20,000-response items table: 12% smaller, and less CPU).
FREE_TEXT = frozenset({"text", "raw_item", "error_message", "error_payload"})
PARQUET_OPTIONS: dict[str, object] = {
    "compression": "zstd",
    "row_group_size": 256 * 1024,
    "write_statistics": True,
    "use_dictionary": sorted({name for schema in TABLES.values() for name in schema} - FREE_TEXT),
}
new_batch_id = new_file_id
__all__ = ["INTERNAL", "PARTITION", "data_path", "new_batch_id", "staging_dir"]


def table_metadata(table: str) -> dict[bytes, bytes]:
    """Key-value metadata stored in every file: table, schema version, producer."""
    return {
        b"talktime.table": table.encode(),
        b"talktime.schema_version": str(SCHEMA_VERSION).encode(),
        b"talktime.producer": f"talktime {__version__}".encode(),
    }


def to_arrow(table: str, frame: pl.DataFrame, *, presorted: bool = False) -> pa.Table:
    """The frame checked against the table's declared schema, as Arrow with our metadata.

    Each field carries its data-dictionary description (field metadata `description`, read by
    pyarrow); the same texts are also file key-value metadata `talktime.description.<column>`,
    because DuckDB does not decode Arrow field metadata (`parquet_kv_metadata` shows them).
    """
    if frame.schema != TABLES[table]:
        raise StorageError(f"{table}: output schema {dict(frame.schema)} differs from the declared one")
    data = (frame if presorted else frame.sort(*SORT_KEYS[table])).to_arrow()
    described = descriptions(table)
    fields = [
        f.with_metadata({b"description": described[f.name].encode()}) if f.name in described else f for f in data.schema
    ]
    metadata = table_metadata(table)
    metadata.update({f"talktime.description.{name}".encode(): text.encode() for name, text in described.items()})
    return data.cast(pa.schema(fields, metadata=metadata))


MOVE_SCHEMA = pl.Schema({"transcription_id": pl.String(), "batch_id": pl.String(), "fetched_date": pl.String()})


def moved(ids: pl.Series, file_id: str, fetched_date: str) -> pl.DataFrame:
    """Ledger moves: these ids' rows are now in file `file_id` of partition `fetched_date`."""
    return (
        pl.DataFrame({"transcription_id": ids})
        .with_columns(
            pl.lit(file_id, pl.String).alias("batch_id"), pl.lit(fetched_date, pl.String).alias("fetched_date")
        )
        .cast(MOVE_SCHEMA)
    )


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


def stage_tables(store: Store, batch_id: str, frames: dict[str, pl.DataFrame]) -> dict[str, int]:
    """Stage a batch's four files (step 1; none when every table is empty); rows per table.

    `frames` are in SORT_KEYS order, as `flows.transform.build_tables` returns them.

    Safe to run anywhere, in parallel with other batches and with the commits of earlier ones:
    nothing outside the batch's own staging folder is touched until its commit.
    """
    # schema check before any write; the transform's tables are in SORT_KEYS order already
    arrow = {table: to_arrow(table, frame, presorted=True) for table, frame in frames.items()}
    if not any(data.num_rows for data in arrow.values()):
        return {}
    for table, data in arrow.items():  # Store turns I/O errors into StorageError
        store.write_parquet(f"{staging_dir(batch_id)}/{table}.parquet", data, **PARQUET_OPTIONS)
    return {table: data.num_rows for table, data in arrow.items()}


def rewritable(data: pa.Table, path: str) -> pl.DataFrame:
    """A data file's rows, to be rewritten in this schema version; StorageError when a newer talktime
    wrote it (rewriting it here would drop the columns that version added)."""
    version = (data.schema.metadata or {}).get(b"talktime.schema_version", b"1")
    if version.isdigit() and int(version) > SCHEMA_VERSION:
        raise StorageError(
            f"{path} was written by a newer talktime (schema version {int(version)}; this one writes "
            f"{SCHEMA_VERSION}): upgrade talktime before it rewrites this output"
        )
    return pl.DataFrame(data)


class Transaction:
    """One commit: files staged under the batch's staging folder, one commit record, then applied."""

    def __init__(self, store: Store, batch_id: str) -> None:
        self.store = store
        self.record = CommitRecord(batch_id)
        self.staging = staging_dir(batch_id)

    def stage(self, name: str, table: pa.Table, destination: str, **options: object) -> None:
        """Write `table` into staging now; it moves to `destination` when the commit is applied."""
        self.store.write_parquet(f"{self.staging}/{name}", table, **options)
        self.adopt(f"{self.staging}/{name}", destination)

    def adopt(self, staged: str, destination: str) -> None:
        """Move a file already staged (by a batch task) to `destination` when applied."""
        self.record.moves.append((staged, destination))

    def delete(self, path: str) -> None:
        self.record.deletes.append(path)

    def stage_bytes(self, name: str, data: bytes, destination: str) -> None:
        """Write `data` into staging now; it moves to `destination` when the commit is applied."""
        self.store.write_bytes(f"{self.staging}/{name}", data)
        self.adopt(f"{self.staging}/{name}", destination)

    def supersede(
        self, superseded: dict[tuple[str, str], set[str]], *, removed: Counter[str] | None = None
    ) -> pl.DataFrame:
        """Take the rows of ids this commit replaces out of the older files holding them.

        Files are never rewritten in place (a reader that reads a file's footer and its data
        separately would mix two versions): the rows kept go to a new file under a new file id,
        in the same partition, and the old file is deleted after the switch; an emptied file is
        only deleted. Returns the kept ids' moves (MOVE_SCHEMA) for the ledger.
        """
        moves = []
        for (old_file, old_date), ids in sorted(superseded.items()):
            new_id = new_file_id()
            for table in TABLES:
                old = data_path(table, old_date, old_file)
                if not self.store.exists(old):
                    continue
                rows = rewritable(self.store.read_parquet(old), old)
                kept = rows.filter(~pl.col("transcription_id").is_in(sorted(ids)))
                if removed is not None:
                    removed[table] += rows.height - kept.height
                self.delete(old)
                if kept.is_empty():
                    continue
                data = to_arrow(table, conform_table(kept, table))  # an older version's file is rewritten in this one
                self.stage(
                    f"replace/{table}/{new_id}.parquet", data, data_path(table, old_date, new_id), **PARQUET_OPTIONS
                )
                if table == "transcriptions":
                    moves.append(moved(kept["transcription_id"], new_id, old_date))
        return pl.concat(moves) if moves else pl.DataFrame(schema=MOVE_SCHEMA)

    def commit(self) -> None:
        """Write the commit record (the commit point), then apply it."""
        record = self.record
        self.store.write_bytes(commit_path(record.batch_id), record.to_json())
        apply_commit(self.store, record)


def apply_commit(store: Store, record: CommitRecord) -> None:
    """Carry out a committed batch; safe to repeat after a crash at any point (see step 3 above)."""
    staging = staging_dir(record.batch_id)
    staged = set(store.list(staging))  # one listing before the window instead of a check per move
    for src, dst in record.moves:
        if src in staged:
            store.place(src, dst)
    store.delete_many(record.deletes)
    store.delete(commit_path(record.batch_id))
    store.delete_dir(staging)


def recover(store: Store, lease: Lease) -> int:
    """Finish batches committed before a crash, drop uncommitted staging; returns batches finished.

    Only while holding the lease (checked and renewed first: LeaseLostError otherwise): then no
    live writer has a batch in flight, and everything in staging was left by a dead one.
    """
    lease.renew()
    records = store.list(COMMITS, ".json")
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
    return pl.concat([conform_table(pl.DataFrame(store.read_parquet(f)), table) for f in files])
