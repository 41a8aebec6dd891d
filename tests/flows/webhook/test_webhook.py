"""The webhook receiver as a real server: signatures valid, invalid, stale, replayed; durable landing."""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from threading import Thread
from typing import Any

import httpx
import pytest
import uvicorn

from flows.cli.commands import build_parser, cmd_webhook
from flows.decode import decode_records
from flows.emulator.server import BackgroundServer
from flows.errors import ConfigurationError
from flows.inputs import plan_slices, read_slice
from flows.webhook import receiver as receiver_module
from flows.webhook.asgi import Message, Scope
from flows.webhook.events import sign, signature_is_valid
from flows.webhook.receiver import DEFAULT_MAX_EVENT_BYTES, ReceiverLimits, WebhookApp
from flows.webhook.server import uvicorn_options
from tests.conftest import PRIMOCK

SECRET = "whsec-test-secret"
NOW = datetime(2026, 11, 23, 12, 0, 0, tzinfo=UTC)


def event_id(n: int) -> str:
    return f"5f0c4a3e-1b2d-4c6e-8a9b-{n:012d}"


def event(n: int = 1) -> bytes:
    data = json.loads(sorted(PRIMOCK.glob("*.json"))[n].read_text())
    return json.dumps(
        {"id": event_id(n), "created_at": NOW.isoformat(), "type": "transcribe_async.succeeded", "data": data}
    ).encode()


class WebhookServer(BackgroundServer):
    """The receiver as `talktime webhook` serves it (its uvicorn options), on a free loopback port."""

    app: WebhookApp

    def __init__(self, app: WebhookApp) -> None:
        super().__init__(app)
        config = uvicorn.Config(app, host=self.host, port=0, timeout_graceful_shutdown=1, **uvicorn_options(app.limits))
        self._server = uvicorn.Server(config)
        self._thread = Thread(target=self._server.run, name="talktime-webhook", daemon=True)


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[BackgroundServer]:
    with WebhookServer(WebhookApp(tmp_path / "landing", SECRET, clock=lambda: NOW)) as server:
        yield server


def post(server: BackgroundServer, body: bytes | Iterator[bytes], timestamp: str, signature: str) -> httpx.Response:
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
        (NOW.isoformat(), lambda ts, b: "", "missing_signature"),
        (NOW.isoformat(), lambda ts, b: sign(SECRET, ts, b + b" "), "invalid_signature"),
        ((NOW - timedelta(minutes=6)).isoformat(), lambda ts, b: sign(SECRET, ts, b), "stale_timestamp"),
        ((NOW + timedelta(minutes=6)).isoformat(), lambda ts, b: sign(SECRET, ts, b), "future_timestamp"),
        ("yesterday", lambda ts, b: sign(SECRET, ts, b), "bad_timestamp"),
        ("1764000000", lambda ts, b: sign("wrong-secret", ts, b), "bad_timestamp"),
        (NOW.isoformat(), lambda ts, b: sign(SECRET, ts, b).upper(), "invalid_signature"),
    ],
    ids=[
        "wrong_secret",
        "missing",
        "body_changed",
        "stale",
        "future",
        "not_a_time",
        "timestamp_checked_before_the_body",
        "not_lower_case_hex",
    ],
)
def test_refused_with_401(
    receiver: BackgroundServer, timestamp: str, signature_of: Callable[[str, bytes], str], code: str
) -> None:
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
    ids=["not_json", "not_an_object", "other_type", "no_event_id"],
)
def test_a_malformed_but_signed_body_is_400(receiver: BackgroundServer, body: bytes) -> None:
    ts = NOW.isoformat()
    assert post(receiver, body, ts, sign(SECRET, ts, body)).status_code == 400


def test_signature_comparison_is_exact() -> None:
    good = sign(SECRET, "t", b"x")
    assert signature_is_valid(SECRET, "t", b"x", good)
    assert not signature_is_valid(SECRET, "t", b"x", good.upper())
    assert not signature_is_valid(SECRET, "t", b"x", good[:-1])


# --- Refusals: body cap (413), unreadable events (400), failed writes (500, nothing left) -------------

MARK = "PATIENT-SAID-SOMETHING-PRIVATE"
DATA_ID = "c3ca0dc5-6b63-5852-9680-8ae0f6194e04"


def envelope(data: bytes) -> bytes:
    """A transcribe_async event around the raw JSON text `data`."""
    head = (
        b'{"id": "5f0c4a3e-1b2d-4c6e-8a9b-0000000000ff", "created_at": "2026-11-23T12:00:00+00:00",'
        b' "type": "transcribe_async.succeeded"'
    )
    return head + b', "data": ' + data + b"}"


