"""One writer per output location: the lease, on local disk and on S3 (moto's real server on loopback)."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from flows import runs
from flows.batch import read_batch
from flows.cli import main
from flows.errors import StorageError
from flows.settings import IngestSettings
from flows.storage.commit import recover
from flows.storage.dataset import Dataset
from flows.storage.lease import DEFAULT_LEASE_TTL, LEASE_PATH, Lease, LeaseHeldError, LeaseLostError, LeaseRecord
from flows.storage.store import Store
from flows.summary import RunSummary
from tests.conftest import FLOW_TEST_MARKS
from tests.flows.storage.test_object_storage import s3_endpoint, s3_url
from tests.flows.storage.test_storage import ROOT, assert_same, nothing_pending, snapshot
from tests.flows.test_runs import staged_batch

__all__ = ["s3_endpoint"]  # a fixture, used by name
WRITERS = 8


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture(params=["local", "s3"])
def out(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An output location on local disk, or on S3."""
    if request.param == "local":
        return str(tmp_path / "out")
    return s3_url(request.getfixturevalue("s3_endpoint"))


def current(out: str) -> LeaseRecord | None:
    found = Store(out).read_tagged(LEASE_PATH)
    return LeaseRecord.from_json(found[0]) if found else None


def test_a_second_writer_is_refused_and_told_who_holds_the_output_until_when(out: str) -> None:
    first = Lease(Store(out), "first-run")
    first.acquire()
    with pytest.raises(LeaseHeldError) as refused:
        Lease(Store(out), "second-run").acquire()
    message = str(refused.value)
    assert f"owner {socket.gethostname()}:{os.getpid()}, run first-run" in message
    assert "until 20" in message and "_talktime/lease.json if that writer is dead" in message
    assert "\n" not in message and "endpoint_override" not in message
    first.release()
    assert current(out) is None
    Lease(Store(out), "second-run").acquire()  # free again


def test_the_cli_refuses_a_second_writer_with_one_line_and_exit_2(out: str, capsys: pytest.CaptureFixture[str]) -> None:
    holder = Lease(Store(out), "holder")
    holder.acquire()
    assert main(["compact", "--out", out]) == 2
    err = capsys.readouterr().err
    assert err.startswith("talktime: error: another talktime writer holds") and err.count("\n") == 1
    assert "Traceback" not in err
    assert current(out) == holder.record  # untouched


def test_a_lease_is_not_taken_over_before_it_expires_and_is_after(out: str) -> None:
    clock = Clock()
    old = Lease(Store(out), "old", clock=clock)
    old.acquire()
    clock.now += DEFAULT_LEASE_TTL - timedelta(seconds=1)
    with pytest.raises(LeaseHeldError):
        Lease(Store(out), "new", clock=clock).acquire()
    clock.now += timedelta(seconds=2)
    new = Lease(Store(out), "new", clock=clock)
    stale = new.acquire()
    assert stale is not None and stale.owner.run == "old"
    record = current(out)
    assert record is not None and record.owner.run == "new" and record.expires_at == clock.now + DEFAULT_LEASE_TTL


def test_a_writer_whose_lease_was_taken_over_can_neither_renew_nor_release_it(out: str) -> None:
    clock = Clock()
    old = Lease(Store(out), "old", clock=clock)
    old.acquire()
    clock.now += DEFAULT_LEASE_TTL * 2  # old stalled for longer than the TTL
    Lease(Store(out), "new", clock=clock).acquire()
    with pytest.raises(LeaseLostError, match=r"lost its lease.*run new.*commits nothing more"):
        old.renew()
    with pytest.raises(LeaseLostError):
        old.renew()  # and stays lost
    old.release()
    record = current(out)
    assert record is not None and record.owner.run == "new"


