"""One HTTP exchange with the API, bounded in time and in size; httpx errors translated here.

A request has a total deadline (connect, headers and the whole body: a body dripping a byte
at a time never trips the read timeout) and its body a size cap counted after decompression
(a small gzip body can decompress to gigabytes). The body is streamed and reading stops at
the cap, so memory never holds much more than the cap.

Only a 200's body is needed whole. An error status's body gives at most a `code`, so when it is
too large or cannot be decompressed it is read as empty and the status speaks alone.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import httpx

from flows.errors import MalformedResponseError, PermanentApiError, TransientApiError


@dataclass(frozen=True)
class Reply:
    """An HTTP answer read whole: its status, headers and decoded body (at most the size cap)."""

    status_code: int
    headers: httpx.Headers
    content: bytes
    authorization: str  # the Authorization header it answers, to renew that very token after a 401


async def exchange(
    pool: httpx.AsyncClient, url: str, headers: dict[str, str], *, max_bytes: int, deadline_s: float
) -> Reply:
    """One GET within `deadline_s` in all, its body read up to `max_bytes`; ApiError when it cannot."""
    try:
        async with asyncio.timeout(deadline_s):
            async with pool.stream("GET", url, headers=headers) as response:
                content = await _read_body(response, max_bytes)
    except TimeoutError:  # asyncio.timeout's: httpx's own timeouts are no TimeoutError
        raise TransientApiError(
            f"deadline exceeded ({deadline_s:g} s for the whole request)", network="timeout"
        ) from None
    except httpx.TimeoutException as exc:
        raise TransientApiError(f"timeout ({type(exc).__name__})", network="timeout") from None
    except httpx.TransportError as exc:
        raise TransientApiError(f"transport error ({type(exc).__name__})") from None
    return Reply(response.status_code, response.headers, content, headers["Authorization"])


async def _read_body(response: httpx.Response, cap: int) -> bytes:
    """The decoded body; a 200 beyond `cap` (declared or read) or that cannot be decompressed raises."""
    try:
        body = None if _declared_length(response) > cap else await _read_capped(response, cap)
    except httpx.DecodingError:
        if response.status_code == 200:
            raise MalformedResponseError("HTTP 200 with a body that cannot be decompressed", status_code=200) from None
        return b""
    if body is not None:
        return body
    if response.status_code == 200:
        raise PermanentApiError(f"response body larger than {cap} bytes", status_code=200, code="response_too_large")
    return b""


async def _read_capped(response: httpx.Response, cap: int) -> bytes | None:
    """The decoded body (`aiter_bytes` decompresses as it goes), or None as soon as it exceeds `cap`."""
    body = bytearray()
    async for chunk in response.aiter_bytes():
        if len(body) + len(chunk) > cap:  # checked first: one decoded read can be ~1000x its 64 KiB
            return None  # the caller's `stream` context closes the response and its connection
        body += chunk
    return bytes(body)


def _declared_length(response: httpx.Response) -> int:
    """The Content-Length header's value, 0 when absent or unusable (the body is counted anyway)."""
    declared = response.headers.get("Content-Length", "").strip()
    if not (declared.isascii() and declared.isdigit()):
        return 0
    digits = declared.lstrip("0")
    return int(digits) if len(digits) <= 18 else 10**18  # int() refuses 4300 digits and more
