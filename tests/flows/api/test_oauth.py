"""OAuth client credentials (dialect B) against the emulator's token endpoint on loopback."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from flows.api.client import ClientOptions, TranscriptionClient, make_http_client
from flows.api.oauth import OAuthClientCredentials
from flows.emulator.app import PREFIX_A, PREFIX_B, EmulatorConfig, Faults
from flows.emulator.oauth import OAuthServer
from flows.emulator.server import EmulatorServer
from flows.emulator.synthetic import synthetic_responses
from flows.errors import AuthenticationError
from flows.outcomes import Outcome
from flows.transform import transform_outcomes

CLIENT_ID = "talktime-test-client"


def _pem_pair() -> tuple[str, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return private, public


@pytest.fixture(scope="module")
def keys() -> tuple[str, str]:
    return _pem_pair()


@pytest.fixture(scope="module")
def responses() -> dict[str, dict[str, Any]]:
    return synthetic_responses(12, seed=21)


class Clock:
    """A clock that moves when told to, and by `tick` at every reading."""

    def __init__(self, tick: float = 0.0) -> None:
        self.now = 1000.0
        self.tick = tick

    def __call__(self) -> float:
        self.now += self.tick
        return self.now


def fetch(
    server: EmulatorServer, auth: OAuthClientCredentials, ids: list[str], prefix: str = PREFIX_B
) -> list[Outcome]:
    async def go() -> list[Outcome]:
        async with make_http_client() as http:
            options = ClientOptions(api_url=f"{server.base_url}{prefix}", api_version="2024-10-01")
            outcomes, down = await TranscriptionClient(http, options, auth).fetch_many(ids)
            assert down is None
            return outcomes

    return asyncio.run(go())


def oauth_emulator(responses: dict[str, Any], public: str, **kw: Any) -> EmulatorServer:
    faults = kw.pop("faults", Faults())
    return EmulatorServer(
        EmulatorConfig(responses=responses, oauth=OAuthServer(CLIENT_ID, public, **kw), faults=faults)
    )


def test_dialect_b_with_oauth_gives_the_same_tables_as_dialect_a(keys: tuple[str, str], responses: dict) -> None:
    private, public = keys
    with oauth_emulator(responses, public) as server:
        b = fetch(server, OAuthClientCredentials(f"{server.base_url}{PREFIX_B}", CLIENT_ID, private), list(responses))
        a = fetch(
            server,
            OAuthClientCredentials(f"{server.base_url}{PREFIX_B}", CLIENT_ID, private),
            list(responses),
            PREFIX_A,
        )
    assert {o.status for o in b} == {"succeeded"}
    tables_a, tables_b = transform_outcomes(a), transform_outcomes(b)
    for name in ("speaker_metrics", "transcript_items"):
        assert tables_a[name].equals(tables_b[name])


def test_the_token_is_cached_and_renewed_before_it_expires(keys: tuple[str, str], responses: dict) -> None:
    private, public = keys
    clock = Clock()
    fetched: list[int] = []

    async def two_rounds(server: EmulatorServer, auth: OAuthClientCredentials) -> None:
        async with make_http_client() as http:
            client = TranscriptionClient(http, ClientOptions(api_url=f"{server.base_url}{PREFIX_B}"), auth)
            await client.fetch_many(list(responses))
            fetched.append(auth.tokens_fetched)
            clock.now += 300 - 59  # inside the last minute of the token's advertised life
            outcomes, _ = await client.fetch_many(list(responses)[:2])
            assert {o.status for o in outcomes} == {"succeeded"}
            fetched.append(auth.tokens_fetched)

    with oauth_emulator(responses, public, token_ttl_s=3600, advertised_ttl_s=300) as server:
        asyncio.run(
            two_rounds(server, OAuthClientCredentials(f"{server.base_url}{PREFIX_B}", CLIENT_ID, private, clock=clock))
        )
    assert fetched == [1, 2]


def test_token_expiry_mid_run_is_renewed_once_and_retried(keys: tuple[str, str], responses: dict) -> None:
    private, public = keys
    server_clock = Clock(tick=1.0)  # tokens die after a few requests, unknown to the client
    with oauth_emulator(responses, public, token_ttl_s=8, advertised_ttl_s=3600, clock=server_clock) as server:
        auth = OAuthClientCredentials(f"{server.base_url}{PREFIX_B}", CLIENT_ID, private)
        outcomes = fetch(server, auth, list(responses))
    assert {o.status for o in outcomes} == {"succeeded"}
    assert auth.tokens_fetched >= 2


def test_a_wrong_key_fails_clearly_without_key_material(keys: tuple[str, str], responses: dict) -> None:
    _, public = keys
    other_private, _ = _pem_pair()
    with oauth_emulator(responses, public) as server:
        auth = OAuthClientCredentials(f"{server.base_url}{PREFIX_B}", CLIENT_ID, other_private)
        with pytest.raises(AuthenticationError) as info:
            fetch(server, auth, list(responses)[:1])
    message = str(info.value)
    assert "client assertion" in message and "PRIVATE" not in message and other_private[40:80] not in message
    assert "redacted" in repr(auth)


def test_a_401_after_renewal_stops_the_run(keys: tuple[str, str], responses: dict) -> None:
    private, public = keys
    with oauth_emulator(responses, public, token_ttl_s=0.0, advertised_ttl_s=3600) as server:
        auth = OAuthClientCredentials(f"{server.base_url}{PREFIX_B}", CLIENT_ID, private)
        with pytest.raises(AuthenticationError, match="401"):
            fetch(server, auth, list(responses)[:1])
    assert auth.tokens_fetched == 2