def test_a_renewal_whose_answer_was_lost_is_recognised_as_this_writer_s_own(
    out: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = Clock()
    store = Store(out)
    lease = Lease(store, "run", clock=clock)
    lease.acquire()
    swap = store.replace_if_match

    def answer_lost(relative: str, data: bytes, tag: str) -> str | None:
        swap(relative, data, tag)  # the swap happened; its answer was lost and the retry got 412
        return None

    monkeypatch.setattr(store, "replace_if_match", answer_lost)
    clock.now += timedelta(minutes=3)
    lease.renew()  # not "another writer took it over"
    monkeypatch.undo()
    record = current(out)
    assert record is not None and record.expires_at == clock.now + DEFAULT_LEASE_TTL
    clock.now += timedelta(minutes=3)
    lease.renew()  # and the tag it holds is the stored one's
    lease.release()
    assert current(out) is None


def test_renewing_extends_the_lease_from_now(out: str) -> None:
    clock = Clock()
    lease = Lease(Store(out), "run", clock=clock)
    lease.acquire()
    clock.now += timedelta(minutes=7)
    lease.renew()
    record = current(out)
    assert record is not None and record.expires_at == clock.now + DEFAULT_LEASE_TTL
    assert record.acquired_at == clock.now - timedelta(minutes=7)


def test_a_live_writer_keeps_its_lease_renewed_in_the_background(tmp_path: Path) -> None:
    clock = Clock()
    lease = Lease(Store(str(tmp_path)), "run", clock=clock)
    lease.acquire()
    renewed = threading.Event()
    real_renew = lease.renew

    def renew() -> None:
        real_renew()
        renewed.set()

    lease.renew = renew  # type: ignore[method-assign]
    clock.now += timedelta(minutes=5)
    lease.keep_alive(interval_s=0.01)
    assert renewed.wait(timeout=10)
    lease.release()
    assert current(str(tmp_path)) is None


def test_the_lease_of_a_process_that_is_gone_is_taken_over_at_once(tmp_path: Path) -> None:
    """A writer killed with SIGKILL cannot release its lease; on its machine the next one need not wait."""
    code = (
        "import os, sys; from flows.storage.lease import Lease; from flows.storage.store import Store; "
        "Lease(Store(sys.argv[1]), 'killed').acquire(); print(os.getpid(), flush=True); os._exit(0)"
    )
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path)], cwd=ROOT, capture_output=True, check=True)
    stale = Lease(Store(str(tmp_path)), "next").acquire()
    assert stale is not None and stale.owner.pid == int(done.stdout) and stale.owner.run == "killed"


def test_of_many_writers_starting_at_once_exactly_one_wins(out: str) -> None:
    assert race(lambda i: Lease(Store(out), f"writer-{i}")) == 1


def test_of_many_writers_taking_over_one_expired_lease_at_once_exactly_one_wins(out: str) -> None:
    clock = Clock()
    Lease(Store(out), "expired", clock=clock).acquire()
    clock.now += DEFAULT_LEASE_TTL * 2
    assert race(lambda i: Lease(Store(out), f"taker-{i}", clock=clock)) == 1
    record = current(out)
    assert record is not None and record.owner.run.startswith("taker-")


def race(lease: Callable[[int], Lease]) -> int:
    """How many of WRITERS threads, released together, acquire their lease."""
    leases = [lease(i) for i in range(WRITERS)]
    for each in leases:
        _ = each.store.conditional  # build S3 clients before the start line
    start = threading.Barrier(WRITERS)

    def attempt(each: Lease) -> bool:
        start.wait()
        try:
            each.acquire()
        except LeaseHeldError:
            return False
        return True

    with ThreadPoolExecutor(WRITERS) as pool:
        return sum(pool.map(attempt, leases))


RACER = """
import sys, time
from pathlib import Path
from flows.storage.lease import Lease, LeaseHeldError
from flows.storage.store import Store
lease = Lease(Store(sys.argv[1]), "racer")
_ = lease.store.conditional
while not Path(sys.argv[2]).exists():
    time.sleep(0.001)
try:
    lease.acquire()
    print("won", flush=True)
except LeaseHeldError:
    print("held", flush=True)
sys.stdin.read()  # stay alive (a gone owner's lease may be taken over) until the parent is done
"""


