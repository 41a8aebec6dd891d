"""Serving the webhook receiver: uvicorn's HTTP/1.1 protocol with a header deadline and a connection cap.

uvicorn (h11) never times out a request whose headers have not arrived: a client that sends one
byte a second holds its connection for ever, and nothing bounds how many it opens. So the receiver
runs on `GuardedH11Protocol`, which

- answers 408 `header_timeout` and closes a connection whose request headers are not complete
  within `read_timeout_s` of its opening, or of its previous answer (a keep-alive connection that
  trickles its next request, or the rest of a body nobody reads);
- answers 503 `too_many_connections` and closes any connection opened while `max_connections` are
  open.

Both answers are written on the socket directly (no request was parsed) and logged on the access log.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any, ClassVar

from uvicorn.protocols.http.h11_impl import H11Protocol

from flows.webhook.receiver import ReceiverLimits, log_access


def _raw_answer(status: int, phrase: str, code: str, message: str) -> bytes:
    body = json.dumps({"code": code, "message": message}).encode()
    head = (
        f"HTTP/1.1 {status} {phrase}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline for request headers and a cap on open connections."""

    limits: ClassVar[ReceiverLimits] = ReceiverLimits()
    _head_timer: asyncio.TimerHandle | None = None
    _waiting_since: float = 0.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.limits.max_connections:
            message = f"more than {self.limits.max_connections} connections are open; retry later"
            self._refuse(503, "Service Unavailable", "too_many_connections", message)
            return
        self._arm_head_timer()

    def handle_events(self) -> None:
        cycle = self.cycle
        super().handle_events()
        if self.cycle is not cycle:  # a request's headers are complete
            self._cancel_head_timer()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and self.cycle is not None and self.cycle.response_complete:
            self._arm_head_timer()  # the next request's headers are due in time too

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def _arm_head_timer(self) -> None:
        self._cancel_head_timer()
        self._waiting_since = time.perf_counter()
        self._head_timer = self.loop.call_later(self.limits.read_timeout_s, self._on_head_timeout)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _on_head_timeout(self) -> None:
        self._head_timer = None
        if not self.transport.is_closing():
            message = f"the request headers were not received within {self.limits.read_timeout_s:g} s"
            self._refuse(408, "Request Timeout", "header_timeout", message)

    def _refuse(self, status: int, phrase: str, code: str, message: str) -> None:
        answer = _raw_answer(status, phrase, code, message)
        self.transport.write(answer)
        self.transport.close()
        log_access("-", "-", status, code, len(answer), self._waiting_since or time.perf_counter(), self.client)


def guarded_protocol(limits: ReceiverLimits) -> type[GuardedH11Protocol]:
    """The protocol class uvicorn instantiates per connection, bound to these limits."""
    return type("GuardedH11Protocol", (GuardedH11Protocol,), {"limits": limits})


def uvicorn_options(limits: ReceiverLimits) -> dict[str, Any]:
    """uvicorn settings for the receiver (`uvicorn.run(app, host=..., port=..., **uvicorn_options(...))`)."""
    return {"http": guarded_protocol(limits), "log_level": "warning", "lifespan": "off", "access_log": False}
