"""A lost ledger is rebuilt from the data files; an unreadable one is one clean error line."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from flows import runs
from flows.batch import fetch_batch
from flows.cli import main
from flows.emulator.app import DEFAULT_API_KEY, EmulatorConfig
from flows.emulator.server import EmulatorServer, load_responses
from flows.errors import StorageError
from flows.outcomes import Outcome
from flows.secrets import API_KEY_ENV
from flows.settings import RunSettings
from flows.storage.commit import read_every_file
from flows.storage.ledger import LEDGER_SCHEMA, UNREADABLE_LEDGER, ledger_from_data
from flows.storage.ledgerlog import load_ledger
from flows.storage.store import Store
from flows.summary import RunSummary
from tests.conftest import PRIMOCK
from tests.helpers import FETCHED_AT, TID, commit_outcomes, drop_ledger, ledger_files, newest_ledger_file
from transforms.schemas import TABLES

A, B, C = (f"00000000-0000-4000-8000-00000000000{n}" for n in range(3))
T0 = datetime(2026, 11, 23, 12, tzinfo=UTC)
NOT_FOUND = "00000000-0000-4000-8000-000000000404"


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[EmulatorServer]:
    """The API emulator serving eight consultations (any other id is a 404)."""
    monkeypatch.setenv(API_KEY_ENV, DEFAULT_API_KEY)
    responses = dict(list(load_responses([PRIMOCK]).items())[:8])
    with EmulatorServer(EmulatorConfig(responses=responses)) as running:
        yield running


def poll(server: EmulatorServer, out: Path | str, ids: list[str], ids_file: Path) -> RunSummary:
    """`talktime run`'s body without Prefect (a thread pool runs the batch tasks), 3 ids per batch."""
    ids_file.write_text("\n".join(ids) + "\n")
    settings = RunSettings(api_url=server.api_url, ids_file=str(ids_file), out=str(out), batch_size=3, max_wait_s=0)
    with ThreadPoolExecutor(max_workers=2) as pool:
        return runs.poll(settings, lambda spec: pool.submit(fetch_batch, settings, spec), logging.getLogger("test"))


def manifest(server: EmulatorServer) -> list[str]:
    return [*server.app.config.responses, NOT_FOUND]


def every_row(out: Path | str) -> dict[str, pl.DataFrame]:
    store = Store(str(out))
    return {table: read_every_file(store, table).sort(pl.all()) for table in TABLES}


def test_a_deleted_ledger_is_rebuilt_so_a_rerun_fetches_and_duplicates_nothing(
    tmp_path: Path, server: EmulatorServer, caplog: pytest.LogCaptureFixture
) -> None:
    out = tmp_path / "out"
    poll(server, out, manifest(server), tmp_path / "ids.txt")
    before, requests = every_row(out), sum(server.app.requests.values())
    drop_ledger(out)
    caplog.set_level(logging.INFO)
    summary = poll(server, out, manifest(server), tmp_path / "ids.txt")
    assert sum(server.app.requests.values()) == requests  # every id was final: nothing fetched again
    assert summary.already_final == len(manifest(server))
    after = every_row(out)
    for table in TABLES:
        assert_frame_equal(after[table], before[table])
    files = len(list((out / "transcriptions").rglob("*.parquet")))
    assert f"the ledger was missing: rebuilt from {files} data files" in caplog.text


def test_the_rebuilt_ledger_points_every_id_at_its_newest_batch(tmp_path: Path) -> None:
    rows = pl.DataFrame(
        {
            "transcription_id": [A, A, B, C],
            "status": ["ongoing", "succeeded", "error", "error"],
            "error_code": [None, None, "retries_exhausted", "invalid_id"],
            "fetched_at": [T0, T0.replace(hour=13), T0, T0],
            "batch_id": ["b1", "b2", "b1", "b1"],
            "fetched_date": ["2026-11-23", "2026-11-24", "2026-11-23", "2026-11-23"],
        },
        schema_overrides={"fetched_at": pl.Datetime("us", "UTC")},
    )
    expected = pl.DataFrame(
        {
            "transcription_id": [A, B, C],
            "status": ["succeeded", "error", "error"],
            "final": [True, False, True],
            "first_seen_at": [T0, T0, T0],
            "last_polled_at": [T0.replace(hour=13), T0, T0],
            "attempts": [2, 1, 1],
            "batch_id": ["b2", "b1", "b1"],
            "fetched_date": ["2026-11-24", "2026-11-23", "2026-11-23"],
        },
        schema=LEDGER_SCHEMA,
    )
    assert_frame_equal(ledger_from_data(rows), expected)


def test_a_new_location_still_has_an_empty_ledger(tmp_path: Path) -> None:
    assert load_ledger(Store(str(tmp_path))).equals(pl.DataFrame(schema=LEDGER_SCHEMA))


@pytest.mark.parametrize("cut", [0, 10, -20], ids=["empty", "first-bytes", "footer-cut"])
def test_an_unreadable_ledger_is_a_storage_error_naming_the_repair(tmp_path: Path, cut: int) -> None:
    commit_outcomes(str(tmp_path), [Outcome(TID, "failed", FETCHED_AT, error_code="422")])
    ledger = newest_ledger_file(tmp_path)
    ledger.write_bytes(ledger.read_bytes()[:cut])
    with pytest.raises(StorageError, match=re.escape(UNREADABLE_LEDGER)):
        load_ledger(Store(str(tmp_path)))


@pytest.mark.parametrize("command", ["compact", "ingest", "run"])
def test_a_truncated_ledger_is_one_line_and_exit_2_on_the_command_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    commit_outcomes(str(tmp_path), [Outcome(TID, "failed", FETCHED_AT, error_code="422")])
    ledger = newest_ledger_file(tmp_path)
    ledger.write_bytes(ledger.read_bytes()[:-20])
    (tmp_path / "ids.txt").write_text(TID + "\n")
    options = {
        "compact": [],
        "ingest": ["--input", str(PRIMOCK)],
        "run": ["--api-url", "http://127.0.0.1:9", "--ids", str(tmp_path / "ids.txt"), "--api-key", "k"],
    }[command]
    assert main([command, "--out", str(tmp_path), *options]) == 2  # before Prefect starts a flow run
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err and "ArrowInvalid" not in err
    assert err.startswith(f"talktime: error: {UNREADABLE_LEDGER}")
    assert "talktime verify --out DIR --repair" in err


def test_read_table_reads_through_the_rebuilt_ledger_or_refuses_an_unreadable_one(tmp_path: Path) -> None:
    from flows.storage.reader import read_table

    out = str(tmp_path)
    commit_outcomes(out, [Outcome(TID, "ongoing", FETCHED_AT)])
    commit_outcomes(out, [Outcome(TID, "failed", FETCHED_AT, error_code="422")])
    ledger = newest_ledger_file(tmp_path)
    stored = {path: path.read_bytes() for path in ledger_files(tmp_path)}
    assert read_table(out, "transcriptions")["status"].to_list() == ["failed"]
    drop_ledger(tmp_path)
    assert read_table(out, "transcriptions")["status"].to_list() == ["failed"]  # the newest batch, as rebuilt
    for path, data in stored.items():
        path.write_bytes(data[:-20] if path == ledger else data)
    with pytest.raises(StorageError, match=re.escape(UNREADABLE_LEDGER)):
        read_table(out, "transcriptions")
