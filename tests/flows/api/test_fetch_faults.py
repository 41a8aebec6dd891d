"""The client against the real emulator on loopback with faults on: every id accounted for."""

from __future__ import annotations

import asyncio

import httpx2
import pytest

from flows.api.auth import ApiKeyAuth
from flows.api.client import ClientOptions, TranscriptionClient, make_http_client
from flows.api.retry import RetryPolicy
from flows.emulator.app import DEFAULT_API_KEY, EmulatorConfig, Faults
from flows.emulator.server import EmulatorServer, load_responses
from flows.emulator.synthetic import synthetic_responses
from flows.outcomes import Outcome
from tests.conftest import PRIMOCK

FAST_RETRY = RetryPolicy(max_attempts=12, backoff_initial_s=0.01, backoff_max_s=0.05, max_retry_wait_s=30)
ALL_FAULTS = Faults(
    rate_limited=0.05,
    server_error=0.05,
    unavailable=0.05,
    truncated=0.04,
    not_json=0.04,
    drop=0.04,
    stall=0.03,
    stall_s=2.0,
    latency_ms=1,
    jitter_ms=5,
    retry_after="0",
)


def fetch_all(config: EmulatorConfig, ids: list[str], **options: object) -> list[Outcome]:

    async def go(url: str) -> list[Outcome]:
        async with make_http_client(concurrency=8, timeout=httpx2.Timeout(0.5)) as http:
            opts = ClientOptions(api_url=url, retry=FAST_RETRY, **options)  # type: ignore[arg-type]
            outcomes, down = await TranscriptionClient(http, opts, ApiKeyAuth(DEFAULT_API_KEY)).fetch_many(ids)
            assert down is None
            return outcomes

    with EmulatorServer(config) as server:
        return asyncio.run(go(server.api_url))


def comparable(outcomes: list[Outcome]) -> dict[str, tuple]:
    return {o.transcription_id: (o.status, o.client_request_id, o.error_code, o.items) for o in outcomes}


@pytest.fixture(scope="module")
def responses() -> dict[str, dict]:
    return load_responses([PRIMOCK]) | synthetic_responses(40, seed=11)


def test_thirty_percent_faults_give_the_same_outcomes_as_none(responses: dict[str, dict]) -> None:
    ids = [*responses, "00000000-0000-4000-8000-00000000dead", "../etc/passwd"]
    clean = fetch_all(EmulatorConfig(responses=responses), ids)
    faulty = fetch_all(EmulatorConfig(responses=responses, faults=ALL_FAULTS, seed=5), ids)
    assert len(faulty) == len(set(ids))
    assert comparable(faulty) == comparable(clean)
    assert sum(o.status == "succeeded" for o in faulty) == len(responses)


def test_the_rate_limit_holds_at_the_server(responses: dict[str, dict]) -> None:
    """Request timestamps measured by the emulator: the n-th comes n intervals after the first, or later."""
    ids = list(responses)[:15]
    with EmulatorServer(EmulatorConfig(responses=responses)) as server:

        async def go() -> None:
            async with make_http_client(concurrency=8) as http:
                options = ClientOptions(api_url=server.api_url, rate_limit_per_s=20.0, concurrency=8)
                await TranscriptionClient(http, options, ApiKeyAuth(DEFAULT_API_KEY)).fetch_many(ids)

        asyncio.run(go())
        stamps = sorted(t for t, _ in server.app.request_log)
    assert len(stamps) == len(ids)
    # Slot k starts k intervals after slot 0; the tolerance covers the first request arriving late.
    # Unlimited, these 15 requests (8 at a time) take a few milliseconds in all.
    assert stamps[-1] - stamps[0] >= (len(ids) - 1) / 20.0 - 0.1
