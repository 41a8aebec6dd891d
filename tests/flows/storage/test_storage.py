"""The datasets' guarantees: idempotent, crash-safe (kill -9), replacement, readable while written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import polars as pl
import pytest

from flows.storage.commit import read_every_file
from flows.storage.store import Store
from tests.conftest import PRIMOCK, SAMPLES
from tests.crash_driver import ingest
from tests.crash_hook import CRASH_ENV, spread_points
from transforms.schemas import TABLES

ROOT = Path(__file__).resolve().parents[3]
KILL_POINTS = 8  # by default; under `slow`, every step


def snapshot(out: Path | str) -> dict[str, pl.DataFrame]:
    """Every table's rows, without the columns that depend on when they were written."""
    store = Store(str(out))
    return {table: read_every_file(store, table).drop("fetched_at", strict=False).sort(pl.all()) for table in TABLES}


def assert_same(a: dict[str, pl.DataFrame], b: dict[str, pl.DataFrame]) -> None:
    for table in TABLES:
        assert a[table].equals(b[table]), table


def nothing_pending(out: Path | str) -> bool:
    store = Store(str(out))
    return not store.list("_talktime/staging") and not store.list("_talktime/commits")


@pytest.fixture(scope="module")
def inputs() -> list[str]:
    """Twelve consultations, plus failed, ongoing and messy ones."""
    return [*map(str, sorted(PRIMOCK.glob("*.json"))[:12]), str(SAMPLES / "responses" / "demo_extra.ndjson")]


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory, inputs: list[str]) -> tuple[dict[str, pl.DataFrame], int]:
    out = tmp_path_factory.mktemp("clean")
    ops = ingest(str(out), 4, inputs)
    return snapshot(out), ops


def test_one_row_per_transcription_and_every_item_accounted_for(clean: tuple[dict, int], inputs: list[str]) -> None:
    tables, _ = clean
    assert tables["transcriptions"]["transcription_id"].is_unique().all()
    assert tables["transcriptions"].height == 16
    items = tables["transcript_items"].height + tables["rejected_items"].height
    expected = sum(len(json.loads(Path(p).read_text())["payload"]["transcript"]) for p in inputs[:12]) + 9
    assert items == expected


def test_rerun_changes_nothing(tmp_path: Path, inputs: list[str], clean: tuple[dict, int]) -> None:
    def data_files() -> list[Path]:
        return sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*.parquet") if "_talktime" not in p.parts)

    ingest(str(tmp_path), 4, inputs)
    files = data_files()
    ingest(str(tmp_path), 4, inputs)
    assert data_files() == files
    assert_same(snapshot(tmp_path), clean[0])


def test_ongoing_then_succeeded_leaves_only_the_final_state(tmp_path: Path, inputs: list[str]) -> None:
    ingest(str(tmp_path / "out"), 4, inputs)
    ongoing_id = json.loads((SAMPLES / "responses" / "demo_extra.ndjson").read_text().splitlines()[2])["id"].lower()
    later = tmp_path / "later"
    later.mkdir()
    event = json.loads((SAMPLES / "responses" / "demo_extra.ndjson").read_text().splitlines()[2])
    event |= {
        "status": "succeeded",
        "payload": {"transcript": [{"speaker": "doctor", "start_time_ms": 0, "end_time_ms": 5}]},
    }
    (later / "update.json").write_text(json.dumps({"id": "e", "type": "transcribe_async.succeeded", "data": event}))
    ingest(str(tmp_path / "out"), 4, [str(later / "update.json")])
    rows = snapshot(tmp_path / "out")["transcriptions"].filter(pl.col("transcription_id") == ongoing_id)
    assert rows["status"].to_list() == ["succeeded"]
    assert snapshot(tmp_path / "out")["transcriptions"].height == 16
    ingest(str(tmp_path / "out"), 4, inputs)  # the old ongoing record again: the id is final now, nothing changes
    assert snapshot(tmp_path / "out")["transcriptions"].filter(pl.col("transcription_id") == ongoing_id)[
        "status"
    ].to_list() == ["succeeded"]


def kill_ingest(out: str, point: int, inputs: list[str]) -> None:
    """Run the ingest steps in a process killed (SIGKILL) before its `point`-th storage step."""
    env = os.environ | {CRASH_ENV: str(point)}
    command = [sys.executable, "-m", "tests.crash_driver", out, "4", *inputs]
    killed = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, timeout=120, check=False)
    assert killed.returncode == -9, killed.stderr.decode()[-2000:]


def crash_then_rerun(outs: dict[int, str], inputs: list[str]) -> None:
    """For each kill point and its output: an ingest killed there (two processes at a time, one per
    core), then, in this process, the same ingest again."""
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda point: kill_ingest(outs[point], point, inputs), outs))
    for out in outs.values():
        ingest(out, 4, inputs)


