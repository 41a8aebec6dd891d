"""A small, real HTTP receiver for the vendor's webhook events (push delivery).

An event is accepted only when `x-nabla-webhook-signature` holds, among its comma-separated
values, the lower-case hex HMAC-SHA256 (keyed with the webhook secret) of the
`x-nabla-webhook-timestamp` header immediately followed by the raw body, compared in constant
time, and the timestamp is an ISO-8601 date and time at most MAX_AGE_S old (or ahead). The answer is
200 only after the event is durably landed: one NDJSON file per event, written to a temporary name of
its own, fsynced, atomically renamed, and the directory fsynced. A replayed event (same event id)
lands once. Every refusal is `{"code": <reason>, "message": <what to fix>}`:

    413 body_too_large: a body over `max_body_bytes`: refused on its Content-Length before any of it
         is read, or (chunked) as soon as what was read exceeds the cap; no more than the cap is kept;
    401 missing_timestamp / missing_signature: the header is absent or blank;
    401 invalid_signature: no signature matches (checked before the timestamp or body is parsed);
    401 bad_timestamp: a signed timestamp that is not an ISO-8601 date and time (Unix seconds, say);
    401 stale_timestamp / future_timestamp: more than MAX_AGE_S behind or ahead of this server's clock;
    400 malformed_event: a signed body that is not an event ingest can read, with a short reason:
         not UTF-8, not JSON, nested too deep, an integer too long, a lone surrogate escape, no
         UUID `id`, no `type` or not a transcribe_async one, no `data`, `data` not an object with
         a UUID `id` and a string `status`;
    500 landing_failed / internal_error: the landing directory cannot be written (the vendor will
         redeliver), or an unexpected error.

`GET /healthz` answers 200 `{"status": "ok", "landing_writable": true}` without authentication, or
503 when the landing directory is missing or not writable; any other non-POST request is 405.

Every request logs one line on `talktime.webhook.access` (ACCESS_LOG): method, path without query
string, status, reason, response bytes, duration and client address; never a header or the body.

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
import re
import secrets
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from flows.errors import raised_at
from flows.jsontext import JsonError, has_lone_surrogate, loads, strict_json
from flows.outcomes import is_uuid
from flows.storage.store import fsync_directory
from flows.webhook.asgi import Message, Receive, Scope, Send, declared_length, header_map, read_body_at_most, send_json
from transforms.jsonvalues import HugeInt

log = logging.getLogger(__name__)
ACCESS_LOG = "talktime.webhook.access"
access_log = logging.getLogger(ACCESS_LOG)

MAX_AGE_S = 300.0
DEFAULT_MAX_EVENT_BYTES = 16 * 1024 * 1024
EVENT_TYPES = ("transcribe_async.succeeded", "transcribe_async.failed")
SIGNATURE_HEADER = "x-nabla-webhook-signature"
TIMESTAMP_HEADER = "x-nabla-webhook-timestamp"
HEALTH_PATH = "/healthz"
_JSON_REASONS = {"too_deep": "event nested too deep", "not_json": "not JSON"}
_ISO_EXAMPLE = "2026-11-24T10:15:00Z"
_NUMBER = re.compile(r"[+-]?[0-9]+(?:\.[0-9]*)?")
_DATE_ONLY = re.compile(r"[0-9W-]+")  # 2026-11-24, 20261124, 2026-W48: no time of day
_PATH_LOGGED_CHARS = 200

Answer = tuple[int, dict[str, Any]]


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


def timestamp_refusal(timestamp: str, now: datetime) -> tuple[str, str] | None:
    """None for an ISO-8601 date and time within MAX_AGE_S of now, else (reason code, message).

    A timestamp without a UTC offset is read as UTC. The message never quotes the header.
    """
    must = f"{TIMESTAMP_HEADER} must be ISO-8601 (e.g. {_ISO_EXAMPLE})"
    if _NUMBER.fullmatch(timestamp):
        return "bad_timestamp", f"{must}; got a number (Unix seconds?)"
    if _DATE_ONLY.fullmatch(timestamp):
        return "bad_timestamp", f"{must}; got a date without a time of day"
    try:
        when = datetime.fromisoformat(timestamp.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return "bad_timestamp", f"{must}; could not read it as a date and time"
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    age = (now - when).total_seconds()
    limit = f"at most {MAX_AGE_S:.0f} s is accepted"
    if age > MAX_AGE_S:
        return "stale_timestamp", f"{TIMESTAMP_HEADER} is {age:.0f} s old; {limit} (a late redelivery or a slow clock?)"
    if -age > MAX_AGE_S:
        return "future_timestamp", f"{TIMESTAMP_HEADER} is {-age:.0f} s ahead of this server's clock; {limit}"
    return None


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
    """The event if ingest would read it; MalformedEventError naming the first thing wrong (never its value)."""
    if not isinstance(event, dict):
        raise MalformedEventError("event is not a JSON object")
    for field in ("id", "type", "data"):
        if event.get(field) in (None, ""):
            raise MalformedEventError(f'event has no "{field}"')
    if not is_uuid(event["id"]):
        raise MalformedEventError('event "id" is not a UUID')
    if event["type"] not in EVENT_TYPES:
        raise MalformedEventError('event "type" is not transcribe_async.succeeded or .failed')
    data = event["data"]
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


def _printable(data: bytes | str, limit: int = _PATH_LOGGED_CHARS) -> str:
    """`data` safe for one log line: bytes outside visible ASCII percent-encoded, at most `limit` chars."""
    raw = data.encode("utf-8", "surrogateescape") if isinstance(data, str) else data
    cleaned = "".join(chr(b) if 0x21 <= b <= 0x7E else f"%{b:02X}" for b in raw[: limit + 1])
    return cleaned if len(cleaned) <= limit else cleaned[:limit] + "..."


def _logged_path(scope: Scope) -> str:
    """The request path as received, without its query string (which may carry anything)."""
    raw = scope.get("raw_path")
    return _printable(raw if isinstance(raw, bytes) else str(scope.get("path", "-")))


def _logged_client(scope: Scope) -> str:
    client = scope.get("client")
    return _printable(f"{client[0]}:{client[1]}", 100) if client else "-"


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
    """The ASGI receiver. `clock` is injectable for tests; bodies over `max_body_bytes` get 413.

    Constructing one also makes the access log (ACCESS_LOG) show on stderr when nothing else prints it.
    """

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
        _show_access_log_on_console()

    def __repr__(self) -> str:
        return f"WebhookApp(landing={self.landing!s}, max_body_bytes={self.max_body_bytes}, secret=<redacted>)"

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
            await send_json(tracked_send, answer_status, payload)
        except Exception as exc:  # the boundary: the server would log the message, which may quote the event
            log.error("webhook: %s at %s while handling a delivery", type(exc).__name__, raised_at(exc))
            if status is None:
                reason = "internal_error"
                await send_json(tracked_send, 500, {"code": reason, "message": "could not handle the event"})
        finally:
            access_log.info(
                "%s %s %s %s %d B %.1f ms client=%s",
                _printable(str(scope.get("method", "-")), 20),
                _logged_path(scope),
                "-" if status is None else status,
                reason,
                size,
                (time.perf_counter() - started_at) * 1000,
                _logged_client(scope),
            )

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

    async def _read_body(self, scope: Scope, receive: Receive) -> bytes | None:
        """The body, or None when it is over the cap (then at most the cap plus one chunk was read)."""
        declared = declared_length(scope)
        if declared is not None and declared > self.max_body_bytes:
            return None
        return await read_body_at_most(receive, self.max_body_bytes)

    async def _answer(self, scope: Scope, receive: Receive) -> Answer:
        if scope["method"] == "GET" and scope["path"] == HEALTH_PATH:
            return self._health()
        if scope["method"] != "POST":
            return 405, {"code": "method_not_allowed", "message": "POST events here"}
        body = await self._read_body(scope, receive)
        if body is None:
            return 413, {"code": "body_too_large", "message": f"an event body is at most {self.max_body_bytes} bytes"}
        headers = header_map(scope)
        timestamp, signature = headers.get(TIMESTAMP_HEADER, ""), headers.get(SIGNATURE_HEADER, "")
        if not timestamp.strip():
            message = f"the {TIMESTAMP_HEADER} header is missing (ISO-8601, e.g. {_ISO_EXAMPLE})"
            return 401, {"code": "missing_timestamp", "message": message}
        if not signature.strip():
            return 401, {"code": "missing_signature", "message": f"the {SIGNATURE_HEADER} header is missing"}
        if not signature_is_valid(self._secret, timestamp, body, signature):
            return 401, {"code": "invalid_signature", "message": "signature does not match"}
        refusal = timestamp_refusal(timestamp, self._clock())
        if refusal is not None:
            return 401, {"code": refusal[0], "message": refusal[1]}
        return self._land(body)

    def _land(self, body: bytes) -> Answer:
        """Parse, check and land a signed body: 400, 500 or 200."""
        try:
            event = parse_event(body)
            line = event_line(event)
        except MalformedEventError as exc:
            return 400, {"code": "malformed_event", "message": str(exc)}
        try:
            landed = land_event(self.landing, event["id"], line)
        except OSError as exc:
            log.error("webhook: could not land an event in %s: %s", self.landing, exc.strerror or type(exc).__name__)
            return 500, {"code": "landing_failed", "message": "could not store the event"}
        return 200, {"status": "landed" if landed else "duplicate"}
