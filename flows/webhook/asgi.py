"""Minimal raw-ASGI helpers shared by the emulator and the webhook receiver.

Raw ASGI (no framework) keeps full control of the wire: the emulator must be able to cut a
response mid-body, and the webhook receiver must verify signatures over the exact raw bytes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_CONTENT_LENGTH = re.compile(r"[0-9]{1,18}")  # longer is no usable length: the capped read decides


def header_map(scope: Scope) -> dict[str, str]:
    """Request headers, names lower-cased."""
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}


async def read_body(receive: Receive) -> bytes:
    """The whole request body (for trusted callers: it reads without limit)."""
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


async def read_body_at_most(receive: Receive, max_bytes: int) -> bytes | None:
    """The request body, or None as soon as it exceeds `max_bytes` (nothing more is read or kept)."""
    chunks, size = [], 0
    while True:
        message = await receive()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > max_bytes:
            return None
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)


def declared_length(scope: Scope) -> int | None:
    """The request's Content-Length, or None when it has none (a chunked body) or an unreadable one."""
    value = header_map(scope).get("content-length", "").strip()
    return int(value) if _CONTENT_LENGTH.fullmatch(value) else None


async def send_bytes(
    send: Send, status: int, body: bytes, content_type: str, extra: dict[str, str] | None = None
) -> None:
    headers = [(b"content-type", content_type.encode()), (b"content-length", str(len(body)).encode())]
    headers += [(k.encode(), v.encode()) for k, v in (extra or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def send_json(send: Send, status: int, payload: Any, extra: dict[str, str] | None = None) -> None:
    await send_bytes(send, status, json.dumps(payload).encode(), "application/json", extra)
