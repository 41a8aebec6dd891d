"""Test-wide settings. The environment is set before anything imports prefect."""

from __future__ import annotations

import gc
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


# For modules that run flows. Prefect 3.8.8's engine leaves a socket to its own API server for
# the garbage collector when an async flow runs under asyncio.run; the sockets are Prefect's,
# never the API emulator's (the client and emulator tests run with every warning as an error).
FLOW_TEST_MARKS = [
    pytest.mark.usefixtures("prefect_server", "collect_garbage"),
    pytest.mark.filterwarnings("ignore:unclosed <socket.socket:ResourceWarning"),
    pytest.mark.filterwarnings("ignore:Exception ignored in. <socket.socket:pytest.PytestUnraisableExceptionWarning"),
]


@pytest.fixture
def collect_garbage() -> Iterator[None]:
    """Collect inside the test, so that the warnings filters of FLOW_TEST_MARKS apply."""
    yield
    gc.collect()


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Prefect's real local API server, started once per test session."""
    from prefect.settings import PREFECT_SERVER_DATABASE_CONNECTION_URL
    from prefect.testing.utilities import prefect_test_harness

    from tests.prefect_server import keep_migrated_database

    with prefect_test_harness(server_startup_timeout=60):
        # The `prefect server start` processes of later tests start from a copy of its fresh database.
        url = str(PREFECT_SERVER_DATABASE_CONNECTION_URL.value())
        keep_migrated_database(url, tmp_path_factory.mktemp("prefect-database"))
        yield
