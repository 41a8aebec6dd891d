"""A batch's response bytes: counted as they arrive, given back when not kept, and once they reach the
batch's limit, no request starts: the ids left are handed back in order, unrequested (issue 19)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx2

from flows.api.auth import ApiKeyAuth
from flows.api.batchbytes import BatchBytes
from flows.api.client import ClientOptions, TranscriptionClient
from flows.api.retry import RetryPolicy
from flows.outcomes import Outcome
from tests.flows.api.test_client import KEY, FakeClock

IDS = [f"00000000-0000-4000-8000-{n:012d}" for n in range(6)]
PAD = 1000


def answer(tid: str, status: str = "succeeded") -> bytes:
    """A response body of a bit more than PAD bytes."""
    body = {"id": tid.upper(), "status": status, "payload": {"transcript": []}, "pad": "x" * PAD}
    return json.dumps(body).encode()


def fetch(
    handler: Any, room: BatchBytes | None, ids: list[str] = IDS, **options: Any
) -> tuple[list[Outcome], list[str]]:
    """fetch_many over a MockTransport: the outcomes, and the paths requested in order."""
    requested: list[str] = []
    clock = FakeClock()

    def recording(request: httpx2.Request) -> httpx2.Response:
        requested.append(request.url.path.rsplit("/", 1)[1])
        response: httpx2.Response = handler(request)
        return response

    async def go() -> list[Outcome]:
        async with httpx2.AsyncClient(transport=httpx2.MockTransport(recording)) as http:
            opts = ClientOptions(api_url="http://api.test", **options)
            client = TranscriptionClient(http, opts, ApiKeyAuth(KEY), clock=clock, sleep=clock.sleep)
            outcomes, down = await client.fetch_many(ids, room=room)
            assert down is None
            return outcomes

    return asyncio.run(go()), requested


def tid_of(request: httpx2.Request) -> str:
    return request.url.path.rsplit("/", 1)[1]


def test_a_full_batch_starts_no_request_and_hands_the_ids_left_back_in_order() -> None:
    room = BatchBytes(limit=PAD + PAD // 2)  # full after two answers
    outcomes, requested = fetch(lambda r: httpx2.Response(200, content=answer(tid_of(r))), room, concurrency=1)
    assert [o.transcription_id for o in outcomes] == requested == IDS[:2]
    assert room.deferred == IDS[2:]
    assert room.held == sum(len(answer(t)) for t in IDS[:2]) == room.peak


def test_requests_under_way_when_the_batch_fills_up_finish() -> None:
    room = BatchBytes(limit=1)  # full after the first byte
    outcomes, requested = fetch(lambda r: httpx2.Response(200, content=answer(tid_of(r))), room, concurrency=3)
    assert len(outcomes) >= 1 and len(requested) <= 3  # at most the three under way
    assert sorted(o.transcription_id for o in outcomes) == sorted(requested)
    assert sorted(requested + room.deferred) == IDS  # each id either answered or handed back, never both


def test_bodies_not_kept_are_given_back() -> None:
    """An `ongoing` answer, a 404 (confirmed), a retried 503, a body over the cap: none stays in the batch."""
    room = BatchBytes(limit=PAD + PAD // 2)  # one kept answer would fill it
    seen: dict[str, int] = {}

    def handler(request: httpx2.Request) -> httpx2.Response:
        tid = tid_of(request)
        seen[tid] = seen.get(tid, 0) + 1
        if tid == IDS[0]:
            return httpx2.Response(200, content=answer(tid, "ongoing"))
        if tid == IDS[1]:
            return httpx2.Response(404, content=b'{"code": "not_found", "pad": "' + b"x" * PAD + b'"}')
        if tid == IDS[2] and seen[tid] == 1:
            return httpx2.Response(503, content=b" " * 2 * PAD)
        if tid == IDS[3]:
            return httpx2.Response(200, content=answer(tid) + b" " * 4 * PAD)  # over the cap below
        return httpx2.Response(200, content=answer(tid))

    ids = IDS[:5]
    outcomes, _ = fetch(handler, room, ids, concurrency=1, max_response_bytes=3 * PAD, retry=RetryPolicy(3))
    statuses = {o.transcription_id: (o.status, o.error_code) for o in outcomes}
    assert statuses == {
        IDS[0]: ("ongoing", None),
        IDS[1]: ("not_found", "not_found"),
        IDS[2]: ("succeeded", None),
        IDS[3]: ("error", "response_too_large"),
        IDS[4]: ("succeeded", None),
    }
    assert room.deferred == []  # the batch held none of the others' bytes: it never filled up before IDS[4]
    assert room.held == len(answer(IDS[2])) + len(answer(IDS[4]))


def test_without_a_limit_every_id_is_fetched() -> None:
    outcomes, requested = fetch(lambda r: httpx2.Response(200, content=answer(tid_of(r))), None, concurrency=1)
    assert len(outcomes) == len(requested) == len(IDS)
