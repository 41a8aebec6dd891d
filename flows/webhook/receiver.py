"""A small, real HTTP receiver for the vendor's webhook events (push delivery).

A POST is checked in the order that keeps an unauthenticated client cheap (flows.webhook.events):

1. its headers, before any body byte is read: a timestamp and a signature header present, the
   signature header holding a lower-case hex SHA-256, the timestamp an ISO-8601 date and time at
   most MAX_AGE_S old or ahead, and a Content-Length (if any) within `max_body_bytes`;
2. a body slot: at most `max_concurrent_bodies` bodies are read at once, so reading holds at most
   that many times `max_body_bytes`; a request that finds none free within `slot_wait_s` gets 503;
3. the body, read within `read_timeout_s` (and never past `max_body_bytes`);
4. the signature over the raw body (constant time), then the event, then the landing.

The answer is 200 only after the event is durably landed: one NDJSON file per event, written to a
temporary name of its own, fsynced, atomically renamed, and the directory fsynced. A replayed event
(same event id) lands once. Every refusal is `{"code": <reason>, "message": <what to fix>}` and
closes the connection:

    401 missing_timestamp / missing_signature: the header is absent or blank;
    401 invalid_signature: the signature header holds no lower-case hex SHA-256, or none matches;
    401 bad_timestamp: a timestamp that is not an ISO-8601 date and time (Unix seconds, say);
    401 stale_timestamp / future_timestamp: more than MAX_AGE_S behind or ahead of this server's clock;
    413 body_too_large: a body over `max_body_bytes`: refused on its Content-Length before any of it
         is read, or (chunked) as soon as what was read exceeds the cap; no more than the cap is kept;
    408 body_timeout: the body was not received within `read_timeout_s`;
    503 busy: every body slot stayed taken for `slot_wait_s`;
    400 malformed_event: a signed body that is not an event ingest can read, with a short reason
         (flows.webhook.events.parse_event);
    500 landing_failed / internal_error: the landing directory cannot be written (the vendor will
         redeliver), or an unexpected error.

Headers that do not arrive within `read_timeout_s`, and connections over `max_connections`, are
answered by the HTTP protocol itself (flows.webhook.server): 408 header_timeout, 503
too_many_connections.

What lands follows the receiver's text policy (`text`, `talktime webhook --text`): `keep` lands the
event as received; `drop` and `hash` land each transcript text as its shape only (one `_` per word,
a final `?` for a question: ingest computes the same metrics from it), and `hash` also its keyed
HMAC-SHA256 (`flows.webhook.events.landed_event`).

`GET /healthz` answers 200 `{"status": "ok", "landing_writable": true}` without authentication, or
503 when the landing directory is missing or not writable; any other non-POST request is 405.

Every request logs one line on `talktime.webhook.access` (ACCESS_LOG): method, path without query
string, status, reason, response bytes, duration and client address; never a header or the body.
Event content is patient data: no answer, log line or exception message quotes the body, and an
unexpected exception is logged by its type and place only.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from flows.errors import raised_at
from flows.webhook.asgi import Message, Receive, Scope, Send, declared_length, header_map, read_body_at_most, send_json
from flows.webhook.events import (
    MAX_AGE_S,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    MalformedEventError,
    event_line,
    land_event,
    landed_event,
    parse_event,
    signature_header_refusal,
    signature_is_valid,
    timestamp_refusal,
)
from transforms.text import TextPolicyName

__all__ = ["MAX_AGE_S", "ReceiverLimits", "WebhookApp", "parse_event", "signature_is_valid"]

log = logging.getLogger(__name__)
ACCESS_LOG = "talktime.webhook.access"
access_log = logging.getLogger(ACCESS_LOG)

DEFAULT_MAX_EVENT_BYTES = 16 * 1024 * 1024
DEFAULT_READ_TIMEOUT_S = 10.0
DEFAULT_MAX_CONCURRENT_BODIES = 8
DEFAULT_MAX_CONNECTIONS = 256
DEFAULT_SLOT_WAIT_S = 1.0
HEALTH_PATH = "/healthz"
_PATH_LOGGED_CHARS = 200
_CLOSE = {"connection": "close"}

Answer = tuple[int, dict[str, Any]]


@dataclass(frozen=True)
class ReceiverLimits:
    """The receiver's bounds: memory (bodies, connections) and time (reading a request)."""

    max_body_bytes: int = DEFAULT_MAX_EVENT_BYTES  # a larger body: 413
    read_timeout_s: float = DEFAULT_READ_TIMEOUT_S  # headers, then the body, each within this: else 408
    max_concurrent_bodies: int = DEFAULT_MAX_CONCURRENT_BODIES  # bodies read at once
    max_connections: int = DEFAULT_MAX_CONNECTIONS  # open connections; more: 503 and closed
    slot_wait_s: float = DEFAULT_SLOT_WAIT_S  # how long a request waits for a body slot: else 503

    def __post_init__(self) -> None:
        if self.max_body_bytes < 1 or self.max_concurrent_bodies < 1 or self.max_connections < 1:
            raise ValueError("max_body_bytes, max_concurrent_bodies and max_connections must be at least 1")
        if not (self.read_timeout_s > 0 and self.slot_wait_s >= 0):  # also refuses nan
            raise ValueError("read_timeout_s must be positive and slot_wait_s not negative")

    @property
    def bodies_bytes(self) -> int:
        """The most body bytes held at once by requests being read."""
        return self.max_concurrent_bodies * self.max_body_bytes


