"""Outputs written by schema version 1 stay readable and compactable under version 2.

A version 1 `speaker_metrics` file lacks the three conversation columns (`ADDED_COLUMNS`). Every
read point of talktime (`read_table`, `compact`, `verify`, the status's talk time, the rewrite of
superseded rows) gives its rows those columns as nulls; they are not recomputed, except by
fetching the ids again (`--refetch succeeded`), which replaces their rows.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from flows.batch import BatchSpec, stage_outcomes
from flows.outcomes import Outcome
from flows.storage.commit import read_every_file
from flows.storage.compact import compact
from flows.storage.dataset import Dataset
from flows.storage.reader import read_table
from flows.storage.status import output_status
from flows.storage.store import Store
from flows.storage.verify import verify
from tests.crash_driver import ingest
from tests.helpers import FETCHED_AT, item
from transforms.schemas import ADDED_COLUMNS, SPEAKER_METRICS, TABLES, conform_table

NEW = list(ADDED_COLUMNS["speaker_metrics"])
KEYS = ["transcription_id", "speaker"]


def make_v1(path: Path) -> set[str]:
    """Rewrite a v2 speaker_metrics file as version 1 wrote it; the ids it holds."""
    table = pq.read_table(path)
    metadata = dict(table.schema.metadata or {})
    assert metadata[b"talktime.schema_version"] == b"2"
    metadata[b"talktime.schema_version"] = b"1"
    old = table.drop_columns(NEW).replace_schema_metadata(metadata)
    assert old.column_names == [c for c in SPEAKER_METRICS if c not in NEW]
    pq.write_table(old, path, compression="zstd")
    return set(old.column("transcription_id").to_pylist())


def files(out: Path) -> list[Path]:
    return sorted((out / "speaker_metrics").rglob("*.parquet"))


@pytest.fixture(scope="module")
def mixed(tmp_path_factory: pytest.TempPathFactory, inputs: list[str]) -> tuple[Path, pl.DataFrame, set[str]]:
    """An output with one v1 speaker_metrics file (the first of the glob) among v2 ones; the rows
    a reader should see (v2 values, nulls for the v1 file's ids) and those ids."""
    out = tmp_path_factory.mktemp("mixed")
    ingest(str(out), 4, inputs)
    before = read_table(str(out), "speaker_metrics")
    assert len(files(out)) >= 2
    old_ids = make_v1(files(out)[0])
    assert old_ids and set(before["transcription_id"]) - old_ids
    is_old = pl.col("transcription_id").is_in(sorted(old_ids))
    expected = before.with_columns(pl.when(~is_old).then(pl.col(c)).alias(c) for c in NEW).sort(KEYS)
    return out, expected, old_ids


def test_conform_table_adds_only_the_added_columns_as_typed_nulls() -> None:
    v1 = pl.DataFrame({c: [None] for c in SPEAKER_METRICS if c not in NEW}).with_columns(
        pl.lit("x").alias("unknown_extra")
    )
    got = conform_table(v1.select(reversed(v1.columns)), "speaker_metrics")
    assert got.schema == SPEAKER_METRICS
    assert got.select(NEW).null_count().row(0) == (1, 1, 1)
    with pytest.raises(pl.exceptions.ColumnNotFoundError):  # not an older version: a broken file
        conform_table(v1.drop("talk_time_ms"), "speaker_metrics")


def test_read_table_gives_v1_rows_the_new_columns_as_nulls(mixed: tuple[Path, pl.DataFrame, set[str]]) -> None:
    out, expected, old_ids = mixed
    got = read_table(str(out), "speaker_metrics")
    assert got.schema == SPEAKER_METRICS
    assert got.sort(KEYS).equals(expected)
    old = got.filter(pl.col("transcription_id").is_in(sorted(old_ids)))
    assert old.select(NEW).null_count().row(0) == (old.height,) * 3
    assert read_every_file(Store(str(out)), "speaker_metrics").sort(KEYS).equals(expected)


def test_status_and_verify_read_a_mixed_output(mixed: tuple[Path, pl.DataFrame, set[str]]) -> None:
    out, expected, _ = mixed
    status = output_status(str(out))
    assert status.talk_by_speaker is not None and not status.notes
    total_ms = status.talk_by_speaker["talk_minutes"].sum() * 60_000
    assert total_ms == pytest.approx(expected["talk_time_ms"].sum(), rel=1e-3)  # talk_minutes is rounded
    assert verify(str(out)).consistent


def test_duckdb_union_by_name_reads_mixed_files(mixed: tuple[Path, pl.DataFrame, set[str]]) -> None:
    out, expected, _ = mixed
    glob = f"{out}/speaker_metrics/**/*.parquet"
    got = duckdb.sql(f"SELECT * FROM read_parquet('{glob}', union_by_name = true)").pl()
    assert got.columns == [*SPEAKER_METRICS.names(), "fetched_date"]  # DuckDB detects the Hive partition
    got = got.drop("fetched_date")
    assert got.cast(dict(SPEAKER_METRICS)).sort(KEYS).equals(expected)  # type: ignore[arg-type]
    # Without union_by_name DuckDB takes the first file's columns: the new ones are dropped.
    plain = duckdb.sql(f"SELECT * FROM read_parquet('{glob}')").pl()
    assert not set(NEW) & set(plain.columns)


def test_polars_needs_the_schema_and_missing_columns_insert(mixed: tuple[Path, pl.DataFrame, set[str]]) -> None:
    out, expected, _ = mixed
    glob = f"{out}/speaker_metrics/**/*.parquet"
    with pytest.raises(pl.exceptions.SchemaError, match="extra column"):  # the first file (v1) sets the schema
        pl.read_parquet(glob)
    got = pl.scan_parquet(glob, schema=SPEAKER_METRICS, missing_columns="insert").collect()
    assert got.schema == SPEAKER_METRICS
    assert got.sort(KEYS).equals(expected)


def test_pandas_needs_the_v2_schema(mixed: tuple[Path, pl.DataFrame, set[str]]) -> None:
    out, expected, _ = mixed
    assert not set(NEW) & set(pd.read_parquet(out / "speaker_metrics").columns)  # silently dropped
    schema = pq.read_schema(files(out)[-1])  # a v2 file
    got = pd.read_parquet(out / "speaker_metrics", schema=schema)
    assert list(got.columns) == SPEAKER_METRICS.names()
    assert pl.from_pandas(got).cast(dict(SPEAKER_METRICS)).sort(KEYS).equals(expected)  # type: ignore[arg-type]


def test_compact_merges_v1_and_v2_files_into_a_v2_file(
    tmp_path: Path, mixed: tuple[Path, pl.DataFrame, set[str]]
) -> None:
    source, expected, _ = mixed
    out = tmp_path / "out"
    pa.fs.copy_files(str(source), str(out))  # the module's output stays as it was for the other tests
    before, after = compact(str(out))
    assert after < before and len(files(out)) == 1
    (merged,) = files(out)
    assert pq.read_schema(merged).metadata[b"talktime.schema_version"] == b"2"
    assert pl.read_parquet(merged).schema == SPEAKER_METRICS  # a plain read works again
    assert read_table(str(out), "speaker_metrics").sort(KEYS).equals(expected)  # same rows, nulls not recomputed
    assert verify(str(out)).consistent
    for table in TABLES:
        assert read_every_file(Store(str(out)), table).schema == TABLES[table]


def commit(out: Path, outcomes: list[Outcome], refetch: tuple[str, ...] = ()) -> None:
    """Stage and commit these outcomes as one batch (`refetch`: as `talktime run --refetch` does)."""
    with Dataset.writer(str(out), "tests") as (dataset, _):
        if refetch:
            dataset.fetch_rows([o.transcription_id for o in outcomes])
        staged = stage_outcomes(str(out), BatchSpec.new(1, dataset.snapshot(), refetch=refetch), outcomes)
        dataset.commit(staged.files, staged.polled, run_batches=frozenset())


def test_refetching_an_id_of_a_v1_file_recomputes_its_rows(tmp_path: Path) -> None:
    items = [item("doctor", 0, 10, "Why?"), item("patient", 12, 20, "Because.")]
    a, b = "00000000-0000-4000-8000-00000000000a", "00000000-0000-4000-8000-00000000000b"
    outcome = {tid: Outcome(tid, "succeeded", FETCHED_AT, api_version="2024-04-22", items=items) for tid in (a, b)}
    commit(tmp_path, [outcome[a], outcome[b]])
    (old,) = files(tmp_path)
    make_v1(old)
    commit(tmp_path, [outcome[a]])  # final already: skipped, nothing rewritten
    assert read_table(str(tmp_path), "speaker_metrics")["question_count"].null_count() == 4
    commit(tmp_path, [outcome[a]], refetch=("succeeded",))  # a's rows leave the v1 file, rewritten as v2
    got = read_table(str(tmp_path), "speaker_metrics").sort(KEYS)
    assert got.filter(pl.col("transcription_id") == a).select(NEW).rows() == [(1, 10, None), (0, 8, 2.0)]
    assert got.filter(pl.col("transcription_id") == b).select(NEW).null_count().row(0) == (2, 2, 2)
    assert not old.exists()  # never rewritten in place: b's rows moved to a new file, of this version
    assert {pq.read_schema(p).metadata[b"talktime.schema_version"] for p in files(tmp_path)} == {b"2"}
    assert verify(str(tmp_path)).consistent


def make_newer(path: Path) -> bytes:
    """Mark a data file as written by a future schema version; its bytes."""
    table = pq.read_table(path)
    metadata = dict(table.schema.metadata or {}) | {b"talktime.schema_version": b"99"}
    pq.write_table(table.replace_schema_metadata(metadata), path, compression="zstd")
    return path.read_bytes()


def test_a_file_of_a_newer_version_is_never_rewritten(tmp_path: Path) -> None:
    from flows.cli import main
    from flows.errors import StorageError

    items = [item("doctor", 0, 10, "Why?"), item("patient", 12, 20, "Because.")]
    tids = [f"00000000-0000-4000-8000-00000000000{n}" for n in range(3)]
    for tid in tids:  # three files per table in one partition: compact would merge them
        commit(tmp_path, [Outcome(tid, "succeeded", FETCHED_AT, api_version="2024-04-22", items=items)])
    newer = files(tmp_path)[0]
    content = make_newer(newer)
    assert main(["compact", "--out", str(tmp_path)]) == 2  # one line: upgrade talktime first
    assert newer.read_bytes() == content
    with pytest.raises(StorageError, match="written by a newer talktime"):  # nor by a run replacing its rows
        commit(tmp_path, [Outcome(tids[0], "succeeded", FETCHED_AT, items=items)], refetch=("succeeded",))
    assert newer.read_bytes() == content
