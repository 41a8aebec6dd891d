"""kill -9 of a real `talktime run` process at random moments (fetching, transforming, writing)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flows.cli import main
from flows.emulator.app import DEFAULT_API_KEY, EmulatorConfig, Faults
from flows.emulator.server import EmulatorServer, load_responses
from flows.storage.ledgerlog import load_ledger
from flows.storage.store import Store
from tests.conftest import FLOW_TEST_MARKS, PRIMOCK
from tests.flows.storage.test_storage import assert_same, nothing_pending, snapshot

pytestmark = FLOW_TEST_MARKS
KILLS = 3


def run_args(server: EmulatorServer, ids: Path, out: Path) -> list[str]:
    return ["run", "--api-url", server.api_url, "--ids", str(ids), "--out", str(out), "--api-key", DEFAULT_API_KEY,
            "--batch-size", "5", "--concurrency", "2", "--max-wait", "0"]  # fmt: skip


def test_a_run_killed_at_random_moments_then_resumed_equals_a_clean_run(tmp_path: Path) -> None:
    from prefect.settings import PREFECT_API_URL

    responses = load_responses([PRIMOCK])
    ids = tmp_path / "ids.txt"
    ids.write_text("\n".join([*list(responses)[:30], "00000000-0000-4000-8000-000000000404"]) + "\n")
    env = os.environ | {"PREFECT_API_URL": str(PREFECT_API_URL.value())}
    rng = random.Random(os.environ.get("TALKTIME_CRASH_SEED", "7"))
    with EmulatorServer(EmulatorConfig(responses=responses, faults=Faults(latency_ms=150))) as server:
        assert main(run_args(server, ids, tmp_path / "clean")) == 0
        expected = snapshot(tmp_path / "clean")
        out = tmp_path / "killed"
        progress: list[int] = []
        for _ in range(KILLS):
            command = [sys.executable, "-m", "flows.cli", *run_args(server, ids, out)]
            process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(rng.uniform(3.0, 8.0))
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=30)
            progress.append(len(load_ledger(Store(str(out)))) if (out / "_talktime").exists() else 0)
        print("ids in the ledger after each kill:", progress)
        assert main(run_args(server, ids, out)) == 0
    assert nothing_pending(out)
    assert_same(snapshot(out), expected)


@pytest.fixture(autouse=True)
def _no_crash_injection(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TALKTIME_CRASH_AFTER_OPS", raising=False)
