"""Credentials from Prefect Secret blocks on the real local server, the environment winning."""

from __future__ import annotations

import asyncio
import os

import pytest

from flows.api.auth import ApiKeyAuth
from flows.api.oauth import OAuthClientCredentials
from flows.secrets import export_storage_credentials, resolve_auth
from tests.conftest import FLOW_TEST_MARKS

pytestmark = FLOW_TEST_MARKS


def save_secret(name: str, value: str) -> None:
    from prefect.blocks.system import Secret

    Secret(value=value).save(name, overwrite=True)


def test_storage_credentials_come_from_blocks_for_s3_only(monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(variable, raising=False)
    save_secret("unit-s3-aws-access-key-id", "AKIA-from-block")
    save_secret("unit-s3-aws-secret-access-key", "secret-from-block")
    assert asyncio.run(export_storage_credentials("/local/dir", "unit-s3")) == []
    exported = asyncio.run(export_storage_credentials("s3://bucket/prefix", "unit-s3"))
    assert exported == ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"]
    assert os.environ["AWS_ACCESS_KEY_ID"] == "AKIA-from-block"


def test_the_environment_wins_over_a_block(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "from-env")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY", raising=False)
    save_secret("unit-s3b-aws-access-key-id", "from-block")
    asyncio.run(export_storage_credentials("s3://bucket/prefix", "unit-s3b"))
    assert os.environ["AWS_ACCESS_KEY_ID"] == "from-env"


def test_api_key_and_oauth_key_from_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TALKTIME_API_KEY", raising=False)
    monkeypatch.delenv("TALKTIME_OAUTH_CLIENT_ID", raising=False)
    monkeypatch.delenv("TALKTIME_OAUTH_PRIVATE_KEY_FILE", raising=False)
    save_secret("unit-api-key", "sk-from-block")
    auth = asyncio.run(resolve_auth("http://api.test", "unit-api-key"))
    assert isinstance(auth, ApiKeyAuth) and "sk-from-block" not in repr(auth)
    save_secret("unit-private-key", "-----BEGIN PRIVATE KEY-----\nnot a real key\n-----END PRIVATE KEY-----\n")
    oauth = asyncio.run(
        resolve_auth("http://api.test", "unit-api-key", oauth_client_id="client", private_key_secret="unit-private-key")
    )
    assert isinstance(oauth, OAuthClientCredentials) and oauth.token_url == "http://api.test/oauth/token"


def test_an_api_key_in_the_environment_wins_over_the_block(monkeypatch: pytest.MonkeyPatch) -> None:
    save_secret("unit-api-key-env-wins", "from-block")
    monkeypatch.setenv("TALKTIME_API_KEY", "from-env")
    auth = asyncio.run(resolve_auth("http://api.test", "unit-api-key-env-wins"))
    assert asyncio.run(auth.authorization(None)) == "Bearer from-env"  # type: ignore[arg-type]
