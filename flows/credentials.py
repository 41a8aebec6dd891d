"""Where credentials come from: a Prefect Secret block, else an environment variable.

Values are read at the edge and handed to an Auth object; they are never logged, never a flow
parameter, never part of an exception message.
"""

from __future__ import annotations

import os
from typing import cast

from flows.auth import ApiKeyAuth, Auth
from flows.errors import ConfigurationError

API_KEY_ENV = "TALKTIME_API_KEY"


async def read_secret(block_name: str, env_name: str) -> str | None:
    """The Secret block's value if the block exists, else the environment variable's."""
    from prefect.blocks.system import Secret

    try:
        secret = cast(Secret, await Secret.aload(block_name))
    except (ValueError, RuntimeError):
        return os.environ.get(env_name) or None
    value = secret.get()
    return str(value) if value else None


async def resolve_auth(api_url: str, api_key_secret: str) -> Auth:
    """The credentials for `api_url`: an API key (dialect A)."""
    api_key = await read_secret(api_key_secret, API_KEY_ENV)
    if not api_key:
        raise ConfigurationError(
            f"no API key: set {API_KEY_ENV}, pass --api-key, or create the Prefect Secret block '{api_key_secret}'"
        )
    return ApiKeyAuth(api_key)
