"""Layout and format of the datasets: partitions, readers, metadata, compaction, schema checks."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import polars as pl
import pyarrow.parquet as pq
import pytest

from flows.errors import StorageError
from flows.storage.compact import compact, partitions
from flows.storage.store import Store
from tests.conftest import SAMPLES
from tests.crash_driver import ingest
from tests.flows.storage.test_storage import assert_same, snapshot
from transforms.schemas import SCHEMA_VERSION, TABLES


@pytest.fixture
def out(tmp_path: Path, inputs: list[str]) -> Path:
    ingest(str(tmp_path), 2, inputs)  # many small batches, so compaction has work
    return tmp_path


def test_polars_and_duckdb_read_the_hive_partitions(out: Path) -> None:
    scanned = pl.scan_parquet(f"{out}/transcriptions/**/*.parquet", hive_partitioning=True).collect()
    assert "fetched_date" in scanned.columns and scanned["transcription_id"].is_unique().all()
    glob = f"{out}/transcriptions/**/*.parquet"
    query = f"SELECT count(*), count(DISTINCT fetched_date) FROM read_parquet('{glob}', hive_partitioning = true)"
    rows = duckdb.sql(query).fetchall()[0]
    assert rows == (scanned.height, scanned["fetched_date"].n_unique())


def test_files_carry_schema_version_producer_statistics_and_sorted_rows(out: Path) -> None:
    for table in TABLES:
        for path in sorted((out / table).rglob("*.parquet")):
            parquet = pq.ParquetFile(path)
            meta = parquet.schema_arrow.metadata
            assert meta[b"talktime.table"] == table.encode()
            assert meta[b"talktime.schema_version"] == str(SCHEMA_VERSION).encode()
            assert meta[b"talktime.producer"].startswith(b"talktime ")
            if parquet.metadata.num_rows:
                column = parquet.metadata.row_group(0).column(0)
                assert column.compression == "ZSTD" and column.statistics is not None
            ids = pl.read_parquet(path, hive_partitioning=False)["transcription_id"]
            assert ids.equals(ids.sort())


def test_compaction_merges_files_and_changes_no_row(out: Path) -> None:
    before = snapshot(out)
    files_before, files_after = compact(str(out))
    assert files_before > files_after == 4 * len(partitions(Store(str(out))))
    assert_same(snapshot(out), before)
    assert compact(str(out)) == (files_after, files_after)


def test_replacement_still_works_after_compaction(out: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    compact(str(out))
    event = json.loads((SAMPLES / "responses" / "demo_extra.ndjson").read_text().splitlines()[2])
    event |= {"status": "succeeded", "payload": {"transcript": []}}
    update = tmp_path_factory.mktemp("update") / "update.json"
    update.write_text(json.dumps(event))
    ingest(str(out), 2, [str(update)])
    rows = snapshot(out)["transcriptions"].filter(pl.col("transcription_id") == event["id"].lower())
    assert rows["status"].to_list() == ["succeeded"]


def test_a_frame_that_does_not_match_the_schema_fails_before_writing(tmp_path: Path) -> None:
    from flows.storage.commit import stage_tables

    frames = {table: pl.DataFrame(schema=schema) for table, schema in TABLES.items()}
    frames["transcriptions"] = frames["transcriptions"].with_columns(pl.col("item_count").cast(pl.Int64))
    with pytest.raises(StorageError, match="differs from the declared"):
        stage_tables(Store(str(tmp_path)), "b", frames)
    assert list(tmp_path.rglob("*.parquet")) == []