def _printable(data: bytes | str, limit: int = _PATH_LOGGED_CHARS) -> str:
    """`data` safe for one log line: bytes outside visible ASCII percent-encoded, at most `limit` chars."""
    raw = data.encode("utf-8", "surrogateescape") if isinstance(data, str) else data
    cleaned = "".join(chr(b) if 0x21 <= b <= 0x7E else f"%{b:02X}" for b in raw[: limit + 1])
    return cleaned if len(cleaned) <= limit else cleaned[:limit] + "..."


def _logged_path(scope: Scope) -> str:
    """The request path as received, without its query string (which may carry anything)."""
    raw = scope.get("raw_path")
    return _printable(raw if isinstance(raw, bytes) else str(scope.get("path", "-")))


class _AccessConsoleHandler(logging.Handler):
    """Prints access lines on stderr when no other handler on the logger's way up would print them.

    Like `logging.lastResort`, but at INFO: under `talktime webhook` nothing configures the root logger,
    so the lines show on the console; once anything does (an embedding program, pytest), it alone
    prints them and nothing is printed twice.
    """

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.setFormatter(logging.Formatter("%(asctime)s %(name)s %(message)s"))

    def _another_handler_prints(self) -> bool:
        logger: logging.Logger | None = access_log
        while logger is not None:
            if any(handler is not self for handler in logger.handlers):
                return True
            logger = logger.parent if logger.propagate else None
        return False

    def emit(self, record: logging.LogRecord) -> None:
        if self._another_handler_prints():
            return
        try:
            sys.stderr.write(self.format(record) + "\n")  # looked up each time: the stream may be swapped
            sys.stderr.flush()
        except Exception:
            self.handleError(record)


def _show_access_log_on_console() -> None:
    """Idempotent: one console handler on the access logger, and INFO unless someone set a level."""
    if not any(isinstance(handler, _AccessConsoleHandler) for handler in access_log.handlers):
        access_log.addHandler(_AccessConsoleHandler())
    if access_log.level == logging.NOTSET:
        access_log.setLevel(logging.INFO)