def kill_points(total_ops: int, count: int | None) -> list[int]:
    """`count` kill points spread over the run (one drawn at random in each of `count` equal stretches
    of its steps; TALKTIME_CRASH_SEED changes the draw), or, with None, every step."""
    if count is None:
        return list(range(1, total_ops + 1))
    return spread_points(total_ops, count, os.environ.get("TALKTIME_CRASH_SEED", "2026"))


@pytest.mark.parametrize(
    "count",
    [KILL_POINTS, pytest.param(None, marks=[pytest.mark.slow, pytest.mark.timeout(1200)])],
    ids=["spread", "every-step"],
)
def test_kill_9_at_random_points_then_rerun_equals_a_clean_run(
    count: int | None, tmp_path: Path, inputs: list[str], clean: tuple[dict, int]
) -> None:
    expected, total_ops = clean
    outs = {point: str(tmp_path / f"crash-{point}") for point in kill_points(total_ops, count)}
    crash_then_rerun(outs, inputs)
    for out in outs.values():
        assert nothing_pending(out), out
        assert_same(snapshot(out), expected)


def test_a_reader_never_sees_a_partial_file_or_duplicates(tmp_path: Path, inputs: list[str]) -> None:
    reads: list[int] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def read_loop() -> None:
        while True:
            finished = stop.is_set()  # read once more after the writer is done
            try:
                frame = pl.read_parquet(f"{tmp_path}/transcriptions/**/*.parquet")
                assert frame["transcription_id"].is_unique().all()
                reads.append(frame.height)
            except (FileNotFoundError, pl.exceptions.ComputeError) as exc:
                if "expanded paths were empty" not in str(exc) and not isinstance(exc, FileNotFoundError):
                    errors.append(exc)  # anything but "nothing committed yet"
            except BaseException as exc:
                errors.append(exc)
            if finished:
                return

    reader = threading.Thread(target=read_loop)
    reader.start()
    try:
        ingest(str(tmp_path), 2, inputs)
    finally:
        stop.set()
        reader.join()
    assert errors == []
    assert reads and reads == sorted(reads)


def test_a_ledger_reader_sees_whole_commits_even_while_rows_are_replaced(tmp_path: Path, inputs: list[str]) -> None:
    """Replacements committed while a reader reads: never a duplicate, never a gap."""
    from datetime import UTC, datetime

    from flows.outcomes import Outcome
    from flows.storage.reader import read_table as read_current
    from tests.helpers import commit_outcomes

    out = str(tmp_path / "out")
    ingest(out, 4, inputs)
    expected_ids = set(snapshot(out)["transcriptions"]["transcription_id"])
    pending = json.loads((SAMPLES / "responses" / "demo_extra.ndjson").read_text().splitlines()[2])["id"].lower()
    errors: list[str] = []
    reads = 0
    stop = threading.Event()

    def read_loop() -> None:
        nonlocal reads
        while not stop.is_set():
            ids = read_current(out, "transcriptions")["transcription_id"]
            reads += 1
            if not ids.is_unique().all() or set(ids) != expected_ids:
                errors.append(f"{ids.len()} rows, {ids.n_unique()} distinct")

    reader = threading.Thread(target=read_loop)
    reader.start()
    try:
        for n in range(30):  # the same id flips between two pending states: a replacement each time
            status = "error" if n % 2 == 0 else "ongoing"
            outcome = [
                Outcome(pending, status, datetime.now(UTC), error_code="retries_exhausted" if n % 2 == 0 else None)
            ]
            commit_outcomes(out, outcome)
    finally:
        stop.set()
        reader.join()
    assert errors == [] and reads > 0
    assert snapshot(out)["transcriptions"]["transcription_id"].is_unique().all()


def test_across_batches_terminal_beats_ongoing_and_the_last_read_wins(tmp_path: Path) -> None:
    tid = "5b0c0a44-8a38-4a0e-9d52-6f1b0c6f7e99"
    item = {"speaker": "doctor", "start_time_ms": 0, "end_time_ms": 10, "text": "hello"}
    bodies = [
        {"id": tid, "status": "ongoing", "client_request_id": "first"},
        {"id": tid, "status": "succeeded", "client_request_id": "second", "payload": {"transcript": [item]}},
        {"id": tid, "status": "ongoing", "client_request_id": "third"},
        {"id": tid, "status": "succeeded", "client_request_id": "fourth", "payload": {"transcript": [item, item]}},
        {"id": tid, "status": "ongoing", "client_request_id": "fifth"},
    ]
    source = tmp_path / "events.ndjson"
    source.write_text("".join(json.dumps(b) + "\n" for b in bodies))
    ingest(str(tmp_path / "out"), 1, [str(source)])  # one record per batch: every rule crosses batches
    tables = snapshot(tmp_path / "out")
    assert tables["transcriptions"].select("client_request_id", "status").rows() == [("fourth", "succeeded")]
    assert tables["transcript_items"].height == 2
    assert nothing_pending(tmp_path / "out")
