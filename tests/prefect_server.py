"""One real `prefect server start` per test session, with prefect.yaml deployed on it as docs/operating.md says.

A plugin module: test modules that need it declare `pytest_plugins = ["tests.prefect_server"]`, so its
session fixtures exist once however many modules use them (a fixture imported into two modules would
start two servers). The test modules also import its helpers, before pytest would load it as a
plugin, so pytest must not try to rewrite its asserts (they carry their own messages):
PYTEST_DONT_REWRITE.

The test harness's server (`prefect_test_harness`) is ephemeral, and Prefect runs no scheduler in
ephemeral servers: this one is a real server with a scheduler looping every few seconds. The
deployments are made the way the "Running on Prefect" section of docs/operating.md makes them, with Prefect's
CLI: the `talktime` work pool, its `talktime-output` queue (concurrency limit 1), the
`talktime-api` global concurrency limit, then `prefect --no-prompt deploy --all` from the project
root WITHOUT any TALKTIME_HOME.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[1]
PREFECT = [sys.executable, "-m", "prefect"]
SERVER_STARTUP_S = 120
SCHEDULER_LOOP_S = 2
POOL = "talktime"
QUEUE = "talktime-output"
REQUESTS_LIMIT = "talktime-api"
Completed = subprocess.CompletedProcess[str]
# Variables of the developer's shell that would change what is tested: a worker must find the code
# and the API key the way docs/operating.md says (pull step, Secret block), not through these.
FOREIGN_VARIABLES = ("PREFECT_API_URL", "PREFECT__SERVER_EPHEMERAL", "PREFECT_PROFILE", "TALKTIME_HOME",
                     "TALKTIME_API_KEY", "TALKTIME_OAUTH_CLIENT_ID")  # fmt: skip


def free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def tail(path: Path, chars: int = 4000) -> str:
    return path.read_text(errors="replace")[-chars:] if path.exists() else ""


def stop_process_group(process: subprocess.Popen[bytes]) -> None:
    """Stop a process started with `start_new_session=True` and its children: SIGTERM, then SIGKILL."""
    for sig, grace_s in ((signal.SIGTERM, 15), (signal.SIGKILL, 10)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            break
        try:
            process.wait(timeout=grace_s)
            break
        except subprocess.TimeoutExpired:
            continue
    process.wait(timeout=10)


def spawn(argv: list[str], env: dict[str, str], cwd: Path, log: Path) -> subprocess.Popen[bytes]:
    """A process in a session of its own (stopped with `stop_process_group`), its output into `log`."""
    with log.open("wb") as log_file:
        return subprocess.Popen(
            argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip


_MIGRATED: list[Path] = []  # a copy of the test harness's database, taken right after it started


def keep_migrated_database(url: str, folder: Path) -> None:
    """Keep a copy of the SQLite database at `url` of a server that just started: migrated, and nothing
    else in it yet (called by the `prefect_server` fixture, the test harness)."""
    copy = folder / "migrated.db"
    with closing(sqlite3.connect(url.split(":///", 1)[1])) as source, closing(sqlite3.connect(copy)) as target:
        source.backup(target)
    _MIGRATED.append(copy)


def database_url(path: Path) -> str:
    """The URL of a new server's SQLite database at `path`: a copy of the test harness's freshly migrated
    one when this session started the harness (Prefect's migrations then do not run again, which saves
    about 10 s of CPU per server), else a new file that the server migrates."""
    if _MIGRATED:
        shutil.copyfile(_MIGRATED[0], path)
    return f"sqlite+aiosqlite:///{path}"


def clean_environment(home: Path) -> dict[str, str]:
    """This process's environment without FOREIGN_VARIABLES, with its own PREFECT_HOME and no telemetry."""
    env = {k: v for k, v in os.environ.items() if k not in FOREIGN_VARIABLES}
    return env | {"PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1"}


class RetryOn503(httpx.HTTPTransport):
    """Retry what Prefect's server answers 503 (retryable: SQLite busy while its services write), as its client does."""

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        for attempt in range(6):
            response = super().handle_request(request)
            if response.status_code != 503 or attempt == 5:
                break
            response.close()
            time.sleep(0.1 * 2**attempt)
        return response


