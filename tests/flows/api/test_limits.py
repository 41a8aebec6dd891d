"""Limits of one request: its body's size after decompression, and its total time.

A deterministic huge body is an `error` row (response_too_large) read no further than the cap;
a request past its deadline is retried like a timeout. Both give their connection back.
"""

from __future__ import annotations

import asyncio
import json
import zlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx2
import pytest

from flows.api.retry import RetryPolicy
from flows.errors import AuthenticationError
from tests.flows.api.test_client import TID, FakeClock, run, succeeded

FAST_RETRY = RetryPolicy(max_attempts=3)


# Size cap ------------------------------------------------------------------------------------

MIB = 1024 * 1024


class LazyBody(httpx2.AsyncByteStream):
    """A response body produced chunk by chunk as it is read; counts what was read, and closing."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self.served = 0
        self.closed = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self._chunks:
            self.served += 1
            yield chunk

    async def aclose(self) -> None:
        self.closed = True


def gzip_of_spaces(blocks: int, block: int = MIB) -> Iterator[bytes]:
    """A gzip stream of `blocks` MiB of spaces, compressed one block at a time (about 1 KiB each)."""
    packer = zlib.compressobj(wbits=31)
    for _ in range(blocks):
        yield packer.compress(b" " * block) + packer.flush(zlib.Z_SYNC_FLUSH)
    yield packer.flush()


def test_a_body_decompressing_beyond_the_cap_is_an_error_row_read_no_further() -> None:
    bodies: list[LazyBody] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        bodies.append(LazyBody(gzip_of_spaces(blocks=256)))
        return httpx2.Response(200, headers={"Content-Encoding": "gzip"}, stream=bodies[-1])

    outcomes, down = run(handler, [TID], max_response_bytes=2 * MIB)
    assert [(o.status, o.error_code) for o in outcomes] == [("error", "response_too_large")]
    assert down is None and len(bodies) == 1, "a deterministic huge body is not retried"
    assert bodies[0].served <= 4, "read past the cap: the memory was spent"
    assert bodies[0].closed


def test_a_declared_length_beyond_the_cap_is_refused_before_reading() -> None:
    bodies: list[LazyBody] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        bodies.append(LazyBody(iter([b" " * MIB] * 8)))
        return httpx2.Response(200, headers={"Content-Length": str(8 * MIB)}, stream=bodies[-1])

    outcomes, _ = run(handler, [TID], max_response_bytes=MIB)
    assert [(o.status, o.error_code) for o in outcomes] == [("error", "response_too_large")]
    assert (bodies[0].served, bodies[0].closed) == (0, True)


@pytest.mark.parametrize(
    ("status", "expected"),
    [(404, ("not_found", None)), (400, ("error", "http_400")), (503, ("error", "retries_exhausted"))],
    ids=["404", "400", "503"],
)
def test_an_error_status_with_a_body_beyond_the_cap_keeps_its_meaning(status: int, expected: tuple[str, Any]) -> None:
    """Only a 200's body is needed whole; an error's body only gives a code, so it is dropped."""
    body = json.dumps({"code": "c" * MIB}).encode()
    outcomes, _ = run(lambda r: httpx2.Response(status, content=body), [TID], max_response_bytes=MIB, retry=FAST_RETRY)
    assert [(o.status, o.error_code) for o in outcomes] == [expected]


def test_a_401_with_a_body_beyond_the_cap_still_stops_the_run() -> None:
    with pytest.raises(AuthenticationError):
        run(lambda r: httpx2.Response(401, content=b" " * (2 * MIB)), [TID], max_response_bytes=MIB)


def test_a_body_up_to_the_cap_is_read() -> None:
    body = json.dumps(succeeded()).encode()
    outcomes, _ = run(lambda r: httpx2.Response(200, content=body), [TID], max_response_bytes=len(body))
    assert [o.status for o in outcomes] == ["succeeded"] and outcomes[0].body == body


@pytest.mark.parametrize(
    ("status", "expected"), [(200, ("error", "malformed_response")), (404, ("not_found", None))], ids=["200", "404"]
)
def test_a_body_that_fails_to_decompress_is_unreadable_not_fatal(status: int, expected: tuple[str, Any]) -> None:
    """httpx raises DecodingError, which is no TransportError: it used to abort the run."""
    outcomes, down = run(
        lambda r: httpx2.Response(status, headers={"Content-Encoding": "gzip"}, stream=LazyBody(iter([b"not gzip"]))),
        [TID],
        retry=FAST_RETRY,
    )
    assert [(o.status, o.error_code) for o in outcomes] == [expected] and down is None


# Deadline ------------------------------------------------------------------------------------

DEADLINE_S = 0.2
SLOW_S = DEADLINE_S * 50  # how long a slow answer lasts: without a deadline the test fails after it
OTHER_ID = "00000000-0000-4000-8000-000000000000"
LATE_ANSWER = json.dumps({"id": OTHER_ID, "status": "ongoing"}).encode()  # an id_mismatch row if ever read


class DrippingBody(httpx2.AsyncByteStream):
    """A body arriving a byte at a time (each well within any read timeout) for SLOW_S seconds."""

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield LATE_ANSWER[:1]
        for _ in range(50):
            await asyncio.sleep(SLOW_S / 50)
            yield b" "
        yield LATE_ANSWER[1:]


async def slow_headers(request: httpx2.Request) -> httpx2.Response:
    await asyncio.sleep(SLOW_S)
    return httpx2.Response(200, content=LATE_ANSWER)


@pytest.mark.parametrize(
    "slow",
    [lambda r: httpx2.Response(200, stream=DrippingBody()), slow_headers],
    ids=["dripping_body", "slow_headers"],
)
def test_a_request_past_its_deadline_is_retried_like_a_timeout(slow: Any) -> None:
    """Not a timing assertion: without a deadline the slow answer ends, after SLOW_S, as an id_mismatch row."""
    answers = iter([slow, lambda r: httpx2.Response(200, json=succeeded())])
    outcomes, _ = run(lambda r: next(answers)(r), [TID], request_deadline_s=DEADLINE_S)
    assert [o.status for o in outcomes] == ["succeeded"]


def test_a_request_always_past_its_deadline_ends_as_an_error_row() -> None:
    outcomes, down = run(
        lambda r: httpx2.Response(200, stream=DrippingBody()),
        [TID],
        request_deadline_s=DEADLINE_S,
        retry=RetryPolicy(max_attempts=2),
    )
    assert [(o.status, o.error_code) for o in outcomes] == [("error", "retries_exhausted")] and down is None
    assert "deadline" in (outcomes[0].error_message or "")


# Settings ------------------------------------------------------------------------------------


def test_the_limits_go_from_the_command_line_to_the_client() -> None:
    from flows.api.service import client_options
    from flows.cli.commands import build_parser, run_settings

    required = ["run", "--api-url", "http://api.test", "--ids", "ids.txt", "--out", "out"]
    defaults = client_options(run_settings(build_parser().parse_args(required)))
    # the cap is the smaller of --max-response-mb (64) and a batch's share of the memory budget:
    # 1024 MiB / (20 x (3 in flight + 1)) = 12.8 MiB
    assert (defaults.max_response_bytes, defaults.request_deadline_s) == (1024 * MIB // 80, 120.0)
    args = build_parser().parse_args([*required, "--max-response-mb", "0.5", "--request-deadline", "3m"])
    options = client_options(run_settings(args))
    assert (options.max_response_bytes, options.request_deadline_s) == (MIB // 2, 180.0)
    roomy = client_options(run_settings(build_parser().parse_args([*required, "--memory-budget-mb", "8192"])))
    assert roomy.max_response_bytes == 64 * MIB


@pytest.mark.parametrize(
    "option",
    [
        ["--max-response-mb", "0"],
        ["--max-response-mb", "inf"],
        ["--request-deadline", "0s"],
        ["--request-deadline", "nan"],
    ],
    ids=["zero_cap", "infinite_cap", "zero_deadline", "nan_deadline"],
)
def test_an_unusable_limit_is_a_settings_error(option: list[str]) -> None:
    from flows.cli.commands import build_parser, run_settings
    from flows.errors import ConfigurationError

    args = build_parser().parse_args(["run", "--api-url", "u", "--ids", "i", "--out", "o", *option])
    with pytest.raises(ConfigurationError):
        run_settings(args)


# Both limits over a real socket ----------------------------------------------------------------

BIG_ID, DRIP_ID = "00000000-0000-4000-8000-0000000000b1", "00000000-0000-4000-8000-0000000000d1"
DECLARED_ID = "00000000-0000-4000-8000-0000000000c1"
# Compressed ahead: the server shares the client's event loop, and compressing as it serves would
# make the client miss its deadline. 16 MiB decoded against a 2 MiB cap.
BIG_BODY = [b"%x\r\n%s\r\n" % (len(chunk), chunk) for chunk in gzip_of_spaces(blocks=16) if chunk]


async def _answer(tid: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
    """Write one answer; False when the connection cannot be kept (the client gave up on it)."""
    if tid == BIG_ID:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n")
        for chunk in BIG_BODY:
            writer.write(chunk)
            await writer.drain()
        return False
    if tid == DECLARED_ID:  # refused unread: only closing the response gives the connection back
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % (16 * MIB))
        await writer.drain()
        await reader.read()  # until the client hangs up
        return False
    if tid == DRIP_ID:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
        for _ in range(int(SLOW_S / 0.02)):
            writer.write(b" ")
            await writer.drain()
            await asyncio.sleep(0.02)
        return False
    body = json.dumps(succeeded(tid)).encode()
    writer.write(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    await writer.drain()
    return True


async def _serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while request := await reader.readline():
            while await reader.readline() not in (b"\r\n", b""):
                pass
            if not await _answer(request.split()[1].decode().rsplit("/", 1)[1], reader, writer):
                break
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        writer.close()


def test_a_refused_body_and_a_missed_deadline_give_their_connection_back() -> None:
    """One connection in the pool: had either request kept it, the ids after it could not be fetched."""
    from flows.api.auth import ApiKeyAuth
    from flows.api.client import ClientOptions, TranscriptionClient, make_http_client

    ids = [BIG_ID, TID, DECLARED_ID, "00000000-0000-4000-8000-000000000001", DRIP_ID, OTHER_ID]

    async def go() -> list[tuple[str, str | None]]:
        server = await asyncio.start_server(_serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        options = ClientOptions(
            api_url=f"http://127.0.0.1:{port}",
            concurrency=1,
            max_response_bytes=2 * MIB,
            request_deadline_s=DEADLINE_S,
            retry=RetryPolicy(max_attempts=1),
        )
        async with server, make_http_client(concurrency=1, timeout=httpx2.Timeout(SLOW_S / 2)) as http:
            clock = FakeClock()
            client = TranscriptionClient(http, options, ApiKeyAuth("k"), clock=clock, sleep=clock.sleep)
            outcomes, _ = await client.fetch_many(ids)
        return [(o.status, o.error_code) for o in outcomes]

    assert asyncio.run(go()) == [
        ("error", "response_too_large"),
        ("succeeded", None),
        ("error", "response_too_large"),
        ("succeeded", None),
        ("error", "retries_exhausted"),
        ("succeeded", None),
    ]
