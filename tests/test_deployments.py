"""prefect.yaml, deployed and run for real: a `prefect server start`, a process worker, the API emulator.

`tests.prefect_server` starts the server (shared with test_schedules.py) and makes the deployments
the way docs/operating.md says, without TALKTIME_HOME. Here a `prefect worker start --pool talktime`
subprocess, started outside the checkout, runs the ad-hoc deployment against the emulator and the
landing deployment over the bundled sample, both into one output at the same time: the
`talktime-output` queue (limit 1) must run them one after the other, the pull step must find the
code, the API key must come from the Secret block made by the one-liner of docs/operating.md.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from flows.settings import IngestSettings, RunSettings
from tests.prefect_server import (
    POOL,
    PREFECT,
    QUEUE,
    REQUESTS_LIMIT,
    ROOT,
    Deployed,
    PrefectServer,
    clean_environment,
    output_of,
    spawn,
    stop_process_group,
    tail,
)

pytest_plugins = ["tests.prefect_server"]

SAMPLES = ROOT / "data" / "samples"
RUN_WAIT_S = 180
TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
SETTINGS_OF = {"flows/pipeline.py:run_flow": RunSettings, "flows/pipeline.py:ingest_flow": IngestSettings}
# The one-liner of docs/operating.md for the Secret block (the key is typed, so it is in no shell history).
SECRET_ONE_LINER = (
    "import getpass; from prefect.blocks.system import Secret; "
    "Secret(value=getpass.getpass('talktime API key: ')).save('talktime-api-key', overwrite=True)"
)


def test_the_documented_set_up_makes_what_these_tests_make() -> None:
    """The pool, the queue and the Secret one-liner used here are those of docs/operating.md."""
    text = (ROOT / "docs" / "operating.md").read_text(encoding="utf-8")
    block = text.split("## Running on Prefect", 1)[1].split("```sh\n", 1)[1].split("```", 1)[0]
    commands = [line.split("  #")[0].strip() for line in block.splitlines()]
    assert f".venv/bin/prefect work-pool create {POOL} --type process" in commands
    assert f".venv/bin/prefect work-queue create {QUEUE} --pool {POOL} --limit 1" in commands
    assert f'.venv/bin/python -c "{SECRET_ONE_LINER}"' in commands
    assert any(c.startswith(f".venv/bin/prefect global-concurrency-limit create {REQUESTS_LIMIT} ") for c in commands)


def _prefect_yaml() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    return loaded


def test_prefect_yaml_parameters_are_settings_and_every_deployment_uses_the_output_queue() -> None:
    deployments = _prefect_yaml()["deployments"]
    assert {d["name"] for d in deployments} == {"talktime-hourly", "talktime-adhoc", "talktime-landing"}
    for deployment in deployments:
        model = SETTINGS_OF[deployment["entrypoint"]]
        assert set(deployment["parameters"]) == {"settings"}, deployment["name"]
        settings = model.model_validate(deployment["parameters"]["settings"])  # what the worker will build
        if isinstance(settings, RunSettings):
            assert settings.requests_limit == REQUESTS_LIMIT, deployment["name"]
        assert deployment["work_pool"] == {"name": "talktime", "work_queue_name": QUEUE}, deployment["name"]
    assert "TALKTIME_HOME" not in (ROOT / "prefect.yaml").read_text()


def test_deploy_records_the_checkout_the_queue_and_the_schedules(prefect_deployed: Deployed) -> None:
    deployed = prefect_deployed.deployments
    assert set(deployed) == {d["name"] for d in _prefect_yaml()["deployments"]}
    for name, deployment in deployed.items():
        # deploy ran from ROOT: the worker will run there, with no variable to set
        assert deployment["pull_steps"] == [
            {"prefect.deployments.steps.set_working_directory": {"directory": str(ROOT)}}
        ], name
        assert deployment["work_queue_name"] == QUEUE, name
    hourly, adhoc, landing = (deployed[f"talktime-{name}"] for name in ("hourly", "adhoc", "landing"))
    assert [s["schedule"].get("cron") for s in hourly["schedules"]] == ["5 * * * *"]
    assert [s["schedule"].get("interval") for s in landing["schedules"]] == [900.0]
    assert not adhoc["schedules"]
    for deployment in (hourly, landing):
        assert deployment["global_concurrency_limit"]["limit"] == 1, deployment["name"]
    with prefect_deployed.server.http() as http:
        queue = http.post("/work_pools/talktime/queues/filter", json={})
        queue.raise_for_status()
    assert {q["name"]: q["concurrency_limit"] for q in queue.json()}[QUEUE] == 1


@pytest.fixture
def worker(prefect_deployed: Deployed, tmp_path: Path) -> Iterator[Path]:
    """`prefect worker start --pool talktime` from outside the checkout, polling every second; yields its log."""
    server = prefect_deployed.server
    home = tmp_path / "worker-home"
    home.mkdir()
    log = tmp_path / "worker.log"
    env = clean_environment(home) | {"PREFECT_API_URL": server.api_url, "PREFECT_WORKER_QUERY_SECONDS": "1"}
    process = spawn([*PREFECT, "worker", "start", "--pool", "talktime", "--name", "test-worker"], env, home, log)
    try:
        yield log
    finally:
        stop_process_group(process)


def _pause(server: PrefectServer, deployments: list[dict[str, Any]], paused: bool) -> None:
    with server.http() as http:
        for deployment in deployments:
            http.patch(f"/deployments/{deployment['id']}", json={"paused": paused}).raise_for_status()


def test_worker_runs_adhoc_and_landing_into_one_output_one_after_the_other(
    prefect_deployed: Deployed, worker: Path, tmp_path: Path
) -> None:
    from flows.emulator.app import EmulatorConfig
    from flows.emulator.server import EmulatorServer, load_responses
    from flows.storage.reader import read_table

    server = prefect_deployed.server
    deployed = prefect_deployed.deployments
    secret = server.run([sys.executable, "-c", SECRET_ONE_LINER], stdin="talktime-dev-key\n")
    assert secret.returncode == 0, output_of(secret)

    out = tmp_path / "output"
    adhoc, landing = deployed["talktime-adhoc"], deployed["talktime-landing"]
    scheduled = [d for d in deployed.values() if d["schedules"]]
    _pause(server, scheduled, True)  # no scheduled run (default paths under /srv) reaches this worker
    config = EmulatorConfig(responses=load_responses([SAMPLES / "responses"]))
    try:
        with EmulatorServer(config) as emulator, server.http() as http:
            runs = {}
            # A run's `settings` replaces the deployment's: start from the deployment's own (requests_limit,
            # api_key_secret) and point it at the emulator, the sample and one temporary output for both.
            for deployment, overrides in (
                (adhoc, {"api_url": emulator.api_url, "ids_file": str(SAMPLES / "ids.txt"), "max_wait_s": 1}),
                (landing, {"inputs": [str(SAMPLES / "responses")]}),
            ):
                settings = deployment["parameters"]["settings"] | overrides | {"out": str(out)}
                created = http.post(
                    f"/deployments/{deployment['id']}/create_flow_run", json={"parameters": {"settings": settings}}
                )
                created.raise_for_status()
                runs[deployment["name"]] = created.json()["id"]

            deadline = time.monotonic() + RUN_WAIT_S
            while True:
                states = {name: http.get(f"/flow_runs/{run_id}").json() for name, run_id in runs.items()}
                if all(run["state_type"] in TERMINAL for run in states.values()) or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
    finally:
        _pause(server, scheduled, False)

    logs = f"worker log:\n{tail(worker, 6000)}\nserver log:\n{tail(server.log, 2000)}"
    summary = {name: (run["state_type"], run["state_name"]) for name, run in states.items()}
    completed = all(run["state_type"] == "COMPLETED" for run in states.values())
    assert completed, f"{summary} (waited up to {RUN_WAIT_S} s)\n{logs}"
    spans = sorted((datetime.fromisoformat(run["start_time"]), datetime.fromisoformat(run["end_time"]))
                   for run in states.values())  # fmt: skip
    assert spans[0][1] <= spans[1][0], f"the runs overlapped: {spans}\n{logs}"

    # 61 stored responses (58 succeeded, 2 failed, 1 ongoing), 2 unknown ids, 1 id that is no UUID
    statuses = dict(read_table(str(out), "transcriptions").group_by("status").len().iter_rows())
    assert statuses == {"succeeded": 58, "failed": 2, "ongoing": 1, "not_found": 2, "error": 1}, logs
    assert read_table(str(out), "transcript_items").height > 0
    assert read_table(str(out), "speaker_metrics").height > 0
