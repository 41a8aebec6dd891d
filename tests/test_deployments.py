"""`prefect deploy --all` accepts prefect.yaml against Prefect's real local server."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import FLOW_TEST_MARKS

ROOT = Path(__file__).resolve().parents[1]
pytestmark = FLOW_TEST_MARKS


def test_prefect_deploy_creates_both_deployments() -> None:
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL

    env = os.environ | {"PREFECT_API_URL": str(PREFECT_API_URL.value()), "TALKTIME_HOME": str(ROOT)}
    prefect = [sys.executable, "-m", "prefect"]
    pool = subprocess.run([*prefect, "work-pool", "create", "talktime", "--type", "process"], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
    assert pool.returncode == 0 or "already exists" in pool.stdout + pool.stderr, pool.stdout + pool.stderr
    deploy = subprocess.run([*prefect, "--no-prompt", "deploy", "--all"], env=env, cwd=ROOT,
                            capture_output=True, text=True, timeout=240, check=False)  # fmt: skip
    assert deploy.returncode == 0, deploy.stdout[-3000:] + deploy.stderr[-3000:]

    with get_client(sync_client=True) as client:
        hourly = client.read_deployment_by_name("talktime-run/talktime-hourly")
        adhoc = client.read_deployment_by_name("talktime-run/talktime-adhoc")
    assert hourly.schedules and hourly.schedules[0].schedule.cron == "5 * * * *"
    assert hourly.parameters["settings"]["ids_file"] and not adhoc.schedules
