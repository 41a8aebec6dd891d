"""What a webhook delivery must be: its signature and timestamp headers, its event, and how it lands.

Checked in this order by the receiver (flows.webhook.receiver):

- the headers, before any body byte is read: a timestamp and a signature header present, the
  signature header holding at least one lower-case hex SHA-256 (`signature_header_refusal`), and
  the timestamp an ISO-8601 date and time at most MAX_AGE_S old or ahead (`timestamp_refusal`);
- then the signature over the raw body (`signature_is_valid`, constant-time);
- then the event (`parse_event`): one ingest can turn into rows, by ingest's own rule
  (`flows.outcomes.outcome_from_response`), so that an event ingest would skip is refused while the
  vendor can still redeliver it, instead of landing and being skipped later.

Event content is patient data: no reason or exception message here quotes a header's or the body's
value. `MalformedEventError` (a ValueError whose message is a short reason) is this module's one
exception; an OSError from the disk propagates from `land_event`.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import re
import secrets
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from flows.jsontext import JsonError, has_lone_surrogate, loads, strict_json
from flows.outcomes import EnvelopeError, is_uuid, outcome_from_response
from flows.storage.store import fsync_directory
from transforms.jsonvalues import HugeInt
from transforms.text import TextPolicyName, landed_items

MAX_AGE_S = 300.0
EVENT_TYPES = ("transcribe_async.succeeded", "transcribe_async.failed")
SIGNATURE_HEADER = "x-nabla-webhook-signature"
TIMESTAMP_HEADER = "x-nabla-webhook-timestamp"
ISO_EXAMPLE = "2026-11-24T10:15:00Z"
_JSON_REASONS = {"too_deep": "event nested too deep", "not_json": "not JSON"}
_NUMBER = re.compile(r"[+-]?[0-9]+(?:\.[0-9]*)?")
_DATE_ONLY = re.compile(r"[0-9W-]+")  # 2026-11-24, 20261124, 2026-W48: no time of day
_HEX_SHA256 = re.compile(r"[0-9a-f]{64}")
# What ingest says of a result it cannot use, as the receiver says it of an event's `data`.
_DATA_REASONS = {
    "response has no known status": "data.status is not ongoing, succeeded or failed",
    "succeeded response has no transcript array": "data of a succeeded event has no transcript array",
}


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


def signature_header_refusal(header: str) -> tuple[str, str] | None:
    """None when the header holds at least one lower-case hex SHA-256, else (reason code, message)."""
    if not header.strip():
        return "missing_signature", f"the {SIGNATURE_HEADER} header is missing"
    if not any(_HEX_SHA256.fullmatch(c.strip()) for c in header.split(",")):
        return "invalid_signature", f"{SIGNATURE_HEADER} holds no lower-case hex HMAC-SHA256 (64 hex digits)"
    return None


def timestamp_refusal(timestamp: str, now: datetime) -> tuple[str, str] | None:
    """None for an ISO-8601 date and time within MAX_AGE_S of now, else (reason code, message).

    A timestamp without a UTC offset is read as UTC. The message never quotes the header.
    """
    if not timestamp.strip():
        return "missing_timestamp", f"the {TIMESTAMP_HEADER} header is missing (ISO-8601, e.g. {ISO_EXAMPLE})"
    must = f"{TIMESTAMP_HEADER} must be ISO-8601 (e.g. {ISO_EXAMPLE})"
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


def _check_usable(data: dict[str, Any]) -> None:
    """MalformedEventError when ingest would skip `data` (the rule is ingest's own, not a copy of it)."""
    try:
        outcome_from_response(data, fetched_at=datetime.now(UTC), api_version=None)
    except EnvelopeError as exc:
        raise MalformedEventError(_DATA_REASONS.get(str(exc), f"data: {exc}")) from None


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
    _check_usable(data)
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


def landed_event(event: dict[str, Any], policy: TextPolicyName, key: bytes | None = None) -> dict[str, Any]:
    """The event as it lands under the receiver's text policy: under drop and hash its transcript's texts
    are replaced by their shapes (and hash keeps their hashes), `transforms.text.landed_items`; the
    status, the ids and every item's speaker and times stay as received."""
    data = event["data"]
    payload = data.get("payload")
    transcript = payload.get("transcript") if isinstance(payload, dict) else None
    if policy == "keep" or not isinstance(transcript, list):
        return event
    landed_payload = {**payload, "transcript": landed_items(transcript, policy, key)}
    return {**event, "data": {**data, "payload": landed_payload}}


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
