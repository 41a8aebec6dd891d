"""Writing the four output tables as Parquet datasets under an output directory.

Each batch writes one file per table, `{out}/{table}/part-{batch_id}.parquet`, first to a
temporary name and then renamed into place, so a reader never sees a half-written file.
"""

from __future__ import annotations

import os
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from flows import __version__
from flows.errors import StorageError
from transforms.schemas import SCHEMA_VERSION, TABLES

PARQUET_COMPRESSION = "zstd"
ROW_GROUP_SIZE = 128 * 1024


def table_metadata(table: str) -> dict[bytes, bytes]:
    """Key-value metadata stored in every file: table, schema version, producer."""
    return {
        b"talktime.table": table.encode(),
        b"talktime.schema_version": str(SCHEMA_VERSION).encode(),
        b"talktime.producer": f"talktime {__version__}".encode(),
    }


def to_arrow(table: str, frame: pl.DataFrame) -> pa.Table:
    """The frame checked against the table's declared schema, as Arrow with our metadata."""
    expected = TABLES[table]
    if frame.schema != expected:
        raise StorageError(f"{table}: output schema {dict(frame.schema)} differs from the declared one")
    arrow = frame.to_arrow()
    return arrow.replace_schema_metadata(table_metadata(table))


def write_parquet_atomic(arrow: pa.Table, path: Path) -> None:
    """Write to a temporary sibling, fsync, then rename over `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(arrow, tmp, compression=PARQUET_COMPRESSION, row_group_size=ROW_GROUP_SIZE, write_statistics=True)
    with tmp.open("rb") as handle:
        os.fsync(handle.fileno())
    tmp.replace(path)


def write_batch(frames: dict[str, pl.DataFrame], out: Path, batch_id: str) -> dict[str, int]:
    """Write one batch's four tables; returns rows written per table."""
    try:
        for table, frame in frames.items():
            write_parquet_atomic(to_arrow(table, frame), out / table / f"part-{batch_id}.parquet")
    except OSError as exc:
        raise StorageError(f"cannot write to {out}: {exc.strerror or exc}") from exc
    return {table: frame.height for table, frame in frames.items()}


def read_table(out: Path, table: str) -> pl.DataFrame:
    """All rows of one output table (empty, with the declared schema, when nothing was written)."""
    files = sorted((out / table).rglob("*.parquet"))
    if not files:
        return pl.DataFrame(schema=TABLES[table])
    return pl.read_parquet(files)
