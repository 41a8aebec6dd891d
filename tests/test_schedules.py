"""Schedules fire: after `prefect deploy --all`, a real server's scheduler creates runs for every scheduled deployment.

The test harness's server (`prefect_test_harness`) is ephemeral, and Prefect does not run the scheduler service in
ephemeral servers, so this module starts its own `prefect server start` with a scheduler loop of a few seconds.
It catches what a deploy-only test cannot: a server that accepts deployments but never schedules a run (Prefect
3.8.8 under SQLAlchemy 2.1 fails every scheduler loop with `InvalidRequestError: Can't evaluate bulk DML statement`).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PREFECT = [sys.executable, "-m", "prefect"]
SERVER_STARTUP_S = 120
SCHEDULING_WAIT_S = 90
SCHEDULER_LOOP_S = 2


def _free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _tail(path: Path, chars: int = 4000) -> str:
    return path.read_text(errors="replace")[-chars:] if path.exists() else ""


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Stop the server's whole process group: SIGTERM, then SIGKILL if it lingers."""
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


class Server:
    def __init__(self, api_url: str, env: dict[str, str], log: Path) -> None:
        self.api_url = api_url
        self.env = env
        self.log = log


@pytest.fixture(scope="module")
def scheduling_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A real `prefect server start` on a free loopback port, its scheduler looping every few seconds."""
    home = tmp_path_factory.mktemp("prefect-scheduling-home")
    log = home / "server.log"
    port = _free_loopback_port()
    api_url = f"http://127.0.0.1:{port}/api"
    env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "PREFECT__SERVER_EPHEMERAL")}
    env |= {
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{home / 'prefect.db'}",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED": "true",
        # Both scheduler loops: the main one (default 60 s) and the one for recently updated deployments (5 s).
        "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": str(SCHEDULER_LOOP_S),
        "PREFECT_SERVER_SERVICES_SCHEDULER_RECENT_DEPLOYMENTS_LOOP_SECONDS": str(SCHEDULER_LOOP_S),
    }
    with log.open("wb") as log_file:
        process = subprocess.Popen(
            [*PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port), "--no-ui"],
            env=env,
            cwd=home,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + SERVER_STARTUP_S
        with httpx.Client(timeout=2) as http:
            while True:
                assert process.poll() is None, f"prefect server exited with {process.returncode}:\n{_tail(log)}"
                try:
                    if http.get(f"{api_url}/health").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, f"prefect server not healthy in {SERVER_STARTUP_S} s:\n{_tail(log)}"
                time.sleep(0.25)
        yield Server(api_url, env | {"PREFECT_API_URL": api_url, "TALKTIME_HOME": str(ROOT)}, log)
    finally:
        _stop(process)


def _scheduled_deployment_names(prefect_yaml: dict) -> tuple[set[str], set[str]]:
    """(deployments with at least one active schedule, all deployments), as named in prefect.yaml."""
    scheduled, every = set(), set()
    for deployment in prefect_yaml.get("deployments") or []:
        every.add(deployment["name"])
        schedules = deployment.get("schedules") or []
        if any(schedule.get("active", True) for schedule in schedules):
            scheduled.add(deployment["name"])
    return scheduled, every


def test_scheduler_creates_runs_for_every_scheduled_deployment(scheduling_server: Server) -> None:
    scheduled, every = _scheduled_deployment_names(yaml.safe_load((ROOT / "prefect.yaml").read_text()))
    assert scheduled, "prefect.yaml has no deployment with an active schedule: nothing to check"

    run = {"env": scheduling_server.env, "cwd": ROOT, "capture_output": True, "text": True, "check": False}
    pool = subprocess.run([*PREFECT, "work-pool", "create", "talktime", "--type", "process"], timeout=120, **run)
    assert pool.returncode == 0, pool.stdout[-3000:] + pool.stderr[-3000:]
    deploy = subprocess.run([*PREFECT, "--no-prompt", "deploy", "--all"], timeout=240, **run)
    assert deploy.returncode == 0, deploy.stdout[-3000:] + deploy.stderr[-3000:]

    api = scheduling_server.api_url
    with httpx.Client(base_url=api, timeout=10) as http:
        found = http.post("/deployments/filter", json={"deployments": {"name": {"any_": sorted(every)}}})
        found.raise_for_status()
        ids = {d["name"]: d["id"] for d in found.json()}
        assert set(ids) == every, f"deployed {sorted(ids)}, prefect.yaml names {sorted(every)}"

        def auto_scheduled_runs() -> dict[str, int]:
            response = http.post(
                "/flow_runs/filter",
                json={
                    "deployments": {"id": {"any_": list(ids.values())}},
                    "flow_runs": {"state": {"type": {"any_": ["SCHEDULED"]}}},
                },
            )
            response.raise_for_status()
            counts = dict.fromkeys(ids, 0)
            names = {deployment_id: name for name, deployment_id in ids.items()}
            for flow_run in response.json():
                if flow_run["auto_scheduled"]:
                    counts[names[flow_run["deployment_id"]]] += 1
            return counts

        deadline = time.monotonic() + SCHEDULING_WAIT_S
        while True:
            counts = auto_scheduled_runs()
            waiting = sorted(name for name in scheduled if counts[name] == 0)
            if not waiting or time.monotonic() > deadline:
                break
            time.sleep(0.5)

    assert not waiting, (
        f"no scheduled flow run after {SCHEDULING_WAIT_S} s for {waiting} (runs per deployment: {counts});"
        f" server log:\n{_tail(scheduling_server.log)}"
    )
    unscheduled_with_runs = sorted(name for name in every - scheduled if counts[name])
    assert not unscheduled_with_runs, f"runs scheduled for deployments without a schedule: {unscheduled_with_runs}"
