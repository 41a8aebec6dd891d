"""A small, real HTTP receiver for the vendor's webhook events (push delivery).

An event is accepted only when `x-nabla-webhook-signature` holds, among its comma-separated
values, the lower-case hex HMAC-SHA256 (keyed with the webhook secret) of the
`x-nabla-webhook-timestamp` header immediately followed by the raw body, compared in constant
time, and the timestamp is at most MAX_AGE_S old (or ahead). The answer is 200 only after the event
is durably landed: one NDJSON file per event, written to a temporary name, fsynced, atomically
renamed, and the directory fsynced. A replayed event (same event id) lands once.

    401: bad, missing or stale signature;  400: a body that is not a valid event;
    500: the landing directory cannot be written (the vendor will redeliver).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from flows.webhook.asgi import Receive, Scope, Send, header_map, read_body, send_json

MAX_AGE_S = 300.0
EVENT_TYPES = ("transcribe_async.succeeded", "transcribe_async.failed")
SIGNATURE_HEADER = "x-nabla-webhook-signature"
TIMESTAMP_HEADER = "x-nabla-webhook-timestamp"


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The signature the vendor sends for this timestamp and raw body."""
    return hmac.new(secret.encode(), timestamp.encode() + body, hashlib.sha256).hexdigest()


def signature_is_valid(secret: str, timestamp: str, body: bytes, header: str) -> bool:
    """Whether any of the header's comma-separated signatures matches (constant-time compare)."""
    expected = sign(secret, timestamp, body)
    candidates = [c.strip() for c in header.split(",") if c.strip()]
    return any(hmac.compare_digest(expected, c) for c in candidates)


def timestamp_is_fresh(timestamp: str, now: datetime) -> bool:
    """An ISO-8601 timestamp within MAX_AGE_S of now."""
    try:
        when = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    except ValueError:
        return False
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return abs((now - when).total_seconds()) <= MAX_AGE_S


def parse_event(body: bytes) -> dict[str, Any] | None:
    """The event if the body is a well-formed webhook event, else None."""
    try:
        event = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    valid = isinstance(event, dict) and isinstance(event.get("id"), str) and event["id"]
    valid = valid and event.get("type") in EVENT_TYPES and isinstance(event.get("data"), dict)
    return event if valid else None


def land_event(landing: Path, event: dict[str, Any]) -> bool:
    """Durably write the event as `landing/events-<hash of id>.ndjson`; False if it was already there."""
    name = "events-" + hashlib.sha256(event["id"].encode()).hexdigest()[:32] + ".ndjson"
    target = landing / name
    if target.exists():
        return False
    tmp = landing / f".{name}.tmp"
    with tmp.open("wb") as handle:
        handle.write(json.dumps(event, ensure_ascii=False, separators=(",", ":")).encode() + b"\n")
        handle.flush()
        os.fsync(handle.fileno())
    tmp.replace(target)
    directory = os.open(landing, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
    return True


class WebhookApp:
    """The ASGI receiver. `clock` is injectable for tests."""

    def __init__(self, landing: Path, secret: str, *, clock: Callable[[], datetime] = lambda: datetime.now(UTC)):
        self.landing = landing
        self._secret = secret
        self._clock = clock
        landing.mkdir(parents=True, exist_ok=True)

    def __repr__(self) -> str:
        return f"WebhookApp(landing={self.landing!s}, secret=<redacted>)"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        if scope["method"] != "POST":
            await send_json(send, 405, {"code": "method_not_allowed", "message": "POST events here"})
            return
        body = await read_body(receive)
        headers = header_map(scope)
        timestamp, signature = headers.get(TIMESTAMP_HEADER, ""), headers.get(SIGNATURE_HEADER, "")
        if not signature_is_valid(self._secret, timestamp, body, signature):
            await send_json(send, 401, {"code": "invalid_signature", "message": "signature does not match"})
            return
        if not timestamp_is_fresh(timestamp, self._clock()):
            await send_json(send, 401, {"code": "stale_timestamp", "message": "timestamp too old or in the future"})
            return
        event = parse_event(body)
        if event is None:
            await send_json(send, 400, {"code": "malformed_event", "message": "not a transcribe_async event"})
            return
        try:
            landed = land_event(self.landing, event)
        except OSError:
            await send_json(send, 500, {"code": "landing_failed", "message": "could not store the event"})
            return
        await send_json(send, 200, {"status": "landed" if landed else "duplicate"})
