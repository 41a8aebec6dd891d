"""Inputs with a marker sentence planted in a valid item and in rejected items, and ways to read it back."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pyarrow.parquet as pq
import uvicorn

from flows.emulator.server import BackgroundServer, load_responses
from flows.storage.store import Store
from flows.webhook.events import sign
from flows.webhook.receiver import WebhookApp
from flows.webhook.server import uvicorn_options
from tests.conftest import PRIMOCK

MARKER = "MARKER the patient reported chest pain MARKER"
MARKED_ID = "7d3b7c2e-5a1f-4e8b-9c0d-1a2b3c4d5e6f"
HOOK_SECRET = "whsec-text-policy"
TEXT_KEY = "a-test-key-of-32-characters-0001"


def marked_response() -> dict[str, Any]:
    """A succeeded response whose items carry the marker: a valid one, and rejected ones."""
    items = [
        {"text": "Good morning, what brings you in?", "speaker": "doctor", "start_time_ms": 0, "end_time_ms": 2000},
        {"text": MARKER, "speaker": "patient", "start_time_ms": 2100, "end_time_ms": 5000},
        {"text": f"{MARKER}?", "speaker": "doctor", "start_time_ms": 5000, "end_time_ms": 6000},
        {"text": MARKER, "speaker": "patient", "start_time_ms": 9000, "end_time_ms": 8000},  # end before start
        MARKER,  # not an object
    ]
    return {"id": MARKED_ID, "client_request_id": "marked", "status": "succeeded", "payload": {"transcript": items}}


def responses(count: int = 3) -> dict[str, dict[str, Any]]:
    """A few sample responses and the marked one, by id."""
    sample = load_responses([PRIMOCK])
    chosen = {tid: sample[tid] for tid in list(sample)[:count]}
    return {**chosen, MARKED_ID: marked_response()}


def write_responses(folder: Path, by_id: dict[str, dict[str, Any]]) -> Path:
    """The responses as one NDJSON file per response (so a batch can end a file), in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    for n, body in enumerate(by_id.values()):
        (folder / f"responses-{n}.ndjson").write_text(json.dumps(body) + "\n", encoding="utf-8")
    return folder


class WebhookServer(BackgroundServer):
    """The receiver as `talktime webhook` serves it, on a free loopback port."""

    app: WebhookApp

    def __init__(self, app: WebhookApp) -> None:
        super().__init__(app)
        config = uvicorn.Config(app, host=self.host, port=0, timeout_graceful_shutdown=1, **uvicorn_options(app.limits))
        self._server = uvicorn.Server(config)
        from threading import Thread

        self._thread = Thread(target=self._server.run, name="talktime-webhook", daemon=True)


def deliver(landing: Path, by_id: dict[str, dict[str, Any]], text: str, key: bytes | None = None) -> None:
    """Post each response as a signed event to a real receiver landing under the `text` policy."""
    app = WebhookApp(landing, HOOK_SECRET, text=text, text_key=key)  # type: ignore[arg-type]
    with WebhookServer(app) as server:
        for n, data in enumerate(by_id.values()):
            now = datetime.now(UTC).isoformat()
            body = json.dumps(
                {"id": f"5f0c4a3e-1b2d-4c6e-8a9b-{n:012d}", "created_at": now,
                 "type": "transcribe_async.succeeded", "data": data}
            ).encode()  # fmt: skip
            headers = {"x-nabla-webhook-timestamp": now, "x-nabla-webhook-signature": sign(HOOK_SECRET, now, body)}
            answer = httpx.post(f"{server.base_url}/webhooks/nabla", content=body, headers=headers, timeout=10)
            assert answer.status_code == 200, answer.text


def readable(data: bytes, name: str) -> str:
    """A file's content as text to search: a Parquet file's rows and metadata decoded, others as bytes."""
    if name.endswith(".parquet"):
        import io

        table = pq.read_table(io.BytesIO(data))
        return json.dumps(table.to_pylist(), default=str) + str(table.schema.metadata)
    return data.decode("utf-8", "replace")


def files_holding(out: str, needle: str = MARKER) -> list[str]:
    """The files under an output (local or S3) whose content holds `needle`, relative to it."""
    store = Store(out)
    return [path for path in store.list("") if needle in readable(store.read_bytes(path), path)]


def local_files_holding(root: Path, needle: str = MARKER) -> Iterator[Path]:
    """Every file below `root` holding `needle` (Parquet decoded, anything else as bytes, hidden files too)."""
    for path in sorted(root.rglob("*")):
        if path.is_file():
            try:
                data = path.read_bytes()
            except OSError:
                continue
            try:
                found = needle in readable(data, path.name)
            except Exception:
                found = needle.encode() in data
            if found or needle.encode() in data:
                yield path
