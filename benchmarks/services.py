"""Long-running processes the benchmark starts: a real Prefect server and the API emulator.

Each runs in its own session, with its output in a log file, and is stopped through its process
group (SIGTERM, then SIGKILL), so nothing it spawned outlives the benchmark.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

import httpx

from benchmarks.proctree import kill_tree

PREFECT_STARTUP_S = 180.0
EMULATOR_STARTUP_S = 180.0
API_KEY = "talktime-dev-key"
PREFIX_A = "/v1/copilot-api/server"


def free_port() -> int:
    """A loopback port free right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def quiet_prefect_env(prefect_home: Path) -> dict[str, str]:
    """The environment variables every Prefect process of the benchmark gets: no telemetry, no cache."""
    return {
        "PREFECT_HOME": str(prefect_home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "PREFECT_TASKS_DEFAULT_NO_CACHE": "true",
    }


class Service:
    """A background process in its own session: `with Service(...) as s:`; `s.pid` for measurements."""

    def __init__(self, name: str, cmd: Sequence[str | Path], log: Path, env: Mapping[str, str]) -> None:
        self.name = name
        self.cmd = [str(c) for c in cmd]
        self.log = log
        self.env = dict(env)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        """The process id (the process group and session too)."""
        assert self.proc is not None, f"{self.name} is not started"
        return self.proc.pid

    def start(self) -> None:
        """Start the process; `wait_ready` is the subclass's business."""
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("w") as out:
            self.proc = subprocess.Popen(
                self.cmd, stdout=out, stderr=subprocess.STDOUT, env=self.env, start_new_session=True
            )

    def alive(self) -> bool:
        """Still running."""
        return self.proc is not None and self.proc.poll() is None

    def wait_ready(self) -> None:
        """Block until the service answers (overridden)."""

    def _wait_until(self, ready: Callable[[], bool], timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not ready():
            if not self.alive():
                raise RuntimeError(f"{self.name} exited while starting; see {self.log}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} did not start within {timeout_s:.0f} s; see {self.log}")
            time.sleep(0.2)

    def stop(self) -> None:
        """SIGTERM to the process group, SIGKILL after 15 s."""
        if self.proc is None:
            return
        kill_tree(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            kill_tree(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        kill_tree(self.proc.pid, signal.SIGKILL)  # members that ignored SIGTERM

    def __enter__(self) -> Self:
        self.start()
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.stop()


def _answers(url: str, headers: Mapping[str, str] | None = None) -> bool:
    try:
        return httpx.get(url, headers=headers, timeout=2.0).status_code < 500
    except httpx.HTTPError:
        return False


class PrefectServer(Service):
    """`prefect server start` on a free loopback port, with its own PREFECT_HOME."""

    def __init__(self, venv_bin: Path, prefect_home: Path, log: Path) -> None:
        self.port = free_port()
        env = os.environ | quiet_prefect_env(prefect_home)
        env.pop("PREFECT_API_URL", None)
        cmd = [venv_bin / "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(self.port)]
        super().__init__("prefect server", cmd, log, env)

    @property
    def api_url(self) -> str:
        """What clients get as PREFECT_API_URL."""
        return f"http://127.0.0.1:{self.port}/api"

    def wait_ready(self) -> None:
        """Until /api/health answers."""
        self._wait_until(lambda: _answers(f"{self.api_url}/health"), PREFECT_STARTUP_S)


class Emulator(Service):
    """`talktime emulator --synthetic N --seed S --write-ids FILE` plus extra options, on a free port."""

    def __init__(self, venv_bin: Path, work: Path, ids: int, seed: int, extra: Sequence[str], log: Path) -> None:
        self.port = free_port()
        self.ids_file = work / f"ids-{self.port}.txt"
        cmd = [venv_bin / "talktime", "emulator", "--host", "127.0.0.1", "--port", str(self.port)]
        cmd += ["--synthetic", str(ids), "--seed", str(seed), "--write-ids", str(self.ids_file), *extra]
        super().__init__("emulator", cmd, log, os.environ)

    @property
    def api_url(self) -> str:
        """The dialect-A base URL `talktime run --api-url` takes."""
        return f"http://127.0.0.1:{self.port}{PREFIX_A}"

    def ids(self) -> list[str]:
        """The ids it serves."""
        return [line for line in self.ids_file.read_text().splitlines() if line.strip()]

    def wait_ready(self) -> None:
        """Until the ids file is written and the first id is served."""

        def ready() -> bool:
            if not self.ids_file.exists():
                return False
            ids = self.ids()
            if not ids:
                return False
            url = f"{self.api_url}/transcribe-async/{ids[0]}"
            return _answers(url, {"Authorization": f"Bearer {API_KEY}"})

        self._wait_until(ready, EMULATOR_STARTUP_S)


def emulator_options(help_text: str) -> set[str]:
    """The `--options` that `talktime emulator --help` lists."""
    return {word.rstrip(",") for word in help_text.split() if word.startswith("--")}
