"""The webhook receiver as a real server: signatures valid, invalid, stale, replayed; durable landing."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from flows.decode import decode_records
from flows.emulator.server import BackgroundServer
from flows.inputs import plan_slices, read_slice
from flows.webhook.receiver import WebhookApp, sign, signature_is_valid
from tests.conftest import PRIMOCK

SECRET = "whsec-test-secret"
NOW = datetime(2026, 11, 23, 12, 0, 0, tzinfo=UTC)


def event(n: int = 1) -> bytes:
    data = json.loads(sorted(PRIMOCK.glob("*.json"))[n].read_text())
    return json.dumps(
        {"id": f"evt-{n}", "created_at": NOW.isoformat(), "type": "transcribe_async.succeeded", "data": data}
    ).encode()


@pytest.fixture
def receiver(tmp_path: Path):
    with BackgroundServer(WebhookApp(tmp_path / "landing", SECRET, clock=lambda: NOW)) as server:
        yield server


def post(server: BackgroundServer, body: bytes, timestamp: str, signature: str) -> httpx.Response:
    headers = {"x-nabla-webhook-timestamp": timestamp, "x-nabla-webhook-signature": signature}
    return httpx.post(f"{server.base_url}/webhooks/nabla", content=body, headers=headers, timeout=10)


def landed(server: BackgroundServer) -> list[Path]:
    return sorted(server.app.landing.glob("*.ndjson"))


def test_a_valid_event_lands_durably_and_ingests(receiver: BackgroundServer) -> None:
    ts = NOW.isoformat()
    response = post(receiver, event(), ts, sign(SECRET, ts, event()))
    assert (response.status_code, response.json()["status"]) == (200, "landed")
    files = landed(receiver)
    assert len(files) == 1 and not list(receiver.app.landing.glob(".*"))
    records = [record for batch in plan_slices(files, 10) for record in read_slice(batch)]
    decoded, skipped = decode_records(records, NOW)
    assert decoded.responses["client_request_id"].to_list() == ["day1_consultation02"] and skipped == []


def test_one_of_several_signatures_is_enough(receiver: BackgroundServer) -> None:
    ts = NOW.isoformat()
    response = post(receiver, event(), ts, f"deadbeef, {sign(SECRET, ts, event())}")
    assert response.status_code == 200


@pytest.mark.parametrize(
    ("timestamp", "signature_of", "code"),
    [
        (NOW.isoformat(), lambda ts, b: sign("wrong-secret", ts, b), "invalid_signature"),
        (NOW.isoformat(), lambda ts, b: "", "invalid_signature"),
        (NOW.isoformat(), lambda ts, b: sign(SECRET, ts, b + b" "), "invalid_signature"),
        ((NOW - timedelta(minutes=6)).isoformat(), lambda ts, b: sign(SECRET, ts, b), "stale_timestamp"),
        ((NOW + timedelta(minutes=6)).isoformat(), lambda ts, b: sign(SECRET, ts, b), "stale_timestamp"),
        ("yesterday", lambda ts, b: sign(SECRET, ts, b), "stale_timestamp"),
    ],
    ids=["wrong_secret", "missing", "body_changed", "stale", "future", "not_a_time"],
)
def test_refused_with_401(receiver: BackgroundServer, timestamp: str, signature_of, code: str) -> None:
    response = post(receiver, event(), timestamp, signature_of(timestamp, event()))
    assert (response.status_code, response.json()["code"]) == (401, code)
    assert landed(receiver) == []


def test_a_replayed_event_lands_once(receiver: BackgroundServer) -> None:
    ts = NOW.isoformat()
    answers = [post(receiver, event(), ts, sign(SECRET, ts, event())).json()["status"] for _ in range(3)]
    assert answers == ["landed", "duplicate", "duplicate"]
    assert len(landed(receiver)) == 1


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[]",
        b'{"id": "e", "type": "other", "data": {}}',
        b'{"type": "transcribe_async.failed", "data": {}}',
    ],
)
def test_a_malformed_but_signed_body_is_400(receiver: BackgroundServer, body: bytes) -> None:
    ts = NOW.isoformat()
    assert post(receiver, body, ts, sign(SECRET, ts, body)).status_code == 400


def test_signature_comparison_is_exact() -> None:
    good = sign(SECRET, "t", b"x")
    assert signature_is_valid(SECRET, "t", b"x", good)
    assert not signature_is_valid(SECRET, "t", b"x", good.upper())
    assert not signature_is_valid(SECRET, "t", b"x", good[:-1])
