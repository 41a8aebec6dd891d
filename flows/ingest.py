"""Saved API responses and webhook events -> one Outcome per transcription id."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from flows.inputs import iter_records, unwrap_event
from flows.outcomes import EnvelopeError, Outcome, outcome_from_response

# When an id appears several times, a terminal result beats an ongoing one; among equals the
# record read last (files in sorted order) wins.
_RANK = {"ongoing": 0, "failed": 1, "succeeded": 1}


def _api_version_of(body: dict[str, object]) -> str:
    status = body.get("status")
    return "2024-10-01" if isinstance(status, str) and status.isupper() else "2024-04-22"


def outcomes_from_files(inputs: Sequence[str | Path]) -> tuple[list[Outcome], list[str]]:
    """Outcomes (one per id, first-seen order) and the sources that could not be read, with why."""
    best: dict[str, Outcome] = {}
    skipped: list[str] = []
    fetched_at = datetime.now(UTC)
    for record in iter_records(inputs):
        if record.error is not None:
            skipped.append(f"{record.source}: {record.error}")
            continue
        body = unwrap_event(record.value)
        try:
            version = _api_version_of(body) if isinstance(body, dict) else None
            outcome = outcome_from_response(body, fetched_at=fetched_at, api_version=version)
        except EnvelopeError as exc:
            skipped.append(f"{record.source}: {exc}")
            continue
        previous = best.get(outcome.transcription_id)
        if previous is None or _RANK[outcome.status] >= _RANK[previous.status]:
            best[outcome.transcription_id] = outcome
    return list(best.values()), skipped
