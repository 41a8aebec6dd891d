"""The receiver under abuse (issue 19): unsigned floods, slowloris, slow bodies, too many connections.

Before these bounds, the receiver read up to 16 MiB of every connection's body before looking at its
signature, with no limit on connections and no read timeout: 150 unsigned connections took it to
2.37 GiB, and none of 1,000 slowloris connections was ever closed. Every bound here is asserted as a
count, a size, or "closed within N s" with a wide margin; none asserts a speed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import selectors
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn

from flows.cli import main
from flows.webhook.asgi import Message
from flows.webhook.events import sign
from flows.webhook.receiver import ReceiverLimits, WebhookApp
from flows.webhook.server import GuardedH11Protocol
from tests.flows.webhook.test_webhook import NOW, SECRET, Chunks, WebhookServer, call_app, event, fresh_headers, landed
from tests.helpers import wait_until_healthy

MIB = 1024 * 1024
READ_TIMEOUT_S = 1.0
MARGIN_S = 5.0  # "closed within the read timeout", generously: the machine is shared
HEAD = b"POST /webhooks/nabla HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"


def unsigned_head(length: int) -> bytes:
    return HEAD + f"content-length: {length}\r\n\r\n".encode()


@pytest.fixture
def guarded(tmp_path: Path) -> Iterator[WebhookServer]:
    limits = ReceiverLimits(read_timeout_s=READ_TIMEOUT_S, max_connections=1000)
    with WebhookServer(WebhookApp(tmp_path / "landing", SECRET, clock=lambda: NOW, limits=limits)) as server:
        yield server


def post_event(server: WebhookServer, n: int = 1) -> httpx.Response:
    body, ts = event(n), NOW.isoformat()
    headers = {"x-nabla-webhook-timestamp": ts, "x-nabla-webhook-signature": sign(SECRET, ts, body)}
    return httpx.post(f"{server.base_url}/webhooks/nabla", content=body, headers=headers, timeout=10)


def connect(server: WebhookServer) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=5)


def read_until_closed(sock: socket.socket, within_s: float) -> bytes | None:
    """What the server sent before closing the connection; None if it is still open after `within_s`."""
    sock.settimeout(within_s)
    received = b""
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except TimeoutError:
        return None
    except ConnectionResetError:
        pass
    return received


# --- Headers first: nothing of an unsigned body is read --------------------------------------------


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        ({}, "missing_timestamp"),
        ({"x-nabla-webhook-timestamp": NOW.isoformat()}, "missing_signature"),
        (fresh_headers(**{"x-nabla-webhook-signature": "not-a-signature"}), "invalid_signature"),
        (fresh_headers(**{"x-nabla-webhook-signature": "A" * 64}), "invalid_signature"),
        (fresh_headers(**{"x-nabla-webhook-timestamp": "1764000000"}), "bad_timestamp"),
        (fresh_headers(**{"x-nabla-webhook-timestamp": "2026-11-23T11:50:00Z"}), "stale_timestamp"),
        (fresh_headers(**{"x-nabla-webhook-timestamp": "2026-11-23T12:10:00Z"}), "future_timestamp"),
    ],
    ids=["no_headers", "no_signature", "signature_not_hex", "signature_upper_case", "unix_seconds", "stale", "future"],
)
def test_a_request_without_usable_signature_headers_is_refused_before_any_body_byte_is_read(
    tmp_path: Path, headers: dict[str, str], code: str
) -> None:
    receive = Chunks(count=16, size=MIB)
    status, answer = call_app(WebhookApp(tmp_path, SECRET, clock=lambda: NOW), headers, receive)
    assert (status, answer["code"], receive.pulled) == (401, code, 0)


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def webhook_process(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """`talktime webhook` in a process of its own (its memory is what is measured), on a free port."""
    port = free_port()
    argv = [sys.executable, "-m", "flows.cli", "webhook", "--port", str(port), "--landing", str(tmp_path / "landing"),
            "--secret-env", "TALKTIME_TEST_WEBHOOK_SECRET"]  # fmt: skip
    env = os.environ | {"TALKTIME_TEST_WEBHOOK_SECRET": SECRET}
    process = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until_healthy(process, port, "the receiver")
        yield process, port
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_many_unsigned_connections_do_not_grow_the_receivers_memory(
    webhook_process: tuple[subprocess.Popen[bytes], int],
) -> None:
    """100 connections each announce 8 MiB (under the 16 MiB cap) and send 1 MiB, without a signature,
    and stay open: before, the receiver held every byte (100 MiB and more); now it refuses each on its
    headers and holds none of it."""
    process, port = webhook_process
    before = rss_bytes(process.pid)
    sockets, peak = [], before
    try:
        for _ in range(100):
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            sockets.append(sock)
            with contextlib.suppress(OSError):  # refused and closed already: what is wanted
                sock.sendall(unsigned_head(8 * MIB) + b"x" * MIB)
            peak = max(peak, rss_bytes(process.pid))
        for _ in range(10):  # what the receiver may still be reading
            time.sleep(0.1)
            peak = max(peak, rss_bytes(process.pid))
    finally:
        for sock in sockets:
            sock.close()
    assert peak - before < 32 * MIB, f"the receiver grew by {(peak - before) / MIB:.0f} MiB"


# --- Slow clients are closed; legitimate events land meanwhile --------------------------------------


def test_slowloris_connections_are_closed_within_the_read_timeout_while_events_land(guarded: WebhookServer) -> None:
    """200 connections trickle header bytes for ever, 50 more post unsigned bodies: a signed event still
    lands, and every trickling connection is closed within the read timeout (1 s here) plus a margin."""
    slow = []
    for _ in range(200):
        sock = connect(guarded)
        sock.sendall(HEAD[:20])
        slow.append(sock)
    for _ in range(50):
        with connect(guarded) as sock, contextlib.suppress(OSError):
            sock.sendall(unsigned_head(64 * 1024) + b"x" * 64 * 1024)
    assert post_event(guarded).json() == {"status": "landed"}
    selector = selectors.DefaultSelector()
    for sock in slow:
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ)
    deadline = time.monotonic() + READ_TIMEOUT_S + MARGIN_S
    try:
        while selector.get_map() and time.monotonic() < deadline:
            for key in list(selector.get_map().values()):
                try:
                    key.fileobj.send(b"x")  # type: ignore[union-attr]  # one more header byte
                except OSError:
                    selector.unregister(key.fileobj)
            for key, _ in selector.select(timeout=0.25):
                try:
                    closed = not key.fileobj.recv(65536)  # type: ignore[union-attr]
                except BlockingIOError:
                    closed = False
                except OSError:
                    closed = True
                if closed:
                    selector.unregister(key.fileobj)
        still_open = len(selector.get_map())
    finally:
        selector.close()
        for sock in slow:
            sock.close()
    assert still_open == 0, f"{still_open} of 200 trickling connections still open"
    assert len(landed(guarded)) == 1


@pytest.mark.parametrize("after_an_answer", [False, True], ids=["first_request", "keep_alive_next_request"])
def test_headers_that_do_not_arrive_in_time_get_408_and_the_connection_closes(
    guarded: WebhookServer, after_an_answer: bool
) -> None:
    with connect(guarded) as sock:
        if after_an_answer:  # uvicorn's keep-alive timer stops at the first byte of the next request
            sock.sendall(b"GET /healthz HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n")
            answer = b""
            while not answer.endswith(b"true}"):  # the whole answer: {"status": "ok", "landing_writable": true}
                answer += sock.recv(65536)
            assert answer.startswith(b"HTTP/1.1 200 ")
        sock.sendall(HEAD[:20])
        received = read_until_closed(sock, READ_TIMEOUT_S + MARGIN_S)
    assert received is not None, "the connection was not closed"
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408 ") and b"connection: close" in head
    assert json.loads(body)["code"] == "header_timeout"


def test_a_body_that_trickles_gets_408_and_the_connection_closes(guarded: WebhookServer) -> None:
    headers = "".join(f"{k}: {v}\r\n" for k, v in fresh_headers().items())
    with connect(guarded) as sock:
        sock.sendall(HEAD + headers.encode() + b"content-length: 1000\r\n\r\n" + b"x" * 10)
        sock.settimeout(0.2)
        deadline, received = time.monotonic() + READ_TIMEOUT_S + MARGIN_S, b""
        while time.monotonic() < deadline:
            try:
                sock.sendall(b"x")  # one more body byte
                chunk = sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                break
            received += chunk
            if not chunk:
                break
        else:
            pytest.fail("the connection was not closed")
    if received:  # the answer, unless the server's close overtook it
        head, _, body = received.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 408 ") and json.loads(body)["code"] == "body_timeout"


# --- Bounded concurrency: body slots and connections -----------------------------------------------


class Held:
    """An ASGI receive that hands out one chunk, then holds until released."""

    def __init__(self, release: asyncio.Event) -> None:
        self.release, self.pulled = release, 0

    async def __call__(self) -> Message:
        self.pulled += 1
        if self.pulled > 1:
            await self.release.wait()
        return {"type": "http.request", "body": b"x" * 100, "more_body": self.pulled < 2}


def test_bodies_are_read_at_most_n_at_once_and_the_next_gets_503_busy(tmp_path: Path) -> None:
    limits = ReceiverLimits(max_concurrent_bodies=2, slot_wait_s=0.2)
    app = WebhookApp(tmp_path, SECRET, clock=lambda: NOW, limits=limits)
    pairs = [(k.encode(), v.encode()) for k, v in fresh_headers().items()]

    async def request(receive: Held) -> tuple[int, dict[bytes, bytes], dict[str, str]]:
        sent: list[Message] = []

        async def send(message: Message) -> None:
            sent.append(message)

        await app({"type": "http", "method": "POST", "path": "/webhooks/nabla", "headers": pairs}, receive, send)
        return sent[0]["status"], dict(sent[0]["headers"]), json.loads(sent[1]["body"])

    async def scenario() -> list[tuple[int, str, int]]:
        release = asyncio.Event()
        holders = [Held(release), Held(release)]
        reading = [asyncio.create_task(request(holder)) for holder in holders]
        while sum(holder.pulled for holder in holders) < 4:  # both are reading their bodies
            await asyncio.sleep(0.01)
        third = Held(release)
        status, headers, answer = await request(third)
        assert (headers[b"connection"], headers[b"retry-after"]) == (b"close", b"1")
        results = [(status, answer["code"], third.pulled)]
        release.set()
        for task in reading:
            status, _, answer = await task
            results.append((status, answer["code"], 2))
        fourth = Held(release)
        status, _, answer = await request(fourth)
        return [*results, (status, answer["code"], fourth.pulled)]

    busy, *rest = asyncio.run(asyncio.wait_for(scenario(), 30))
    assert busy == (503, "busy", 0)  # nothing of its body was read
    assert rest == [(401, "invalid_signature", 2)] * 3  # the slots were given back


def test_connections_over_the_cap_get_503_and_are_closed(tmp_path: Path) -> None:
    limits = ReceiverLimits(max_connections=3, read_timeout_s=30)
    with WebhookServer(WebhookApp(tmp_path / "landing", SECRET, clock=lambda: NOW, limits=limits)) as server:
        idle = [connect(server) for _ in range(3)]
        connections = server._server.server_state.connections
        deadline = time.monotonic() + 10
        while len(connections) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        with connect(server) as extra:
            received = read_until_closed(extra, MARGIN_S)
        assert received is not None and received.startswith(b"HTTP/1.1 503 ")
        assert json.loads(received.partition(b"\r\n\r\n")[2])["code"] == "too_many_connections"
        idle.pop().close()
        while len(connections) >= 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert post_event(server).json() == {"status": "landed"}
        for sock in idle:
            sock.close()


# --- The options of `talktime webhook` ------------------------------------------------------------


def webhook_argv(tmp_path: Path, *options: str) -> list[str]:
    return ["webhook", "--landing", str(tmp_path), "--secret-env", "TALKTIME_TEST_WEBHOOK_SECRET", *options]


def test_the_cli_passes_every_limit_and_serves_on_the_guarded_protocol(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    served: list[tuple[WebhookApp, dict[str, object]]] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: served.append((app, kwargs)))
    monkeypatch.setenv("TALKTIME_TEST_WEBHOOK_SECRET", SECRET)
    assert main(webhook_argv(tmp_path)) == 0
    assert served[0][0].limits == ReceiverLimits()  # the documented defaults
    assert ReceiverLimits() == ReceiverLimits(16 * MIB, 10.0, 8, 256, 1.0)
    options = ["--read-timeout", "2.5", "--max-concurrent-bodies", "3", "--max-connections", "40"]
    assert main(webhook_argv(tmp_path, *options)) == 0
    app, kwargs = served[1]
    assert app.limits == ReceiverLimits(read_timeout_s=2.5, max_concurrent_bodies=3, max_connections=40)
    protocol = kwargs["http"]
    assert isinstance(protocol, type) and issubclass(protocol, GuardedH11Protocol) and protocol.limits == app.limits


@pytest.mark.parametrize(
    ("options", "says"),
    [
        (["--read-timeout", "0"], "--read-timeout must be a positive number of seconds"),
        (["--read-timeout", "nan"], "--read-timeout must be a positive number of seconds"),
        (["--max-concurrent-bodies", "0"], "--max-concurrent-bodies must be at least 1"),
        (["--max-connections", "-1"], "--max-connections must be at least 1"),
    ],
    ids=["timeout_zero", "timeout_nan", "no_body_slot", "negative_connections"],
)
def test_the_cli_refuses_a_bad_limit_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], options: list[str], says: str
) -> None:
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: pytest.fail("served"))
    monkeypatch.setenv("TALKTIME_TEST_WEBHOOK_SECRET", SECRET)
    assert main(webhook_argv(tmp_path, *options)) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"talktime: error: {says}") and err.count("\n") == 1
