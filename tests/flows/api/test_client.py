"""Single client behaviours against httpx2.MockTransport (no sleeping: the clock is injected)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import httpx2
import pytest

from flows.api.auth import ApiKeyAuth
from flows.api.client import ClientOptions, TranscriptionClient
from flows.api.retry import RetryPolicy, parse_retry_after
from flows.errors import ApiUnavailableError, AuthenticationError, AuthorizationError
from flows.outcomes import Outcome

TID = "98fce1ef-dbca-41ef-8bc7-4d1621ac07c6"
KEY = "sk-secret-key-value"
Handler = Callable[[httpx2.Request], httpx2.Response]


class FakeClock:
    """A monotonic clock that only moves when the client sleeps."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


def succeeded(tid: str = TID) -> dict[str, Any]:
    return {"id": tid.upper(), "status": "succeeded", "payload": {"transcript": []}}


def run(handler: Handler, ids: list[str], clock: FakeClock | None = None, **options: Any) -> tuple[list[Outcome], Any]:
    clock = clock or FakeClock()

    async def go() -> tuple[list[Outcome], Any]:
        async with httpx2.AsyncClient(transport=httpx2.MockTransport(handler)) as http:
            opts = ClientOptions(api_url="http://api.test/v1/copilot-api/server", **options)
            client = TranscriptionClient(http, opts, ApiKeyAuth(KEY), clock=clock, sleep=clock.sleep)
            return await client.fetch_many(ids)

    return asyncio.run(go())


def test_sends_the_key_and_the_version_header() -> None:
    seen: list[httpx2.Request] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        seen.append(request)
        return httpx2.Response(200, json=succeeded())

    outcomes, _ = run(handler, [TID.upper()], api_version="2024-04-22")
    assert [o.status for o in outcomes] == ["succeeded"]
    assert seen[0].headers["authorization"] == f"Bearer {KEY}"
    assert seen[0].headers["x-nabla-api-version"] == "2024-04-22"
    assert seen[0].url.path == f"/v1/copilot-api/server/transcribe-async/{TID}"


@pytest.mark.parametrize("hostile", ["../x", "%2F..%2F", " " + TID, TID + "\n", "a" * 10_000, "", TID[:-1] + "g"])
def test_hostile_ids_never_reach_a_url(hostile: str) -> None:
    def handler(request: httpx2.Request) -> httpx2.Response:
        raise AssertionError(f"request sent: {request.url}")

    outcomes, _ = run(handler, [hostile])
    assert [(o.status, o.error_code) for o in outcomes] == [("error", "invalid_id")]
    assert outcomes[0].transcription_id == hostile


def test_duplicate_ids_are_fetched_once_case_insensitively() -> None:
    calls: list[str] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        calls.append(request.url.path)
        return httpx2.Response(200, json=succeeded())

    outcomes, _ = run(handler, [TID, TID.upper(), TID])
    assert len(outcomes) == 1 and len(calls) == 1


@pytest.mark.parametrize(
    ("retry_after", "minimum_wait"),
    [("7", 7.0), ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0), ("0", 0.0), (None, 0.0)],
    ids=["seconds", "past_http_date", "zero", "absent"],
)
def test_429_is_retried_honouring_retry_after(retry_after: str | None, minimum_wait: float) -> None:
    answers = iter([429, 429, 200])

    def handler(request: httpx2.Request) -> httpx2.Response:
        status = next(answers)
        headers = {"Retry-After": retry_after} if retry_after is not None and status == 429 else {}
        return httpx2.Response(status, json=succeeded() if status == 200 else {"code": "rate_limited"}, headers=headers)

    clock = FakeClock()
    outcomes, _ = run(handler, [TID], clock)
    assert outcomes[0].status == "succeeded"
    assert len(clock.sleeps) == 2
    assert all(s >= minimum_wait for s in clock.sleeps)
    assert all(s > 0 for s in clock.sleeps), "Retry-After: 0 must not retry at once"


def test_retry_after_http_date_in_the_future() -> None:
    from datetime import UTC, datetime

    now = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after("Thu, 01 Jan 2026 12:00:30 GMT", now=now) == 30.0
    assert parse_retry_after("soon", now=now) is None


@pytest.mark.parametrize(
    "failure",
    [
        lambda r: httpx2.Response(500),
        lambda r: httpx2.Response(503, json={"code": "x"}),
        lambda r: httpx2.Response(200, content=b'{"id": "98fc'),
        lambda r: httpx2.Response(200, content=b"<html>"),
        lambda r: (_ for _ in ()).throw(httpx2.ReadTimeout("t", request=r)),
        lambda r: (_ for _ in ()).throw(httpx2.RemoteProtocolError("peer closed", request=r)),
    ],
    ids=["500", "503", "truncated", "not_json", "timeout", "dropped"],
)
def test_transient_failures_are_retried(failure: Handler) -> None:
    answers = iter([failure, failure, lambda r: httpx2.Response(200, json=succeeded())])
    outcomes, _ = run(lambda r: next(answers)(r), [TID])
    assert outcomes[0].status == "succeeded"


def test_retries_are_capped_and_become_an_error_row() -> None:
    calls = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        calls.append(1)
        return httpx2.Response(500)

    outcomes, down = run(handler, [TID], retry=RetryPolicy(max_attempts=3))
    assert (outcomes[0].status, outcomes[0].error_code, len(calls), down) == ("error", "retries_exhausted", 3, None)


def test_404_is_confirmed_before_not_found() -> None:
    calls = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        calls.append(1)
        return httpx2.Response(404, json={"code": "not_found", "message": "gone"})

    outcomes, _ = run(handler, [TID])
    assert (outcomes[0].status, len(calls)) == ("not_found", 2)


