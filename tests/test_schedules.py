"""Schedules fire: after `prefect deploy --all`, a real server's scheduler creates runs for every scheduled deployment.

The test harness's server (`prefect_test_harness`) is ephemeral, and Prefect does not run the scheduler service in
ephemeral servers, so `tests.prefect_server` starts its own `prefect server start` (shared with test_deployments.py)
with a scheduler loop of a few seconds, and deploys prefect.yaml on it.
It catches what a deploy-only test cannot: a server that accepts deployments but never schedules a run (Prefect
3.8.8 under SQLAlchemy 2.1 fails every scheduler loop with `InvalidRequestError: Can't evaluate bulk DML statement`).
"""

from __future__ import annotations

import time

import yaml

from tests.prefect_server import ROOT, Deployed, tail

pytest_plugins = ["tests.prefect_server"]

SCHEDULING_WAIT_S = 90


def _scheduled_deployment_names(prefect_yaml: dict) -> tuple[set[str], set[str]]:
    """(deployments with at least one active schedule, all deployments), as named in prefect.yaml."""
    scheduled, every = set(), set()
    for deployment in prefect_yaml.get("deployments") or []:
        every.add(deployment["name"])
        schedules = deployment.get("schedules") or []
        if any(schedule.get("active", True) for schedule in schedules):
            scheduled.add(deployment["name"])
    return scheduled, every


def test_scheduler_creates_runs_for_every_scheduled_deployment(prefect_deployed: Deployed) -> None:
    scheduled, every = _scheduled_deployment_names(yaml.safe_load((ROOT / "prefect.yaml").read_text()))
    assert scheduled, "prefect.yaml has no deployment with an active schedule: nothing to check"

    ids = {name: d["id"] for name, d in prefect_deployed.deployments.items()}
    assert set(ids) == every, f"deployed {sorted(ids)}, prefect.yaml names {sorted(every)}"
    with prefect_deployed.server.http() as http:

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
        f" server log:\n{tail(prefect_deployed.server.log)}"
    )
    unscheduled_with_runs = sorted(name for name in every - scheduled if counts[name])
    assert not unscheduled_with_runs, f"runs scheduled for deployments without a schedule: {unscheduled_with_runs}"
