"""Transport errors in a few words: what happened and where (host and port), never a path or a query."""

from __future__ import annotations

import asyncio
import socket
import threading

import httpx2
import pytest

from flows.api.reply import exchange, host_port, network_cause
from flows.emulator.app import EmulatorConfig
from flows.emulator.server import EmulatorServer
from flows.errors import RunStoppedError, TransientApiError


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def failure(url: str) -> TransientApiError:
    async def go() -> None:
        async with httpx2.AsyncClient(timeout=5) as http:
            await exchange(http, url, {"Authorization": "Bearer k"}, max_bytes=1024, deadline_s=10)

    with pytest.raises(TransientApiError) as raised:
        asyncio.run(go())
    return raised.value


def test_connection_refused_names_host_and_port_only() -> None:
    port = closed_port()
    error = failure(f"http://127.0.0.1:{port}/v1/copilot-api/server/transcribe-async/x?token=t")
    assert (str(error), error.cause) == (f"connection refused to 127.0.0.1:{port}", "network")


def test_tls_to_a_plain_http_server_is_a_tls_error() -> None:
    with EmulatorServer(EmulatorConfig(responses={})) as server:
        host, port = server.api_url.split("//")[1].split("/")[0].split(":")
        assert str(failure(f"https://{host}:{port}/x")) == f"TLS error with {host}:{port}"


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (httpx2.ConnectTimeout("t"), "connect to api.example.com:443 timed out"),
        (httpx2.ReadTimeout("t"), "api.example.com:443 timed out (reading)"),
        (
            httpx2.RemoteProtocolError("peer closed"),
            "api.example.com:443 closed the connection or broke the HTTP protocol",
        ),
        (httpx2.ConnectError("[Errno -2] Name or service not known"), "cannot connect to api.example.com:443"),
    ],
    ids=["connect timeout", "read timeout", "dropped", "connect error"],
)
def test_each_transport_error_in_a_few_words(error: httpx2.TransportError, expected: str) -> None:
    assert network_cause(error, "https://api.example.com/v1/path?secret=s") == expected


def test_an_unresolved_name_says_so() -> None:
    error = httpx2.ConnectError("x")
    error.__cause__ = socket.gaierror(-2, "Name or service not known")
    assert network_cause(error, "http://nowhere.invalid:8080/p") == "host name not resolved: nowhere.invalid:8080"


def test_host_port_defaults_and_ipv6() -> None:
    assert host_port("https://user:pw@api.example.com/p?q=1") == "api.example.com:443"
    assert host_port("http://[::1]:8765/p") == "[::1]:8765"


def test_closing_a_fetcher_cuts_a_fetch_short_instead_of_using_closed_connections(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A batch still fetching when its run stops (another batch was refused) ends with RunStoppedError,
    at once: not with 'client has been closed', not after its request's timeout."""
    from flows.api.service import Fetcher
    from flows.settings import RunSettings

    monkeypatch.setenv("TALKTIME_API_KEY", "k")
    with socket.socket() as silent:  # accepts connections (backlog), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        settings = RunSettings(api_url=f"http://127.0.0.1:{port}/v1", ids_file="ids.txt", out="out")
        fetcher = Fetcher(settings)
        ended: list[BaseException] = []

        def fetch() -> None:
            try:
                fetcher.fetch_many(["98fce1ef-dbca-41ef-8bc7-4d1621ac07c6"])
            except BaseException as exc:
                ended.append(exc)

        thread = threading.Thread(target=fetch)
        thread.start()
        while not fetcher._calls:  # the fetch is under way
            thread.join(0.01)
        fetcher.close()
        thread.join(10)
    assert not thread.is_alive()
    assert [type(e) for e in ended] == [RunStoppedError]
    with pytest.raises(RunStoppedError):
        fetcher.fetch_many(["98fce1ef-dbca-41ef-8bc7-4d1621ac07c6"])