def test_a_404_that_turns_up_on_confirmation_counts() -> None:
    answers = iter([httpx2.Response(404), httpx2.Response(200, json=succeeded())])
    outcomes, _ = run(lambda r: next(answers), [TID])
    assert outcomes[0].status == "succeeded"


def test_400_is_a_permanent_error_row() -> None:
    outcomes, _ = run(lambda r: httpx2.Response(400, json={"code": "invalid_api_version"}), [TID])
    assert (outcomes[0].status, outcomes[0].error_code) == ("error", "invalid_api_version")


def test_401_fails_the_run_without_printing_the_key() -> None:
    with pytest.raises(AuthenticationError) as info:
        run(lambda r: httpx2.Response(401, json={"code": "unauthorized"}), [TID])
    assert KEY not in str(info.value) and "API key" in str(info.value)


def test_403_fails_the_run() -> None:
    with pytest.raises(AuthorizationError):
        run(lambda r: httpx2.Response(403), [TID])


def test_failed_payload_is_kept_whole() -> None:
    body = {"id": TID, "status": "failed", "payload": {"code": 422, "message": "too short", "extra": [1]}}
    outcomes, _ = run(lambda r: httpx2.Response(200, json=body), [TID])
    o = outcomes[0]
    assert (o.status, o.error_code, o.error_message) == ("failed", "422", "too short")
    assert json.loads(o.error_payload or "") == body["payload"]


def test_an_ongoing_id_is_polled_once_and_left_to_the_run() -> None:
    clock = FakeClock()
    outcomes, _ = run(lambda r: httpx2.Response(200, json={"id": TID, "status": "ongoing"}), [TID], clock)
    assert outcomes[0].status == "ongoing" and clock.sleeps == []


def test_a_mismatched_id_is_an_error_row() -> None:
    other = "00000000-0000-4000-8000-000000000000"
    outcomes, _ = run(lambda r: httpx2.Response(200, json=succeeded(other)), [TID])
    assert (outcomes[0].status, outcomes[0].error_code) == ("error", "id_mismatch")


def test_api_down_stops_early_and_leaves_the_rest_pending() -> None:
    ids = [f"00000000-0000-4000-8000-{n:012d}" for n in range(30)]
    outcomes, down = run(
        lambda r: httpx2.Response(503), ids, retry=RetryPolicy(max_attempts=2), down_after_s=1.0, concurrency=2
    )
    assert isinstance(down, ApiUnavailableError)
    assert len(outcomes) < len(ids)
    assert all(o.status == "error" for o in outcomes)


def test_rate_limit_spaces_requests() -> None:
    """Real clock: the n-th request starts no earlier than n intervals after the first."""
    import time

    stamps: list[float] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        stamps.append(time.monotonic())
        return httpx2.Response(200, json=succeeded(request.url.path.rsplit("/", 1)[1]))

    async def go() -> None:
        async with httpx2.AsyncClient(transport=httpx2.MockTransport(handler)) as http:
            opts = ClientOptions(api_url="http://api.test", rate_limit_per_s=20.0, concurrency=8)
            await TranscriptionClient(http, opts, ApiKeyAuth(KEY)).fetch_many(
                [f"00000000-0000-4000-8000-{n:012d}" for n in range(12)]
            )

    asyncio.run(go())
    stamps.sort()
    assert stamps[-1] - stamps[0] >= (len(stamps) - 1) * 0.05 - 0.1  # unlimited: a few milliseconds


def test_requests_are_spread_over_small_connection_pools() -> None:
    from flows.api.client import make_http_clients

    pools = make_http_clients(concurrency=64)
    assert len(pools) == 8 and all(p._transport._pool._max_connections == 8 for p in pools)  # type: ignore[attr-defined]
    seen: list[int] = []

    async def go() -> None:
        clients = [
            httpx2.AsyncClient(
                transport=httpx2.MockTransport(lambda r, n=n: seen.append(n) or httpx2.Response(200, json=succeeded()))
            )
            for n in range(3)
        ]
        client = TranscriptionClient(clients, ClientOptions(api_url="http://api.test"), ApiKeyAuth("k"))
        await client.fetch_many([TID] * 1 + [f"{TID[:-2]}{n:02d}" for n in range(5)])
        for c in [*clients, *pools]:
            await c.aclose()

    asyncio.run(go())
    assert sorted(set(seen)) == [0, 1, 2]


def test_stopping_early_names_the_last_failure() -> None:
    def refused(request: httpx2.Request) -> httpx2.Response:
        error = httpx2.ConnectError("All connection attempts failed", request=request)
        error.__cause__ = ConnectionRefusedError(111, "Connect call failed")
        raise error

    _, down = run(refused, [TID], retry=RetryPolicy(max_attempts=2), down_after_s=0.0)
    assert str(down) == "the API failed every request for 0 s (last: connection refused to api.test:80); stopping early"


@pytest.mark.parametrize(
    ("status", "error"), [(401, AuthenticationError), (403, AuthorizationError)], ids=["401", "403"]
)
def test_the_credentials_check_raises_only_on_refused_credentials(status: int, error: type[Exception]) -> None:
    answers = {"refused": httpx2.Response(status), "down": httpx2.Response(503), "unknown": httpx2.Response(404)}

    def check(answer: str) -> None:
        async def go() -> None:
            async with httpx2.AsyncClient(transport=httpx2.MockTransport(lambda r: answers[answer])) as http:
                opts = ClientOptions(api_url="http://api.test/v1")
                await TranscriptionClient(http, opts, ApiKeyAuth(KEY)).check_credentials(TID)

        asyncio.run(go())

    with pytest.raises(error):
        check("refused")
    check("down")  # left to the batches (not retried here)
    check("unknown")