def data_with(extra: bytes) -> bytes:
    """A minimal usable result object (UUID id, status, transcript, patient text) followed by `extra` members."""
    return (
        b'{"id": "' + DATA_ID.encode() + b'", "status": "succeeded", "payload": {"transcript": []}, "text": "'
        + MARK.encode() + b'", ' + extra + b"}"
    )  # fmt: skip


def post_signed(server: BackgroundServer, body: bytes, *, chunked: bool = False) -> httpx.Response:
    """POST a correctly signed `body`, in one piece with a Content-Length or in two chunks."""
    ts = NOW.isoformat()
    content = iter([body[:1000], body[1000:]]) if chunked else body
    return post(server, content, ts, sign(SECRET, ts, body))


@pytest.fixture
def server_logs() -> Iterator[list[str]]:
    """Every log line (with its traceback) of the server and the receiver while the test runs."""
    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(logging.Formatter().format(record))

    handler = Collect(level=logging.DEBUG)
    loggers = [logging.getLogger(name) for name in ("uvicorn", "uvicorn.error", "flows.webhook.receiver")]
    for logger in loggers:
        logger.addHandler(handler)
    yield lines
    for logger in loggers:
        logger.removeHandler(handler)


class Chunks:
    """An ASGI receive handing out `count` chunks of `size` bytes, counting how many were pulled."""

    def __init__(self, count: int, size: int) -> None:
        self.count, self.size, self.pulled = count, size, 0

    async def __call__(self) -> Message:
        self.pulled += 1
        return {"type": "http.request", "body": b"x" * self.size, "more_body": self.pulled < self.count}


def fresh_headers(**more: str) -> dict[str, str]:
    """Well-formed, fresh signature headers (the signature cannot match a body that is not read)."""
    return {"x-nabla-webhook-timestamp": NOW.isoformat(), "x-nabla-webhook-signature": "0" * 64, **more}


def call_app(app: WebhookApp, headers: dict[str, str], receive: Chunks) -> tuple[int, dict[str, Any]]:
    """Run one request through the ASGI app directly; the status and the JSON answer."""
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    pairs = [(k.encode(), v.encode()) for k, v in headers.items()]
    scope: Scope = {"type": "http", "method": "POST", "path": "/webhooks/nabla", "headers": pairs}
    asyncio.run(app(scope, receive, send))
    return sent[0]["status"], json.loads(sent[1]["body"])


def test_a_declared_length_over_the_cap_is_413_before_reading(tmp_path: Path) -> None:
    app = WebhookApp(tmp_path, SECRET, clock=lambda: NOW, limits=ReceiverLimits(max_body_bytes=1000))
    receive = Chunks(count=5, size=400)
    status, answer = call_app(app, fresh_headers(**{"content-length": "2000"}), receive)
    assert (status, answer["code"], receive.pulled) == (413, "body_too_large", 0)


def test_a_chunked_body_over_the_cap_is_413_after_at_most_cap_plus_one_chunk(tmp_path: Path) -> None:
    app = WebhookApp(tmp_path, SECRET, clock=lambda: NOW, limits=ReceiverLimits(max_body_bytes=1000))
    receive = Chunks(count=20, size=300)
    status, answer = call_app(app, fresh_headers(**{"transfer-encoding": "chunked"}), receive)
    assert (status, answer["code"]) == (413, "body_too_large")
    assert receive.pulled * receive.size <= 1000 + receive.size


