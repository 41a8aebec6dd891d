"""Readers of a plain glob (polars, DuckDB) hammering the tables while supersedes and compactions
commit: they may see a whole row twice for a moment (the window of `flows.storage.commit`), never a
wrong value, because no data file is ever rewritten under its name."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import polars as pl
import pytest

from flows.outcomes import Outcome
from flows.storage.compact import compact
from tests.helpers import commit_outcomes, item

IDS = [f"00000000-0000-4000-8000-{n:012d}" for n in range(200)]
NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
CYCLES = 4


def crid(tid: str) -> str:
    return f"request-{tid[-6:]}"


def outcome(tid: str, status: str) -> Outcome:
    items = [item("doctor", 0, 1000), item("patient", 1000, 3000)] if status == "succeeded" else None
    return Outcome(tid, status, NOW, api_version="2024-04-22", client_request_id=crid(tid), items=items)


def check(frame: pl.DataFrame) -> int:
    """Rows whose values are wrong: an unknown id, a status never written, or a client_request_id
    that is not its id's (what mixing two versions of a file produced before)."""
    bad = frame.filter(
        ~pl.col("transcription_id").is_in(IDS)
        | ~pl.col("status").is_in(["ongoing", "succeeded"])
        | (pl.col("client_request_id") != pl.lit("request-") + pl.col("transcription_id").str.slice(-6))
    )
    return bad.height


def test_glob_readers_never_see_a_wrong_value_while_supersedes_and_compactions_commit(tmp_path: Path) -> None:
    out = str(tmp_path / "out")
    commit_outcomes(out, [outcome(tid, "ongoing") for tid in IDS[:100]])
    glob = f"{out}/transcriptions/**/*.parquet"
    stop = threading.Event()
    results: dict[str, list[int]] = {"polars": [], "duckdb": []}
    errors: dict[str, int] = {"polars": 0, "duckdb": 0}

    def read(kind: str) -> None:
        connection = duckdb.connect()
        while not stop.is_set():
            try:
                if kind == "polars":
                    frame = pl.read_parquet(glob, hive_partitioning=True)
                else:
                    rows = connection.execute(
                        f"SELECT transcription_id, status, client_request_id FROM read_parquet('{glob}')"
                    ).fetchall()
                    frame = pl.DataFrame(rows, schema=["transcription_id", "status", "client_request_id"], orient="row")
            except (OSError, pl.exceptions.PolarsError, duckdb.Error):
                errors[kind] += 1  # a file deleted between the listing and the read: read again
                continue
            results[kind].append(check(frame))

    readers = [threading.Thread(target=read, args=(kind,)) for kind in ("polars", "duckdb")]
    for reader in readers:
        reader.start()
    try:
        for cycle in range(CYCLES):
            half = IDS[:100] if cycle % 2 == 0 else IDS[100:]
            commit_outcomes(out, [outcome(tid, "succeeded") for tid in half[:50]])  # supersedes ongoing rows
            commit_outcomes(out, [outcome(tid, "ongoing") for tid in (IDS[100:] if cycle % 2 == 0 else [])])
            compact(out)
    finally:
        stop.set()
        for reader in readers:
            reader.join()
    assert results["polars"] and results["duckdb"]  # both read, many times
    assert sum(results["polars"]) == 0 and sum(results["duckdb"]) == 0, (results, errors)


def test_no_commit_places_a_file_where_one_already_is(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Supersedes, compactions and repairs write new names: a placement never replaces a file."""
    from flows.storage.store import Store
    from flows.storage.verify import repair

    out = str(tmp_path / "out")
    replaced: list[str] = []
    place = Store.place

    def checked(self: Store, src: str, dst: str) -> None:
        if self.exists(dst):
            replaced.append(dst)
        place(self, src, dst)

    monkeypatch.setattr(Store, "place", checked)
    commit_outcomes(out, [outcome(tid, "ongoing") for tid in IDS[:10]])
    commit_outcomes(out, [outcome(tid, "succeeded") for tid in IDS[:5]])  # half of the first file's rows move
    commit_outcomes(out, [outcome(tid, "succeeded") for tid in IDS[5:10]])  # the rest: the file empties
    compact(out)
    doubled = next(Path(out, "speaker_metrics").rglob("*.parquet"))
    pl.concat([pl.read_parquet(doubled)] * 2).write_parquet(doubled)  # duplicated rows for repair to drop
    assert repair(out).after.consistent
    assert replaced == []
