"""One requested id's final outcome, and how an API response object becomes one.

Both dialects of the API are read here: status values are compared lower-cased, ids are
compared case-insensitively and stored lower-case.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import polars as pl

from flows.untrusted import api_code, api_message
from transforms.flatten import Transcript
from transforms.jsonvalues import strict_json
from transforms.schemas import RESPONSES

UUID_PATTERN = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
TERMINAL_API_STATUSES = ("succeeded", "failed")
API_STATUSES = ("ongoing", *TERMINAL_API_STATUSES)


def is_uuid(value: object) -> bool:
    """True for a canonical 36-character UUID string (any case), nothing else."""
    return isinstance(value, str) and UUID_PATTERN.fullmatch(value) is not None


def normalize_id(value: str) -> str:
    """A UUID lower-cased (the vendor prints them upper-case); anything else untouched."""
    return value.lower() if is_uuid(value) else value


def unique_ids(values: Iterable[str]) -> list[str]:
    """Distinct normalized ids in first-seen order (duplicates are fetched once)."""
    return list(dict.fromkeys(normalize_id(v) for v in values))


@dataclass(frozen=True)
class Outcome:
    """What happened to one requested id. `items` is the raw transcript when succeeded."""

    transcription_id: str
    status: str
    fetched_at: datetime
    api_version: str | None = None
    client_request_id: str | None = None
    error_code: str | None = None
    error_message: str | None = None
    error_payload: str | None = None
    items: list[Any] | None = field(default=None, repr=False)
    body: bytes | None = field(default=None, repr=False)  # the raw 200 body, for the fast decoder

    @classmethod
    def error(cls, transcription_id: str, reason: str, message: str, fetched_at: datetime, **kw: Any) -> Outcome:
        """An `error` outcome with a machine-readable reason (error_code) and a message."""
        return cls(transcription_id, "error", fetched_at, error_code=reason, error_message=message, **kw)


class EnvelopeError(ValueError):
    """A response object that does not have the contract's shape (reason in `.reason`)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def _scalar_text(value: Any) -> str | None:
    """A code or message as text: a string, or a number that has one (not NaN, not a huge integer)."""
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, float) and math.isfinite(value):
        return str(value)
    return None


def _failure_details(payload: Any) -> tuple[str | None, str | None]:
    """An error code and message from a failed payload, wherever the vendor put them."""
    if not isinstance(payload, dict):
        return None, None
    code = next((payload[k] for k in ("code", "error_code", "status_code") if payload.get(k) is not None), None)
    message = next((payload[k] for k in ("message", "error_message", "detail") if payload.get(k) is not None), None)
    return _scalar_text(code), _scalar_text(message)


def outcome_from_response(
    body: Any, *, fetched_at: datetime, api_version: str | None, requested_id: str | None = None
) -> Outcome:
    """Interpret one GET /transcribe-async/{id} object (either dialect) as an Outcome.

    Raises EnvelopeError when the object is not of the contract's shape.
    """
    if not isinstance(body, dict):
        raise EnvelopeError("malformed_response", "response is not a JSON object")
    status = body.get("status")
    if not isinstance(status, str) or status.lower() not in API_STATUSES:
        raise EnvelopeError("malformed_response", "response has no known status")
    found_id = body.get("id")
    if requested_id is None and not is_uuid(found_id):
        raise EnvelopeError("malformed_response", "response has no valid id")
    if found_id is not None and requested_id is not None and str(found_id).lower() != requested_id.lower():
        raise EnvelopeError("id_mismatch", "response id differs from the requested id")
    tid = (requested_id or str(found_id)).lower()
    crid = body.get("client_request_id")
    common: dict[str, Any] = {
        "api_version": api_version,
        "client_request_id": crid if isinstance(crid, str) else None,
    }
    status = status.lower()
    payload = body.get("payload")
    if status == "succeeded":
        transcript = payload.get("transcript") if isinstance(payload, dict) else None
        if not isinstance(transcript, list):
            raise EnvelopeError("malformed_response", "succeeded response has no transcript array")
        return Outcome(tid, "succeeded", fetched_at, items=transcript, **common)
    if status == "failed":
        code, message = _failure_details(payload)
        raw = None if payload is None else strict_json(payload, sort_keys=True)
        return Outcome(tid, "failed", fetched_at, error_code=code, error_message=message, error_payload=raw, **common)
    return Outcome(tid, "ongoing", fetched_at, **common)


def responses_frame(outcomes: list[Outcome]) -> pl.LazyFrame:
    """The outcomes as a frame of the RESPONSES schema (one row per outcome), error codes and messages
    made safe to store (`flows.untrusted`: a short token; bounded, without control characters)."""
    columns = {name: [getattr(o, name) for o in outcomes] for name in RESPONSES.names()}
    columns["error_code"] = [None if code is None else api_code(code) for code in columns["error_code"]]
    columns["error_message"] = [None if text is None else api_message(text) for text in columns["error_message"]]
    return pl.LazyFrame(columns, schema=RESPONSES)


def transcripts_of(outcomes: list[Outcome]) -> list[Transcript]:
    """The transcripts of the succeeded outcomes, ready to flatten."""
    return [
        Transcript(o.transcription_id, o.client_request_id, o.items)
        for o in outcomes
        if o.status == "succeeded" and o.items is not None
    ]