class WebhookApp:
    """The ASGI receiver. `clock` is injectable for tests; `limits` bounds what a client can hold.

    Constructing one also makes the access log (ACCESS_LOG) show on stderr when nothing else prints it.
    """

    def __init__(
        self,
        landing: Path,
        secret: str,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        limits: ReceiverLimits = ReceiverLimits(),
        text: TextPolicyName = "keep",
        text_key: bytes | None = None,
    ):
        if text == "hash" and not text_key:
            raise ValueError("the hash text policy needs a key")
        self.landing = landing
        self.limits = limits
        self.text = text
        self._text_key = text_key
        self._secret = secret
        self._clock = clock
        self._body_slots = asyncio.Semaphore(limits.max_concurrent_bodies)
        landing.mkdir(parents=True, exist_ok=True)
        _show_access_log_on_console()

    @property
    def max_body_bytes(self) -> int:
        return self.limits.max_body_bytes

    def __repr__(self) -> str:
        return f"WebhookApp(landing={self.landing!s}, limits={self.limits}, text={self.text}, secret=<redacted>)"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        started_at = time.perf_counter()
        status: int | None = None
        size = 0
        reason = "-"

        async def tracked_send(message: Message) -> None:
            nonlocal status, size
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                size += len(message.get("body", b""))
            await send(message)

        try:
            answer_status, payload = await self._answer(scope, receive)
            reason = str(payload.get("code") or payload.get("status") or "-")
            refused_post = scope["method"] == "POST" and answer_status != 200
            extra = {**_CLOSE, **_retry_after(answer_status)} if refused_post else None
            await send_json(tracked_send, answer_status, payload, extra)
        except Exception as exc:  # the boundary: the server would log the message, which may quote the event
            log.error("webhook: %s at %s while handling a delivery", type(exc).__name__, raised_at(exc))
            if status is None:
                reason = "internal_error"
                await send_json(tracked_send, 500, {"code": reason, "message": "could not handle the event"}, _CLOSE)
        finally:
            method, client = str(scope.get("method", "-")), scope.get("client")
            log_access(method, _logged_path(scope), status, reason, size, started_at, client)

    def landing_is_writable(self) -> bool:
        """Whether events could be landed now: the landing directory exists and this process may write it."""
        return self.landing.is_dir() and os.access(self.landing, os.W_OK | os.X_OK)

    def _health(self) -> Answer:
        if self.landing_is_writable():
            return 200, {"status": "ok", "landing_writable": True}
        message = "the landing folder is missing or not writable"
        return 503, {
            "status": "unavailable",
            "landing_writable": False,
            "code": "landing_not_writable",
            "message": message,
        }

    def _header_refusal(self, scope: Scope) -> Answer | None:
        """What is wrong with the request's headers alone (nothing of the body is read), or None."""
        headers = header_map(scope)
        timestamp, signature = headers.get(TIMESTAMP_HEADER, ""), headers.get(SIGNATURE_HEADER, "")
        now = self._clock()
        if not timestamp.strip():
            refusal = timestamp_refusal(timestamp, now)  # missing_timestamp
        else:
            refusal = signature_header_refusal(signature) or timestamp_refusal(timestamp, now)
        if refusal is not None:
            return 401, {"code": refusal[0], "message": refusal[1]}
        declared = declared_length(scope)
        if declared is not None and declared > self.max_body_bytes:
            return self._too_large()
        return None

    def _too_large(self) -> Answer:
        return 413, {"code": "body_too_large", "message": f"an event body is at most {self.max_body_bytes} bytes"}

    async def _read_body(self, receive: Receive) -> bytes | Answer:
        """The body, or the refusal: no body slot free in time (503), too slow (408), too large (413)."""
        try:
            async with asyncio.timeout(self.limits.slot_wait_s):
                await self._body_slots.acquire()
        except TimeoutError:
            message = f"{self.limits.max_concurrent_bodies} deliveries are being read; retry later"
            return 503, {"code": "busy", "message": message}
        try:
            async with asyncio.timeout(self.limits.read_timeout_s):
                body = await read_body_at_most(receive, self.max_body_bytes)
        except TimeoutError:
            message = f"the body was not received within {self.limits.read_timeout_s:g} s"
            return 408, {"code": "body_timeout", "message": message}
        finally:
            self._body_slots.release()
        return self._too_large() if body is None else body

    async def _answer(self, scope: Scope, receive: Receive) -> Answer:
        if scope["method"] == "GET" and scope["path"] == HEALTH_PATH:
            return self._health()
        if scope["method"] != "POST":
            return 405, {"code": "method_not_allowed", "message": "POST events here"}
        refusal = self._header_refusal(scope)
        if refusal is not None:
            return refusal
        body = await self._read_body(receive)
        if not isinstance(body, bytes):
            return body
        headers = header_map(scope)
        if not signature_is_valid(self._secret, headers[TIMESTAMP_HEADER], body, headers[SIGNATURE_HEADER]):
            return 401, {"code": "invalid_signature", "message": "signature does not match"}
        return self._land(body)

    def _land(self, body: bytes) -> Answer:
        """Parse, check and land a signed body: 400, 500 or 200."""
        try:
            event = parse_event(body)
            line = event_line(landed_event(event, self.text, self._text_key))
        except MalformedEventError as exc:
            return 400, {"code": "malformed_event", "message": str(exc)}
        try:
            landed = land_event(self.landing, event["id"], line)
        except OSError as exc:
            log.error("webhook: could not land an event in %s: %s", self.landing, exc.strerror or type(exc).__name__)
            return 500, {"code": "landing_failed", "message": "could not store the event"}
        return 200, {"status": "landed" if landed else "duplicate"}


def _retry_after(status: int) -> dict[str, str]:
    return {"retry-after": "1"} if status == 503 else {}


def log_access(
    method: str, path: str, status: int | None, reason: str, size: int, started_at: float, client: Any
) -> None:
    """One access line: never a header, the query string or the body."""
    access_log.info(
        "%s %s %s %s %d B %.1f ms client=%s",
        _printable(method, 20),
        path,
        "-" if status is None else status,
        reason,
        size,
        (time.perf_counter() - started_at) * 1000,
        _printable(f"{client[0]}:{client[1]}", 100) if client else "-",
    )