@pytest.mark.parametrize("chunked", [False, True], ids=["content_length", "chunked"])
@pytest.mark.parametrize(("slack", "status"), [(0, 200), (-1, 413)], ids=["at_the_cap", "one_byte_over"])
def test_the_cap_over_loopback(tmp_path: Path, chunked: bool, slack: int, status: int) -> None:
    body = event()
    limits = ReceiverLimits(max_body_bytes=len(body) + slack)
    with WebhookServer(WebhookApp(tmp_path / "landing", SECRET, clock=lambda: NOW, limits=limits)) as server:
        assert post_signed(server, body, chunked=chunked).status_code == status
        assert len(landed(server)) == (1 if status == 200 else 0)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (envelope(data_with(b'"tree": ' + b"[" * 100_000 + b"]" * 100_000)), "event nested too deep"),
        (envelope(data_with(b'"n": ' + b"7" * 5000)), "integer too long"),
        (envelope(data_with(b'"n": [1, {"m": -' + b"7" * 5000 + b"}]")), "integer too long"),
        (envelope(data_with(b'"t": "half an emoji \\ud83d"')), "broken unicode escape"),
        (envelope(data_with(b'"t": "\\udc00 low half first"')), "broken unicode escape"),
        (envelope(data_with(b'"t": "raw surrogate \xed\xa0\xbd"')), "not UTF-8 text"),
        (envelope(data_with(b'"t": "latin-1 \xe9"')), "not UTF-8 text"),
    ],
    ids=[
        "too_deep",
        "integer_too_long",
        "nested_integer_too_long",
        "lone_high_surrogate",
        "lone_low_surrogate",
        "raw_surrogate_bytes",
        "not_utf8",
    ],
)
def test_an_unreadable_signed_event_is_400_with_a_reason_quoting_nothing(
    receiver: BackgroundServer, server_logs: list[str], body: bytes, reason: str
) -> None:
    response = post_signed(receiver, body)
    assert (response.status_code, response.json()) == (400, {"code": "malformed_event", "message": reason})
    assert landed(receiver) == []
    assert not any(MARK in line for line in server_logs)


def test_a_valid_surrogate_pair_and_an_escaped_backslash_are_fine(receiver: BackgroundServer) -> None:
    body = envelope(data_with(b'"t": "\\ud83d\\ude00 and \\\\ud83d as text"'))
    assert post_signed(receiver, body).status_code == 200
    stored = json.loads(landed(receiver)[0].read_bytes())
    assert stored["data"]["t"] == "\U0001f600 and \\ud83d as text"


NO_TRANSCRIPT = "data of a succeeded event has no transcript array"


def with_data(change: Callable[[dict[str, Any]], object]) -> bytes:
    value = json.loads(event())
    change(value["data"])
    return json.dumps(value).encode()


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (with_data(lambda d: d.update(id="day1_consultation02")), "data.id is not a UUID"),
        (with_data(lambda d: d.update(id=DATA_ID[:-1])), "data.id is not a UUID"),
        (with_data(lambda d: d.pop("id")), "data.id is not a UUID"),
        (with_data(lambda d: d.pop("status")), "data.status is not a string"),
        (with_data(lambda d: d.update(status=1)), "data.status is not a string"),
        (envelope(b"[]"), "data is not an object"),
        (envelope(b'"' + MARK.encode() + b'"'), "data is not an object"),
        (with_data(lambda d: d.pop("payload")), NO_TRANSCRIPT),
        (with_data(lambda d: d.update(payload={"transcript": MARK})), NO_TRANSCRIPT),
        (envelope(b'{"id": "' + DATA_ID.encode() + b'", "status": "succeeded"}'), NO_TRANSCRIPT),
        (with_data(lambda d: d.update(status=MARK)), "data.status is not ongoing, succeeded or failed"),
    ],
    ids=[
        "id_not_uuid",
        "id_cut_short",
        "id_missing",
        "status_missing",
        "status_not_string",
        "data_list",
        "data_string",
        "succeeded_without_payload",
        "transcript_not_a_list",
        "the_readme_example_of_issue_18",
        "unknown_status",
    ],
)
def test_an_event_ingest_would_skip_is_400(receiver: BackgroundServer, body: bytes, reason: str) -> None:
    response = post_signed(receiver, body)
    assert (response.status_code, response.json()) == (400, {"code": "malformed_event", "message": reason})
    assert landed(receiver) == []


@pytest.mark.parametrize(
    "data",
    [
        {"id": DATA_ID, "status": "ongoing"},
        {"id": DATA_ID, "status": "FAILED"},
        {"id": DATA_ID, "status": "failed", "payload": {"code": 422}},
        {"id": DATA_ID, "status": "SUCCEEDED", "payload": {"transcript": []}},
    ],
    ids=["ongoing", "failed_dialect_b_no_payload", "failed", "succeeded_dialect_b_empty_transcript"],
)
def test_an_event_ingest_can_use_lands(receiver: BackgroundServer, data: dict[str, Any]) -> None:
    assert post_signed(receiver, envelope(json.dumps(data).encode())).json() == {"status": "landed"}


def test_an_upper_case_uuid_is_accepted(receiver: BackgroundServer) -> None:
    body = with_data(lambda d: d.update(id=d["id"].upper()))
    assert post_signed(receiver, body).status_code == 200


def fail(*args: object, **kwargs: object) -> None:
    raise OSError(errno.EIO, "input/output error")


