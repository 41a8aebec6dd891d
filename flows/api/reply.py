"""One HTTP exchange with the API, bounded in time and in size; httpx2 errors translated here.

A request has a total deadline (connect, headers and the whole body: a body dripping a byte
at a time never trips the read timeout) and its body a size cap counted after decompression
(a small gzip body can decompress to gigabytes). The body is streamed and reading stops at
the cap, so memory never holds much more than the cap.

The bytes read are also counted, as they arrive, against the batch's `BatchBytes` when one is given
(`flows.api.batchbytes`), and given back if the body is not returned.

Only a 200's body is needed whole. An error status's body gives at most a `code`, so when it is
too large or cannot be decompressed it is read as empty and the status speaks alone.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import httpx2

from flows.api.batchbytes import BatchBytes
from flows.errors import MalformedResponseError, PermanentApiError, TransientApiError
from flows.settings import MIB


@dataclass(frozen=True)
class Reply:
    """An HTTP answer read whole: its status, headers and decoded body (at most the size cap)."""

    status_code: int
    headers: httpx2.Headers
    content: bytes
    authorization: str  # the Authorization header it answers, to renew that very token after a 401


async def exchange(
    pool: httpx2.AsyncClient,
    url: str,
    headers: dict[str, str],
    *,
    max_bytes: int,
    deadline_s: float,
    room: BatchBytes | None = None,
) -> Reply:
    """One GET within `deadline_s` in all, its body read up to `max_bytes` (and counted in `room` as it
    arrives: the caller gives back what it does not keep); ApiError when it cannot."""
    try:
        async with asyncio.timeout(deadline_s):
            async with pool.stream("GET", url, headers=headers) as response:
                content = await _read_body(response, max_bytes, room or BatchBytes(limit=1 << 62))
    except TimeoutError:  # asyncio.timeout's: httpx's own timeouts are no TimeoutError
        raise TransientApiError(
            f"{host_port(url)} took longer than the {deadline_s:g} s request deadline", network="timeout"
        ) from None
    except httpx2.TimeoutException as exc:
        raise TransientApiError(network_cause(exc, url), network="timeout") from None
    except httpx2.TransportError as exc:
        raise TransientApiError(network_cause(exc, url)) from None
    return Reply(response.status_code, response.headers, content, headers["Authorization"])


# The API client speaks httpx2; Prefect's client (whose failures the CLI names too) speaks httpx: the
# same exception tree under two names.
_CONNECT_TIMEOUT = (httpx2.ConnectTimeout, httpx.ConnectTimeout)
_TIMEOUT = (httpx2.TimeoutException, httpx.TimeoutException)
_PROTOCOL = (httpx2.RemoteProtocolError, httpx.RemoteProtocolError)
_CONNECT = (httpx2.ConnectError, httpx.ConnectError)
_PHASES = {
    "ReadTimeout": "reading",
    "WriteTimeout": "writing",
    "PoolTimeout": "waiting for a connection",
}


def network_cause(exc: httpx2.TransportError | httpx.TransportError, url: str) -> str:
    """What a transport error was, in a few words naming host and port only (never a path or a query):
    `connection refused to 127.0.0.1:9`, `connect to api.example.com:443 timed out`, `TLS error with …`."""
    where = host_port(url)
    if isinstance(exc, _CONNECT_TIMEOUT):
        return f"connect to {where} timed out"
    if isinstance(exc, _TIMEOUT):
        return f"{where} timed out ({_PHASES.get(type(exc).__name__, 'timeout')})"
    for link in _chain(exc):
        if isinstance(link, ssl.SSLCertVerificationError):
            return f"TLS error with {where}: certificate not trusted"
        if isinstance(link, ssl.SSLError):
            return f"TLS error with {where}"
        if isinstance(link, socket.gaierror):
            return f"host name not resolved: {where}"
        if isinstance(link, ConnectionRefusedError):
            return f"connection refused to {where}"
        if isinstance(link, ConnectionResetError):
            return f"connection reset by {where}"
    if isinstance(exc, _PROTOCOL):
        return f"{where} closed the connection or broke the HTTP protocol"
    if isinstance(exc, _CONNECT):
        return f"cannot connect to {where}"
    return f"network error with {where} ({type(exc).__name__})"


def host_port(url: str) -> str:
    """`host:port` of a URL (the scheme's default port when it names none): safe to show."""
    try:
        parsed = httpx2.URL(url)
    except (httpx2.InvalidURL, TypeError):
        return "the API"
    port = parsed.port or {"https": 443, "http": 80}.get(parsed.scheme)
    host = f"[{parsed.host}]" if ":" in parsed.host else parsed.host
    return f"{host}:{port}" if port else host or "the API"


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """The exception and those it was raised from or during (at most 10: chains can loop)."""
    seen: BaseException | None = exc
    for _ in range(10):
        if seen is None:
            return
        yield seen
        seen = seen.__cause__ or seen.__context__


async def _read_body(response: httpx2.Response, cap: int, room: BatchBytes) -> bytes:
    """The decoded body; a 200 beyond `cap` (declared or read) or that cannot be decompressed raises."""
    try:
        body = None if _declared_length(response) > cap else await _read_capped(response, cap, room)
    except httpx2.DecodingError:
        if response.status_code == 200:
            raise MalformedResponseError("HTTP 200 with a body that cannot be decompressed", status_code=200) from None
        return b""
    if body is not None:
        return body
    if response.status_code == 200:
        raise PermanentApiError(
            f"response body larger than the cap of {cap / MIB:,.2f} MiB (--max-response-mb, lowered to a batch's "
            "share of --memory-budget-mb): not decoded",
            status_code=200,
            code="response_too_large",
        )
    return b""


async def _read_capped(response: httpx2.Response, cap: int, room: BatchBytes) -> bytes | None:
    """The decoded body (`aiter_bytes` decompresses as it goes), or None as soon as it exceeds `cap`; its
    bytes are counted in `room` as they arrive, and given back unless the body is returned whole."""
    body = bytearray()
    whole = False
    try:
        async for chunk in response.aiter_bytes():
            if len(body) + len(chunk) > cap:  # checked first: one decoded read can be ~1000x its 64 KiB
                return None  # the caller's `stream` context closes the response and its connection
            body += chunk
            room.received(len(chunk))
        whole = True
        return bytes(body)
    finally:
        if not whole:
            room.released(len(body))


def _declared_length(response: httpx2.Response) -> int:
    """The Content-Length header's value, 0 when absent or unusable (the body is counted anyway)."""
    declared = response.headers.get("Content-Length", "").strip()
    if not (declared.isascii() and declared.isdigit()):
        return 0
    digits = declared.lstrip("0")
    return int(digits) if len(digits) <= 18 else 10**18  # int() refuses 4300 digits and more