@dataclass(frozen=True)
class PrefectServer:
    api_url: str
    env: dict[str, str]  # for its clients: PREFECT_API_URL, a PREFECT_HOME of their own
    log: Path

    def prefect(self, *args: str, timeout: float = 120, stdin: str | None = None) -> Completed:
        """`prefect ARGS` (this venv's) from the project root against this server."""
        return self.run([*PREFECT, *args], timeout=timeout, stdin=stdin)

    def run(self, command: list[str], timeout: float = 120, stdin: str | None = None) -> Completed:
        """COMMAND from the project root against this server, without a controlling terminal (no prompt waits)."""
        return subprocess.run(command, env=self.env, cwd=ROOT, input=stdin, capture_output=True, text=True,
                              timeout=timeout, check=False, start_new_session=True)  # fmt: skip

    def http(self) -> httpx.Client:
        return httpx.Client(base_url=self.api_url, timeout=10, transport=RetryOn503())


@dataclass(frozen=True)
class Deployed:
    """prefect.yaml deployed on the server: deployment name -> its record; the deploy command's output."""

    server: PrefectServer
    deployments: dict[str, dict[str, Any]]
    output: str


def output_of(done: Completed) -> str:
    return f"exit {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"


@pytest.fixture(scope="session")
def prefect_real_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrefectServer]:
    """A real `prefect server start` on a free loopback port, its scheduler looping every few seconds."""
    home = tmp_path_factory.mktemp("prefect-server-home")
    log = home / "server.log"
    port = free_loopback_port()
    api_url = f"http://127.0.0.1:{port}/api"
    env = clean_environment(home) | {
        "PREFECT_SERVER_DATABASE_CONNECTION_URL": database_url(home / "prefect.db"),
        "PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED": "true",
        # Both scheduler loops: the main one (default 60 s) and the one for recently updated deployments (5 s).
        "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": str(SCHEDULER_LOOP_S),
        "PREFECT_SERVER_SERVICES_SCHEDULER_RECENT_DEPLOYMENTS_LOOP_SECONDS": str(SCHEDULER_LOOP_S),
    }
    process = spawn(
        [*PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port), "--no-ui"], env, home, log
    )
    try:
        deadline = time.monotonic() + SERVER_STARTUP_S
        with httpx.Client(timeout=2) as http:
            while True:
                assert process.poll() is None, f"prefect server exited with {process.returncode}:\n{tail(log)}"
                try:
                    if http.get(f"{api_url}/health").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, f"prefect server not healthy in {SERVER_STARTUP_S} s:\n{tail(log)}"
                time.sleep(0.25)
        client_home = tmp_path_factory.mktemp("prefect-client-home")
        yield PrefectServer(api_url, clean_environment(client_home) | {"PREFECT_API_URL": api_url}, log)
    finally:
        stop_process_group(process)


@pytest.fixture(scope="session")
def prefect_deployed(prefect_real_server: PrefectServer) -> Deployed:
    """The set-up commands of docs/operating.md, then `prefect --no-prompt deploy --all` from the project root."""
    server = prefect_real_server
    pool = server.prefect("work-pool", "create", POOL, "--type", "process")
    assert pool.returncode == 0, output_of(pool)
    queue = server.prefect("work-queue", "create", QUEUE, "--pool", POOL, "--limit", "1")
    assert queue.returncode == 0, output_of(queue)
    limit = server.prefect("global-concurrency-limit", "create", REQUESTS_LIMIT, "--limit", "100",
                           "--slot-decay-per-second", "50")  # fmt: skip
    assert limit.returncode == 0, output_of(limit)
    deploy = server.prefect("--no-prompt", "deploy", "--all", timeout=240)
    assert deploy.returncode == 0, output_of(deploy)
    with server.http() as http:
        found = http.post("/deployments/filter", json={})
        found.raise_for_status()
    return Deployed(server, {d["name"]: d for d in found.json()}, deploy.stdout)