@pytest.mark.parametrize("step", ["fsync", "replace"], ids=["fsync_fails", "rename_fails"])
def test_a_failed_write_is_500_and_leaves_nothing(
    receiver: BackgroundServer, monkeypatch: pytest.MonkeyPatch, step: str
) -> None:
    monkeypatch.setattr(os, step, fail)
    if step == "replace":
        monkeypatch.setattr(Path, "replace", fail)
    response = post_signed(receiver, event())
    assert (response.status_code, response.json()["code"]) == (500, "landing_failed")
    assert list(receiver.app.landing.iterdir()) == []
    monkeypatch.undo()
    assert post_signed(receiver, event()).json()["status"] == "landed"
    assert [p.name for p in receiver.app.landing.iterdir()] == [p.name for p in landed(receiver)]


def test_an_unexpected_error_is_500_and_its_message_is_not_logged(
    receiver: BackgroundServer, server_logs: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def explode(*args: object, **kwargs: object) -> None:
        raise RuntimeError(f"could not handle {MARK}")

    monkeypatch.setattr(receiver_module, "land_event", explode)
    response = post_signed(receiver, event())
    assert (response.status_code, response.json()["code"]) == (500, "internal_error")
    assert MARK not in response.text
    assert server_logs and not any(MARK in line for line in server_logs)


def test_the_secret_is_not_in_the_apps_repr(tmp_path: Path) -> None:
    assert SECRET not in repr(WebhookApp(tmp_path, SECRET))


@pytest.mark.parametrize(
    ("option", "expected"),
    [([], DEFAULT_MAX_EVENT_BYTES), (["--max-body-mb", "2"], 2 * 1024 * 1024), (["--max-body-mb", "0.5"], 512 * 1024)],
    ids=["default", "two", "half"],
)
def test_the_cli_passes_the_body_cap(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, option: list[str], expected: int
) -> None:
    served: list[WebhookApp] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: served.append(app))
    monkeypatch.setenv("TALKTIME_TEST_WEBHOOK_SECRET", SECRET)
    argv = ["webhook", "--landing", str(tmp_path), "--secret-env", "TALKTIME_TEST_WEBHOOK_SECRET", *option]
    assert cmd_webhook(build_parser().parse_args(argv)) == 0
    assert served[0].max_body_bytes == expected


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf"])
def test_the_cli_refuses_a_cap_that_is_not_a_positive_size(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: None)
    monkeypatch.setenv("TALKTIME_TEST_WEBHOOK_SECRET", SECRET)
    argv = ["webhook", "--landing", str(tmp_path), "--secret-env", "TALKTIME_TEST_WEBHOOK_SECRET"]
    with pytest.raises(ConfigurationError, match="--max-body-mb"):
        cmd_webhook(build_parser().parse_args([*argv, "--max-body-mb", value]))


# --- What an operator meets: clear reasons, one access line per request, /healthz --------------------


def post_headers(server: BackgroundServer, body: bytes, headers: dict[str, str], path: str = "/webhooks/nabla") -> Any:
    return httpx.post(f"{server.base_url}{path}", content=body, headers=headers, timeout=10)


@pytest.mark.parametrize(
    ("timestamp", "code", "says"),
    [
        ("1764000000", "bad_timestamp", "must be ISO-8601 (e.g. 2026-11-24T10:15:00Z); got a number (Unix seconds?)"),
        ("1764000000.25", "bad_timestamp", "got a number (Unix seconds?)"),
        ("1764000000000", "bad_timestamp", "got a number (Unix seconds?)"),
        ("next tuesday", "bad_timestamp", "must be ISO-8601 (e.g. 2026-11-24T10:15:00Z)"),
        ("2026-11-23", "bad_timestamp", "must be ISO-8601"),
        ((NOW - timedelta(seconds=360)).isoformat(), "stale_timestamp", "360 s old"),
        ((NOW + timedelta(seconds=420)).isoformat(), "future_timestamp", "420 s ahead"),
    ],
    ids=["unix_seconds", "unix_decimals", "unix_millis", "words", "date_only", "stale", "future"],
)
def test_a_signed_event_with_an_unusable_timestamp_gets_a_reason_saying_why(
    receiver: BackgroundServer, timestamp: str, code: str, says: str
) -> None:
    response = post(receiver, event(), timestamp, sign(SECRET, timestamp, event()))
    assert (response.status_code, response.json()["code"]) == (401, code)
    assert says in response.json()["message"]
    assert landed(receiver) == []


