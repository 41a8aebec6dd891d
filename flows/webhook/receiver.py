"""A small, real HTTP receiver for the vendor's webhook events (push delivery).

An event is accepted only when `x-nabla-webhook-signature` holds, among its comma-separated
values, the lower-case hex HMAC-SHA256 (keyed with the webhook secret) of the
`x-nabla-webhook-timestamp` header immediately followed by the raw body, compared in constant
time, and the timestamp is at most MAX_AGE_S old (or ahead). The answer is 200 only after the event
is durably landed: one NDJSON file per event, written to a temporary name of its own, fsynced,
atomically renamed, and the directory fsynced. A replayed event (same event id) lands once.

    413: a body over `max_body_bytes`: refused on its Content-Length before any of it is read, or
         (chunked) as soon as what was read exceeds the cap; no more than the cap is ever kept;
    401: bad, missing or stale signature;
    400: a signed body that is not an event ingest can read, `{"code": "malformed_event",
         "message": <short reason>}`: not UTF-8, not JSON, nested too deep, an integer too long,
         a lone surrogate escape, not a transcribe_async event, `data` not an object with a UUID
         `id` and a string `status`;
    500: the landing directory cannot be written (the vendor will redeliver), or an unexpected error.

Event content is patient data: no answer, log line or exception message quotes the body, and an
unexpected exception is logged by its type and place only. `MalformedEventError` (a ValueError
whose message is one of the short reasons above) is the one exception of this module; an OSError
from the disk propagates from `land_event`.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
import os
import secrets
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from flows.errors import raised_at
from flows.jsontext import JsonError, has_lone_surrogate, loads, strict_json
from flows.outcomes import is_uuid
from flows.storage.store import fsync_directory
from flows.webhook.asgi import (
    Message,
    Receive,
    Scope,
    Send,
    declared_length,
    header_map,
    read_body_at_most,
    send_json,
)
from transforms.jsonvalues import HugeInt

log = logging.getLogger(__name__)

MAX_AGE_S = 300.0
DEFAULT_MAX_EVENT_BYTES = 16 * 1024 * 1024
EVENT_TYPES = ("transcribe_async.succeeded", "transcribe_async.failed")
SIGNATURE_HEADER = "x-nabla-webhook-signature"
TIMESTAMP_HEADER = "x-nabla-webhook-timestamp"
_JSON_REASONS = {"too_deep": "event nested too deep", "not_json": "not JSON"}


class MalformedEventError(ValueError):
    """A signed body this receiver will not land; the message is a short reason quoting nothing."""


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


def _holds_huge_int(value: Any) -> bool:
    """Whether a parsed JSON value holds a HugeInt anywhere (iterative: the value may be deep)."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, HugeInt):
            return True
        if isinstance(item, dict):
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return False


def _check_envelope(event: Any) -> dict[str, Any]:
    """The event if ingest would read it; MalformedEventError naming the first thing wrong."""
    if not (isinstance(event, dict) and isinstance(event.get("id"), str) and event["id"]):
        raise MalformedEventError("not a transcribe_async event")
    if event.get("type") not in EVENT_TYPES:
        raise MalformedEventError("not a transcribe_async event")
    data = event.get("data")
    if not isinstance(data, dict):
        raise MalformedEventError("data is not an object")
    if not is_uuid(data.get("id")):
        raise MalformedEventError("data.id is not a UUID")
    if not isinstance(data.get("status"), str):
        raise MalformedEventError("data.status is not a string")
    return event


def parse_event(body: bytes) -> dict[str, Any]:
    """The webhook event in a signed body; MalformedEventError (a short reason) when it is none."""
    if has_lone_surrogate(body):  # checked on the raw bytes: the parser would repair it silently
        raise MalformedEventError("broken unicode escape")
    try:
        body.decode("utf-8")  # the JSON parser would let raw surrogate bytes through
    except UnicodeDecodeError:
        raise MalformedEventError("not UTF-8 text") from None
    try:
        event = loads(body)
    except JsonError as exc:
        raise MalformedEventError(_JSON_REASONS.get(exc.reason, "not JSON")) from None
    if _holds_huge_int(event):
        raise MalformedEventError("integer too long")
    return _check_envelope(event)


