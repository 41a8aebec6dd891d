"""Serving the emulator: blocking (the CLI) or in a background thread (demo and tests)."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import uvicorn

from flows.emulator.app import PREFIX_A, EmulatorApp, EmulatorConfig, InjectedDropError
from flows.inputs import ID_HEAD_BYTES, Segment, id_near_start, plan_slices, read_slice, unwrap_event
from flows.outcomes import is_uuid

STARTUP_TIMEOUT_S = 20.0


def load_responses(paths: Sequence[str | Path]) -> dict[str, dict[str, Any]]:
    """Stored responses (or webhook events) keyed by lower-case id; the later file wins."""
    responses: dict[str, dict[str, Any]] = {}
    for record in (record for batch in plan_slices(paths, 1000) for record in read_slice(batch)):
        try:
            value = unwrap_event(json.loads(record.data))
        except (json.JSONDecodeError, UnicodeDecodeError):
            continue
        if isinstance(value, dict) and is_uuid(value.get("id")):
            responses[str(value["id"]).lower()] = value
    return responses


def index_records(paths: Sequence[str | Path]) -> dict[str, Segment]:
    """Where each stored record is (its file's byte range), keyed by lower-case id, found among its first
    bytes without decoding it; the later file wins. For records too large to hold (`EmulatorConfig.stored`)."""
    stored: dict[str, Segment] = {}
    for (segment,) in plan_slices(paths, 1):
        with open(segment.path, "rb") as handle:
            handle.seek(segment.start)
            tid = id_near_start(handle.read(ID_HEAD_BYTES))
        if tid is not None:
            stored[tid] = segment
    return stored


class _HideInjectedDrops(logging.Filter):
    """Injected dropped connections are the emulator working, not errors worth a traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], InjectedDropError))


logging.getLogger("uvicorn.error").addFilter(_HideInjectedDrops())


def _uvicorn_config(app: Any, host: str, port: int) -> uvicorn.Config:
    return uvicorn.Config(
        app, host=host, port=port, log_level="warning", lifespan="off", access_log=False, timeout_graceful_shutdown=1
    )


def serve(config: EmulatorConfig, host: str, port: int) -> None:
    """Serve until interrupted."""
    uvicorn.Server(_uvicorn_config(EmulatorApp(config), host, port)).run()


class BackgroundServer:
    """An ASGI app on a free loopback port in a background thread: `with BackgroundServer(app) as s:`."""

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0) -> None:
        self.app = app
        self._server = uvicorn.Server(_uvicorn_config(app, host, port))
        self._thread = threading.Thread(target=self._server.run, name="talktime-server", daemon=True)
        self.host = host
        self.port = port

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def __enter__(self) -> Self:
        self._thread.start()
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.01)
        self.port = self._server.servers[0].sockets[0].getsockname()[1]
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)


class EmulatorServer(BackgroundServer):
    """The API emulator in a background thread."""

    app: EmulatorApp

    def __init__(self, config: EmulatorConfig, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(EmulatorApp(config), host, port)

    @property
    def api_url(self) -> str:
        """The dialect-A base URL that `/transcribe-async/{id}` is appended to."""
        return f"{self.base_url}{PREFIX_A}"