@pytest.mark.parametrize(
    "timestamp", ["2026-11-23T12:04:00Z", "2026-11-23T11:56:00+00:00", "2026-11-23T13:00:00+01:00"]
)
def test_iso_timestamps_within_five_minutes_are_fresh(receiver: BackgroundServer, timestamp: str) -> None:
    assert post(receiver, event(), timestamp, sign(SECRET, timestamp, event())).status_code == 200


@pytest.mark.parametrize(
    ("headers", "code", "says"),
    [
        ({"x-nabla-webhook-signature": "abc"}, "missing_timestamp", "x-nabla-webhook-timestamp"),
        ({"x-nabla-webhook-timestamp": NOW.isoformat()}, "missing_signature", "x-nabla-webhook-signature"),
        ({}, "missing_timestamp", "x-nabla-webhook-timestamp"),
    ],
    ids=["no_timestamp", "no_signature", "neither"],
)
def test_a_missing_header_is_named(receiver: BackgroundServer, headers: dict[str, str], code: str, says: str) -> None:
    response = post_headers(receiver, event(), headers)
    assert (response.status_code, response.json()["code"]) == (401, code)
    assert says in response.json()["message"]


def test_a_blank_timestamp_is_missing(tmp_path: Path) -> None:
    headers = {"x-nabla-webhook-timestamp": " ", "x-nabla-webhook-signature": "abc"}
    status, answer = call_app(WebhookApp(tmp_path, SECRET), headers, Chunks(count=1, size=10))
    assert (status, answer["code"]) == (401, "missing_timestamp")


def envelope_with(change: Callable[[dict[str, Any]], object]) -> bytes:
    value = json.loads(event())
    change(value)
    return json.dumps(value).encode()


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (envelope_with(lambda e: e.pop("id")), 'event has no "id"'),
        (envelope_with(lambda e: e.update(id="")), 'event has no "id"'),
        (envelope_with(lambda e: e.update(id=None)), 'event has no "id"'),
        (envelope_with(lambda e: e.update(id=MARK)), 'event "id" is not a UUID'),
        (envelope_with(lambda e: e.update(id=7)), 'event "id" is not a UUID'),
        (envelope_with(lambda e: e.update(id=DATA_ID[:-1])), 'event "id" is not a UUID'),
        (envelope_with(lambda e: e.pop("type")), 'event has no "type"'),
        (envelope_with(lambda e: e.update(type=MARK)), 'event "type" is not transcribe_async.succeeded or .failed'),
        (envelope_with(lambda e: e.pop("data")), 'event has no "data"'),
        (b"[]", "event is not a JSON object"),
        (json.dumps(MARK).encode(), "event is not a JSON object"),
        (b"{}", 'event has no "id"'),
    ],
    ids=[
        "no_id",
        "empty_id",
        "null_id",
        "id_text",
        "id_number",
        "id_cut_short",
        "no_type",
        "other_type",
        "no_data",
        "list",
        "string",
        "empty_object",
    ],
)
def test_an_event_missing_a_field_is_400_naming_it_and_quoting_nothing(
    receiver: BackgroundServer, server_logs: list[str], body: bytes, reason: str
) -> None:
    response = post_signed(receiver, body)
    assert (response.status_code, response.json()) == (400, {"code": "malformed_event", "message": reason})
    assert MARK not in response.text and not any(MARK in line for line in server_logs)
    assert landed(receiver) == []


def test_an_upper_case_event_id_is_accepted(receiver: BackgroundServer) -> None:
    assert post_signed(receiver, envelope_with(lambda e: e.update(id=e["id"].upper()))).status_code == 200


ACCESS = "talktime.webhook.access"


def access_lines(caplog: pytest.LogCaptureFixture, expected: int = 1) -> list[str]:
    """The access lines once `expected` are there (the server logs just after the client has its answer)."""
    deadline = time.monotonic() + 5
    while True:
        lines = [record.getMessage() for record in caplog.records if record.name == ACCESS]
        if len(lines) >= expected or time.monotonic() > deadline:
            time.sleep(0.05)  # time for an unexpected extra line to show up
            return [record.getMessage() for record in caplog.records if record.name == ACCESS]
        time.sleep(0.01)


