"""Test-wide settings. The environment is set before anything imports prefect."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix="talktime-test-prefect-")
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ["DO_NOT_TRACK"] = "1"
os.environ["PREFECT_TASKS_DEFAULT_NO_CACHE"] = "true"
os.environ["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] = "120"
os.environ.pop("PREFECT_API_URL", None)

SAMPLES = Path(__file__).resolve().parents[1] / "data" / "samples"
PRIMOCK = SAMPLES / "responses" / "primock57"


@pytest.fixture(scope="session")
def prefect_server() -> Iterator[None]:
    """Prefect's real local API server, started once per test session."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=60):
        yield
