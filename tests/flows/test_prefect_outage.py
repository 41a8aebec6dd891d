"""Prefect's API goes away during a run (issue 19, item 2): the run still ends, says what state its data
is in, and exits with its own status.

A real `prefect server start` on a free port, one per test (it is killed); `talktime run`/`ingest` in a
subprocess (tests/prefect_outage_driver.py) that kills the server's process group right before or right
after the last commit.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import polars as pl
import pytest

from flows.emulator.app import DEFAULT_API_KEY, EmulatorConfig
from flows.emulator.server import EmulatorServer, load_responses
from tests.conftest import PRIMOCK
from tests.prefect_server import (
    PREFECT,
    ROOT,
    SERVER_STARTUP_S,
    PrefectServer,
    clean_environment,
    database_url,
    free_loopback_port,
    spawn,
    stop_process_group,
    tail,
)

RESPONSES = load_responses([PRIMOCK])
IDS = list(RESPONSES)[:10]
EXIT_BOUND_S = 60  # after Prefect is killed: a hang shows as the process still running then
RUN_BOUND_S = 300  # until the driver kills Prefect


@pytest.fixture
def doomed_server(tmp_path: Path) -> Iterator[tuple[PrefectServer, subprocess.Popen[bytes]]]:
    """A `prefect server start` of this test's own, which the test kills."""
    home = tmp_path / "prefect-server"
    home.mkdir()
    log = home / "server.log"
    port = free_loopback_port()
    api_url = f"http://127.0.0.1:{port}/api"
    env = clean_environment(home) | {"PREFECT_SERVER_DATABASE_CONNECTION_URL": database_url(home / "db")}
    process = spawn(
        [*PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port), "--no-ui"], env, home, log
    )
    try:
        deadline = time.monotonic() + SERVER_STARTUP_S
        with httpx.Client(timeout=2) as http:
            while True:
                assert process.poll() is None, tail(log)
                try:
                    if http.get(f"{api_url}/health").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, tail(log)
                time.sleep(0.25)
        client_home = tmp_path / "prefect-client"
        client_home.mkdir()
        yield PrefectServer(api_url, clean_environment(client_home) | {"PREFECT_API_URL": api_url}, log), process
    finally:
        if process.poll() is None:
            stop_process_group(process)


def run_with_outage(server: PrefectServer, pgid: int, at: int, when: str, argv: list[str], log: Path) -> int:
    """The driver's exit status; it must exit within EXIT_BOUND_S of the moment it killed the server."""
    command = [sys.executable, "-m", "tests.prefect_outage_driver", str(pgid), str(at), when, *argv]
    process = spawn(command, server.env, ROOT, log)
    try:
        deadline = time.monotonic() + RUN_BOUND_S
        while "outage driver: Prefect killed" not in log.read_text(errors="replace"):
            assert process.poll() is None, tail(log)
            assert time.monotonic() < deadline, tail(log)
            time.sleep(0.2)
        killed = time.monotonic()
        try:
            code = process.wait(timeout=EXIT_BOUND_S)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"still running {EXIT_BOUND_S} s after Prefect went away:\n{tail(log)}") from None
        print(f"exited {time.monotonic() - killed:.1f} s after Prefect was killed")  # for the record, not asserted
        return code
    finally:
        if process.poll() is None:
            stop_process_group(process)


# Killed right before the last commit by default (the commit then runs with Prefect already gone);
# right after it under `slow`: each case starts a Prefect server of its own, the costliest start here.
@pytest.mark.parametrize("when", ["before", pytest.param("after", marks=pytest.mark.slow)])
def test_a_run_whose_prefect_goes_away_at_the_last_commit_ends_and_says_its_data_is_committed(
    when: str, tmp_path: Path, doomed_server: tuple[PrefectServer, subprocess.Popen[bytes]]
) -> None:
    server, process = doomed_server
    ids = tmp_path / "ids.txt"
    ids.write_text("\n".join(IDS) + "\n")
    out = tmp_path / "out"
    with EmulatorServer(EmulatorConfig(responses=RESPONSES)) as emulator:
        argv = ["run", "--api-url", emulator.api_url, "--ids", str(ids), "--out", str(out), "--api-key",
                DEFAULT_API_KEY, "--batch-size", "4", "--in-flight", "1"]  # fmt: skip
        log = tmp_path / "run.log"
        code = run_with_outage(server, process.pid, 3, when, argv, log)
    output = log.read_text()
    print(output[-4000:])
    assert process.poll() is not None  # the server really is gone
    frame = pl.read_parquet(f"{out}/transcriptions/**/*.parquet", hive_partitioning=False)
    assert frame.height == 10
    last = output.strip().splitlines()[-1]
    assert code == 4, output[-3000:]
    assert last.startswith(f"talktime: the data is committed (10 ids) in {out}, but Prefect's API could not be told"), (
        last
    )
    assert "connection refused to 127.0.0.1:" in last


def test_a_prefect_call_that_does_not_answer_is_given_up_and_the_next_is_not_made() -> None:
    import threading

    from flows.prefect_calls import call_prefect, forget_unreachable, prefect_unreachable

    release = threading.Event()
    calls: list[str] = []
    try:
        assert call_prefect("progress update", lambda: calls.append("hung") or release.wait(), deadline_s=0.2) is None
        assert prefect_unreachable() == "progress update: no answer within 0 s"
        assert call_prefect("table artifact", lambda: calls.append("next")) is None
        assert calls == ["hung"]  # the second call was never made
    finally:
        release.set()
        forget_unreachable()


def test_a_prefect_call_that_fails_marks_the_api_unreachable_and_one_that_answers_returns_its_value() -> None:
    from flows.prefect_calls import call_prefect, forget_unreachable, prefect_unreachable

    try:
        assert call_prefect("summary artifact", lambda: 42) == 42 and prefect_unreachable() is None

        def refused() -> None:
            raise httpx.ConnectError("[Errno 111] Connection refused")

        assert call_prefect("summary artifact", refused) is None
        assert prefect_unreachable() == "summary artifact: ConnectError"
    finally:
        forget_unreachable()
