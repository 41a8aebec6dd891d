"""A real HTTP emulator of the transcription API (raw ASGI, served by uvicorn).

Implements `GET {prefix}/transcribe-async/{id}` in both dialects (`/v1/copilot-api/server` is
2024-04-22, `/v1/core/server` is 2024-10-01; `X-Nabla-Api-Version` or `?nabla-api-version=`
overrides), bearer auth, 404/400, results that stay ongoing for a while, failed results, records
served byte for byte from their files (`stored`: large transcripts, never held in memory), and
fault injection that is deterministic under a seed: each fault is drawn from
(seed, id, n-th request for that id), so the same requests meet the same faults whatever the
concurrency.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from flows.emulator.dialects import render_dialect_b, resolve_version
from flows.inputs import Segment, read_slice
from flows.outcomes import is_uuid
from flows.webhook.asgi import Receive, Scope, Send, header_map, read_body, send_bytes, send_json

if TYPE_CHECKING:
    from flows.emulator.oauth import OAuthServer

DEFAULT_API_KEY = "talktime-dev-key"
PREFIX_A = "/v1/copilot-api/server"
PREFIX_B = "/v1/core/server"
FAULT_KINDS = ("rate_limited", "server_error", "unavailable", "truncated", "not_json", "drop", "stall")


class InjectedDropError(ConnectionAbortedError):
    """Raised inside the app to make the server abort a response mid-body."""


@dataclass(frozen=True)
class Faults:
    """Injected faults: a rate (0-1) per kind, plus latency and how long stalls and waits last."""

    rate_limited: float = 0.0
    server_error: float = 0.0
    unavailable: float = 0.0
    truncated: float = 0.0
    not_json: float = 0.0
    drop: float = 0.0
    stall: float = 0.0
    latency_ms: int = 0
    jitter_ms: int = 0
    stall_s: float = 60.0
    retry_after: str | None = "1"

    def draw(self, rng: random.Random) -> str | None:
        """The fault for one request, or None."""
        roll = rng.random()
        for kind in FAULT_KINDS:
            roll -= getattr(self, kind)
            if roll < 0:
                return kind
        return None


@dataclass
class EmulatorConfig:
    """What the emulator serves and how it misbehaves."""

    responses: dict[str, dict[str, Any]] = field(default_factory=dict)
    # A fixed answer per id (lower-case), served instead of `responses`: (HTTP status, JSON body).
    answers: dict[str, tuple[int, Any]] = field(default_factory=dict)
    # Records served byte for byte, read from their file on each request (never decoded, never held: large
    # transcripts), by id (lower-case): API responses only, dialect A, never `ongoing`.
    stored: dict[str, Segment] = field(default_factory=dict)
    api_key: str = DEFAULT_API_KEY
    ongoing_polls: int = 0
    ongoing_seconds: float = 0.0
    ongoing_forever: float = 0.0  # share of ids (drawn from the seed) that never leave `ongoing`
    faults: Faults = field(default_factory=Faults)
    seed: int = 0
    down: bool = False
    oauth: OAuthServer | None = None  # emulate dialect B's OAuth instead of a fixed key


class EmulatorApp:
    """The ASGI application. `requests` counts requests per id (inspected by tests)."""

    def __init__(self, config: EmulatorConfig) -> None:
        self.config = config
        self.requests: defaultdict[str, int] = defaultdict(int)
        self.request_log: list[tuple[float, str]] = []
        self._first_seen: dict[str, float] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        path: str = scope["path"]
        if self.config.oauth is not None and path == f"{PREFIX_B}/oauth/token" and scope["method"] == "POST":
            body = await read_body(receive)
            status, payload = self.config.oauth.token_response(body)
            await send_json(send, status, payload)
            return
        for prefix in (PREFIX_A, PREFIX_B):
            if path.startswith(f"{prefix}/transcribe-async/") and scope["method"] == "GET":
                await self._transcribe_async(scope, send, prefix, path[len(prefix) + 18 :])
                return
        await send_json(send, 404, {"code": "route_not_found", "message": "no such route"})

    async def _transcribe_async(self, scope: Scope, send: Send, prefix: str, raw_id: str) -> None:
        headers = header_map(scope)
        self.request_log.append((time.monotonic(), raw_id))
        if not self._authorized(headers.get("authorization", "")):
            await send_json(send, 401, {"code": "unauthorized", "message": "missing or invalid credentials"})
            return
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        requested = headers.get("x-nabla-api-version") or next(iter(query.get("nabla-api-version", [])), None)
        dialect = resolve_version(prefix == PREFIX_B, requested)
        if dialect is None:
            await send_json(send, 400, {"code": "invalid_api_version", "message": "unknown API version"})
            return
        key = raw_id.lower()
        n = self.requests[key]
        self.requests[key] += 1
        rng = random.Random(f"{self.config.seed}:{key}:{n}")
        if await self._injected_fault(send, rng):
            return
        if self.config.down:
            await send_json(send, 503, {"code": "unavailable", "message": "down"}, {"retry-after": "0"})
            return
        await self._answer(send, raw_id, key, dialect)

    def _authorized(self, header: str) -> bool:
        if self.config.oauth is not None:
            return self.config.oauth.accepts(header)
        return header == f"Bearer {self.config.api_key}"

    async def _injected_fault(self, send: Send, rng: random.Random) -> bool:
        faults = self.config.faults
        latency = faults.latency_ms + (rng.randint(0, faults.jitter_ms) if faults.jitter_ms else 0)
        if latency:
            await asyncio.sleep(latency / 1000)
        kind = faults.draw(rng)
        if kind is None:
            return False
        if kind == "rate_limited":
            extra = {"retry-after": faults.retry_after} if faults.retry_after is not None else {}
            await send_json(send, 429, {"code": "rate_limited", "message": "slow down"}, extra)
        elif kind in ("server_error", "unavailable"):
            status = 500 if kind == "server_error" else 503
            await send_json(send, status, {"code": kind, "message": "injected"})
        elif kind == "truncated":
            await send_bytes(send, 200, b'{"id": "00000000-0000-4000-8000-0000000', "application/json")
        elif kind == "not_json":
            await send_bytes(send, 200, b"<html>Bad gateway</html>", "text/html")
        elif kind == "drop":
            await _drop_connection(send)
        else:
            await asyncio.sleep(faults.stall_s)
            await send_json(send, 503, {"code": "stalled", "message": "injected stall"})
        return True

    async def _answer(self, send: Send, raw_id: str, key: str, dialect: str) -> None:
        if not is_uuid(raw_id):
            await send_json(send, 400, {"code": "invalid_id", "message": "id is not a UUID"})
            return
        if key in self.config.answers:
            status, body = self.config.answers[key]
            await send_json(send, status, body)
            return
        if key in self.config.stored:
            (stored,) = read_slice([self.config.stored[key]])
            await send_bytes(send, 200, stored.data, "application/json")
            return
        record = self.config.responses.get(key)
        if record is None:
            await send_json(send, 404, {"code": "not_found", "message": "unknown or expired id"})
            return
        if self._still_ongoing(key):
            record = {k: v for k, v in record.items() if k != "payload"} | {"status": "ongoing"}
        await send_json(send, 200, render_dialect_b(record) if dialect == "B" else record)

    def _still_ongoing(self, key: str) -> bool:
        now = time.monotonic()
        first = self._first_seen.setdefault(key, now)
        polls = self.requests[key]
        if (
            self.config.ongoing_forever
            and random.Random(f"{self.config.seed}:stuck:{key}").random() < self.config.ongoing_forever
        ):
            return True
        return polls <= self.config.ongoing_polls or now - first < self.config.ongoing_seconds


async def _drop_connection(send: Send) -> None:
    """Promise a body, send part of it, then fail: the server closes the connection mid-body."""
    headers = [(b"content-type", b"application/json"), (b"content-length", b"4096")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": b'{"id": ', "more_body": True})
    raise InjectedDropError("emulator: injected dropped connection")