def test_each_request_logs_one_access_line_without_body_secret_or_signature(
    receiver: BackgroundServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=ACCESS)
    body = envelope(data_with(b'"n": 1'))
    ts = NOW.isoformat()
    good, bad = sign(SECRET, ts, body), sign("wrong-secret", ts, body)
    signed = post(receiver, body, ts, good)
    assert signed.status_code == 200
    assert len(access_lines(caplog, 1)) == 1
    assert post(receiver, body, ts, bad).status_code == 401
    assert len(access_lines(caplog, 2)) == 2
    health = httpx.get(f"{receiver.base_url}/healthz?token={SECRET}", timeout=10)
    assert health.status_code == 200
    lines = access_lines(caplog, 3)
    assert len(lines) == 3
    expected = [
        ("POST /webhooks/nabla 200 landed", len(signed.content)),
        ("POST /webhooks/nabla 401 invalid_signature", None),
        ("GET /healthz 200 ok", len(health.content)),
    ]
    for line, (start, size) in zip(lines, expected, strict=True):
        assert line.startswith(start + " "), line
        assert " ms client=127.0.0.1:" in line, line
        if size is not None:
            assert f" {size} B " in line, line
    text = "\n".join(lines)
    for secret_thing in (MARK, SECRET, good, bad, body.decode(), ts, "token", "x-nabla"):
        assert secret_thing not in text


def test_a_refused_body_too_large_is_logged_too(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=ACCESS)
    app = WebhookApp(tmp_path, SECRET, clock=lambda: NOW, limits=ReceiverLimits(max_body_bytes=1000))
    call_app(app, fresh_headers(**{"content-length": "2000"}), Chunks(count=5, size=400))
    [line] = access_lines(caplog)
    assert line.startswith("POST /webhooks/nabla 413 body_too_large ") and line.endswith(" client=-")


def test_an_unexpected_error_is_logged_as_a_500_access_line(
    receiver: BackgroundServer, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.INFO, logger=ACCESS)

    def explode(*args: object, **kwargs: object) -> None:
        raise RuntimeError(f"could not handle {MARK}")

    monkeypatch.setattr(receiver_module, "land_event", explode)
    assert post_signed(receiver, event()).status_code == 500
    [line] = access_lines(caplog)
    assert line.startswith("POST /webhooks/nabla 500 internal_error ") and MARK not in line


def test_a_path_is_logged_without_control_characters(
    receiver: BackgroundServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=ACCESS)
    httpx.get(f"{receiver.base_url}/a%0Afake%20line", timeout=10)
    [line] = access_lines(caplog)
    assert "\n" not in line and line.startswith("GET /a%0Afake%20line 405 method_not_allowed ")


def test_the_access_log_prints_itself_only_when_nothing_else_would(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    WebhookApp(tmp_path, SECRET)
    WebhookApp(tmp_path, SECRET)
    access = logging.getLogger(ACCESS)
    assert len(access.handlers) == 1 and access.getEffectiveLevel() <= logging.INFO
    access.info("one line from the test")
    assert capsys.readouterr().err == ""  # pytest's handlers on the root logger print it: no duplicate
    monkeypatch.setattr(logging.getLogger(), "handlers", [])  # as under `talktime webhook`
    access.info("one line from the test")
    err = capsys.readouterr().err
    assert err.count("one line from the test") == 1 and ACCESS in err


def test_healthz_answers_without_authentication(receiver: BackgroundServer) -> None:
    response = httpx.get(f"{receiver.base_url}/healthz", timeout=10)
    assert (response.status_code, response.json()) == (200, {"status": "ok", "landing_writable": True})


def test_healthz_is_503_when_the_landing_folder_cannot_be_written(receiver: BackgroundServer) -> None:
    receiver.app.landing.rmdir()
    response = httpx.get(f"{receiver.base_url}/healthz", timeout=10)
    assert response.status_code == 503
    assert response.json() == {
        "status": "unavailable",
        "landing_writable": False,
        "code": "landing_not_writable",
        "message": "the landing folder is missing or not writable",
    }


def test_healthz_is_503_on_a_read_only_landing_folder(
    receiver: BackgroundServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(os, "access", lambda path, mode: False)  # root may write anywhere: pretend read-only
    assert httpx.get(f"{receiver.base_url}/healthz", timeout=10).status_code == 503


@pytest.mark.parametrize(("method", "path"), [("GET", "/"), ("GET", "/webhooks/nabla"), ("PUT", "/healthz")])
def test_other_requests_are_still_405(receiver: BackgroundServer, method: str, path: str) -> None:
    response = httpx.request(method, f"{receiver.base_url}{path}", timeout=10)
    assert (response.status_code, response.json()["code"]) == (405, "method_not_allowed")
