"""Where credentials come from: a Prefect Secret block, else an environment variable.

Dialect A: an API key (`--api-key`, $TALKTIME_API_KEY, or the Secret block named by
`api_key_secret`). Dialect B: an OAuth client id (`--oauth-client-id` or
$TALKTIME_OAUTH_CLIENT_ID) and its RS256 private key, from a file (`--private-key-file` or
$TALKTIME_OAUTH_PRIVATE_KEY_FILE), the PEM text in $TALKTIME_OAUTH_PRIVATE_KEY, or the Secret
block named by `private_key_secret`. With a client id, OAuth is used.

Values are read at the edge and handed to an Auth object; they are never logged, never a flow
parameter, never part of an exception message.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, cast

from flows.api.auth import ApiKeyAuth, Auth
from flows.errors import ConfigurationError

if TYPE_CHECKING:
    from flows.settings import RunSettings

API_KEY_ENV = "TALKTIME_API_KEY"
OAUTH_CLIENT_ID_ENV = "TALKTIME_OAUTH_CLIENT_ID"
PRIVATE_KEY_ENV = "TALKTIME_OAUTH_PRIVATE_KEY"
PRIVATE_KEY_FILE_ENV = "TALKTIME_OAUTH_PRIVATE_KEY_FILE"


async def read_secret(block_name: str, env_name: str) -> str | None:
    """The environment variable's value if it is set, else the Secret block's (if the block exists).

    The environment wins, as for storage keys: a worker or a CLI run given a key explicitly
    uses it, and asks Prefect's API for nothing (a run without a server would start one).
    """
    from prefect.blocks.system import Secret

    if os.environ.get(env_name):
        return os.environ[env_name]
    try:
        secret = cast(Secret, await Secret.aload(block_name))
    except (ValueError, RuntimeError):
        return os.environ.get(env_name) or None
    value = secret.get()
    return str(value) if value else None


async def _private_key(private_key_file: str | None, private_key_secret: str) -> str:
    path = private_key_file or os.environ.get(PRIVATE_KEY_FILE_ENV)
    if path:
        try:
            return Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigurationError(f"cannot read the OAuth private key file {path}: {exc.strerror}") from None
    key = await read_secret(private_key_secret, PRIVATE_KEY_ENV)
    if not key:
        raise ConfigurationError(
            f"no OAuth private key: pass --private-key-file, set {PRIVATE_KEY_FILE_ENV} or {PRIVATE_KEY_ENV},"
            f" or create the Prefect Secret block '{private_key_secret}'"
        )
    return key


async def resolve_auth(
    api_url: str,
    api_key_secret: str,
    *,
    oauth_client_id: str | None = None,
    private_key_file: str | None = None,
    private_key_secret: str = "talktime-oauth-private-key",
) -> Auth:
    """The credentials for `api_url`: OAuth client credentials when a client id is given, else an API key."""
    from flows.api.oauth import OAuthClientCredentials

    client_id = oauth_client_id or os.environ.get(OAUTH_CLIENT_ID_ENV)
    if client_id:
        return OAuthClientCredentials(api_url, client_id, await _private_key(private_key_file, private_key_secret))
    api_key = await read_secret(api_key_secret, API_KEY_ENV)
    if not api_key:
        raise ConfigurationError(
            f"no API key: set {API_KEY_ENV}, pass --api-key, or create the Prefect Secret block '{api_key_secret}'"
        )
    return ApiKeyAuth(api_key)


STORAGE_KEY_PAIR = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
STORAGE_SECRETS = {
    "AWS_ACCESS_KEY_ID": "aws-access-key-id",
    "AWS_SECRET_ACCESS_KEY": "aws-secret-access-key",
    "AWS_SESSION_TOKEN": "aws-session-token",
}


async def export_storage_credentials(out: str, secret_prefix: str) -> list[str]:
    """For an s3:// output, put credentials from Prefect Secret blocks into this process's environment.

    Reads the blocks `{secret_prefix}-aws-access-key-id`, `-aws-secret-access-key` and
    `-aws-session-token` where they exist, for variables not already set (the environment wins),
    so pyarrow's S3 client finds them. Returns the names of the variables set (never values).
    """
    if not out.startswith("s3://") or all(os.environ.get(v) for v in STORAGE_KEY_PAIR):
        return []  # the environment's keys win as a whole: never mix them with a block's session token
    exported = []
    for variable, suffix in STORAGE_SECRETS.items():
        if os.environ.get(variable):
            continue
        value = await read_secret(f"{secret_prefix}-{suffix}", variable)
        if value:
            os.environ[variable] = value
            exported.append(variable)
    return exported


async def auth_for(settings: RunSettings) -> Auth:
    """The credentials a run's settings name (see `resolve_auth`)."""
    return await resolve_auth(
        settings.api_url,
        settings.api_key_secret,
        oauth_client_id=settings.oauth_client_id,
        private_key_file=settings.private_key_file,
        private_key_secret=settings.private_key_secret,
    )


async def check_credentials(settings: RunSettings) -> None:
    """Fail before any batch starts (ConfigurationError) when the credentials cannot be found."""
    await auth_for(settings)