def event_line(event: dict[str, Any]) -> bytes:
    """The event as one line of strict JSON in UTF-8; MalformedEventError if it cannot be written."""
    text = strict_json(event, separators=(",", ":"))
    if text is None:
        raise MalformedEventError("event nested too deep")
    try:
        return text.encode("utf-8") + b"\n"
    except UnicodeEncodeError:
        raise MalformedEventError("broken unicode escape") from None


def land_event(landing: Path, event_id: str, line: bytes) -> bool:
    """Durably write `line` as `landing/events-<hash of event_id>.ndjson`; False if already there.

    The temporary file is removed whenever a step fails, and the error propagates.
    """
    name = "events-" + hashlib.sha256(event_id.encode()).hexdigest()[:32] + ".ndjson"
    target = landing / name
    if target.exists():
        return False
    tmp = landing / f".{name}.{secrets.token_hex(8)}.tmp"  # its own name: concurrent writers never share one
    try:
        with tmp.open("xb") as handle:
            handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())
        tmp.replace(target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise
    fsync_directory(landing)
    return True


class WebhookApp:
    """The ASGI receiver. `clock` is injectable for tests; bodies over `max_body_bytes` get 413."""

    def __init__(
        self,
        landing: Path,
        secret: str,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        max_body_bytes: int = DEFAULT_MAX_EVENT_BYTES,
    ):
        if max_body_bytes < 1:
            raise ValueError("max_body_bytes must be at least 1")
        self.landing = landing
        self.max_body_bytes = max_body_bytes
        self._secret = secret
        self._clock = clock
        landing.mkdir(parents=True, exist_ok=True)

    def __repr__(self) -> str:
        return f"WebhookApp(landing={self.landing!s}, max_body_bytes={self.max_body_bytes}, secret=<redacted>)"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        started = False

        async def tracked_send(message: Message) -> None:
            nonlocal started
            started = True
            await send(message)

        try:
            await self._answer(scope, receive, tracked_send)
        except Exception as exc:  # the boundary: the server would log the message, which may quote the event
            log.error("webhook: %s at %s while handling a delivery", type(exc).__name__, raised_at(exc))
            if not started:
                await send_json(send, 500, {"code": "internal_error", "message": "could not handle the event"})

    async def _read_body(self, scope: Scope, receive: Receive) -> bytes | None:
        """The body, or None when it is over the cap (then at most the cap plus one chunk was read)."""
        declared = declared_length(scope)
        if declared is not None and declared > self.max_body_bytes:
            return None
        return await read_body_at_most(receive, self.max_body_bytes)

    async def _answer(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] != "POST":
            await send_json(send, 405, {"code": "method_not_allowed", "message": "POST events here"})
            return
        body = await self._read_body(scope, receive)
        if body is None:
            message = f"an event body is at most {self.max_body_bytes} bytes"
            await send_json(send, 413, {"code": "body_too_large", "message": message})
            return
        headers = header_map(scope)
        timestamp, signature = headers.get(TIMESTAMP_HEADER, ""), headers.get(SIGNATURE_HEADER, "")
        if not signature_is_valid(self._secret, timestamp, body, signature):
            await send_json(send, 401, {"code": "invalid_signature", "message": "signature does not match"})
            return
        if not timestamp_is_fresh(timestamp, self._clock()):
            await send_json(send, 401, {"code": "stale_timestamp", "message": "timestamp too old or in the future"})
            return
        await self._land(body, send)

    async def _land(self, body: bytes, send: Send) -> None:
        """Parse, check and land a signed body, answering 400, 500 or 200."""
        try:
            event = parse_event(body)
            line = event_line(event)
        except MalformedEventError as exc:
            await send_json(send, 400, {"code": "malformed_event", "message": str(exc)})
            return
        try:
            landed = land_event(self.landing, event["id"], line)
        except OSError as exc:
            log.error("webhook: could not land an event in %s: %s", self.landing, exc.strerror or type(exc).__name__)
            await send_json(send, 500, {"code": "landing_failed", "message": "could not store the event"})
            return
        await send_json(send, 200, {"status": "landed" if landed else "duplicate"})