def test_of_many_processes_starting_at_once_exactly_one_wins(tmp_path: Path) -> None:
    go = tmp_path / "go"
    racers = [
        subprocess.Popen(
            [sys.executable, "-c", RACER, str(tmp_path / "out"), str(go)],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(WRITERS)
    ]
    try:
        go.touch()
        results = [racer.stdout.readline().strip() for racer in racers if racer.stdout]
    finally:
        for racer in racers:
            racer.communicate(timeout=30)
    assert sorted(results) == ["held"] * (WRITERS - 1) + ["won"]


# The lease around a run (flows.runs.Run) and recovery.


def test_a_run_that_lost_its_lease_commits_nothing_more_and_does_not_retry(tmp_path: Path) -> None:
    out = str(tmp_path)
    run = runs.Run(out, logging.getLogger())
    staged = staged_batch(run, tmp_path)
    later = datetime.now(UTC) + DEFAULT_LEASE_TTL * 2
    Lease(Store(out), "taker", clock=lambda: later).acquire()  # as if this run had stalled past its TTL
    commits: list[int] = []
    real_commit = run.dataset.commit
    run.dataset.commit = lambda *a, **k: commits.append(1) or real_commit(*a, **k)  # type: ignore[method-assign]
    with pytest.raises(LeaseLostError):
        run.commit(staged, RunSummary())
    run.close()
    store = Store(out)
    assert commits == [] and not store.list("_talktime/commits") and not store.list("transcriptions")
    record = current(out)
    assert record is not None and record.owner.run == "taker"


@pytest.mark.parametrize("where", ["in a batch", "at the start"])
def test_the_lease_is_released_when_a_run_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str) -> None:
    source = tmp_path / "in.ndjson"
    source.write_text('{"id": "x", "status": "ongoing"}\n')
    settings = IngestSettings(inputs=[str(source)], out=str(tmp_path / "out"), batch_size=1, in_flight=1)

    def fail(*_: Any) -> Any:
        raise OSError("disk on fire")

    if where == "at the start":
        monkeypatch.setattr(Dataset, "snapshot", fail)
    with pytest.raises(OSError, match="disk on fire"):
        runs.ingest(settings, fail, logging.getLogger())
    assert current(settings.out) is None


def test_recovery_refuses_to_run_without_the_lease(tmp_path: Path) -> None:
    with pytest.raises(LeaseLostError):
        Dataset(str(tmp_path)).recover()
    with pytest.raises(LeaseLostError):
        recover(Store(str(tmp_path)), Lease(Store(str(tmp_path)), "never acquired"))


def test_a_second_run_leaves_the_first_run_s_batch_in_flight_alone(tmp_path: Path) -> None:
    """Before the lease, every run's start-up recovery deleted all of staging, a live writer's too."""
    out = str(tmp_path)
    first = runs.Run(out, logging.getLogger())
    staged = staged_batch(first, tmp_path)  # staged, not committed yet
    with pytest.raises(LeaseHeldError):
        runs.Run(out, logging.getLogger())
    assert Store(out).list(f"_talktime/staging/{staged.files.batch_id}")
    first.commit(staged, RunSummary())
    first.close()
    assert Store(out).list("transcriptions") and current(out) is None


def test_two_ingests_at_once_on_one_output_one_refused_no_duplicates(
    tmp_path: Path, inputs: list[str], clean: tuple[dict[str, pl.DataFrame], int]
) -> None:
    """The original bug: both exited 0, the ledger kept one side's ids and the files held both sides' rows."""
    out = str(tmp_path / "out")
    settings = IngestSettings(inputs=inputs, out=out, batch_size=4, in_flight=2)
    first_started, second_done = threading.Event(), threading.Event()
    outcomes: dict[str, BaseException | None] = {}

    def ingest(name: str, gate: Callable[[], None]) -> None:
        with ThreadPoolExecutor(2) as pool:

            def submit(spec: Any) -> Any:
                gate()
                return pool.submit(read_batch, settings, spec)

            try:
                runs.ingest(settings, submit, logging.getLogger())
                outcomes[name] = None
            except StorageError as exc:
                outcomes[name] = exc
            finally:
                second_done.set() if name == "second" else None

    def first_gate() -> None:  # the first run holds its first batch until the second one has tried
        first_started.set()
        second_done.wait(timeout=60)

    first = threading.Thread(target=ingest, args=("first", first_gate))
    first.start()
    assert first_started.wait(timeout=60)
    ingest("second", lambda: None)
    first.join()
    assert outcomes["first"] is None and isinstance(outcomes["second"], LeaseHeldError)
    assert_same(snapshot(out), clean[0])
    assert nothing_pending(out) and current(out) is None


def _with_flow_marks(test: Callable[..., None]) -> Callable[..., None]:
    for mark in FLOW_TEST_MARKS:
        test = mark(test)
    return test


@_with_flow_marks
def test_talktime_ingest_on_a_held_output_exits_2_with_the_holder_named(
    tmp_path: Path, inputs: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    out = str(tmp_path / "out")
    holder = Lease(Store(out), "talktime-run/hourly")
    holder.acquire()
    assert main(["ingest", "--input", inputs[0], "--out", out]) == 2
    err = capsys.readouterr().err
    assert err.startswith("talktime: error: another talktime writer holds") and err.count("\n") == 1
    assert "run talktime-run/hourly" in err and "Traceback" not in err
    assert not Store(out).list("transcriptions")
    holder.release()
