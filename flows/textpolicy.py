"""A run's text policy (`--text keep|drop|hash`, setting `text_policy`): its key, and the output's record.

The policy's pure part is `transforms.text`. The key of `hash` is a secret: read at the edge, from
$TALKTIME_TEXT_HMAC_KEY or the Prefect Secret block the settings name (`text_key_secret`, by default
`talktime-text-hmac-key`), in the process that needs it (the flow's, and each batch task's: a Dask
worker reads it itself, it never crosses a task boundary). It is never a parameter, never logged,
never written to the output: the output records only the key's id (`transforms.text.key_id`).
"""

from __future__ import annotations

import asyncio
import os

from flows.errors import ConfigurationError
from flows.secrets import read_secret
from flows.settings import IngestSettings, RunSettings
from flows.storage.policy import record_policy
from flows.storage.store import Store
from flows.transform import KEEP_TEXT, TextPolicy
from transforms.text import key_id

TEXT_KEY_ENV = "TALKTIME_TEXT_HMAC_KEY"
MIN_KEY_CHARS = 16
_block_keys: dict[str, bytes] = {}  # keys read from Secret blocks, once per process


def text_key(secret_name: str) -> bytes:
    """The hash policy's key: the environment's, else the Secret block's (ConfigurationError if neither)."""
    if not os.environ.get(TEXT_KEY_ENV) and secret_name in _block_keys:
        return _block_keys[secret_name]
    value = asyncio.run(read_secret(secret_name, TEXT_KEY_ENV))
    if not value:
        raise ConfigurationError(
            f"--text hash needs a key: set {TEXT_KEY_ENV} or create the Prefect Secret block '{secret_name}'"
        )
    if len(value) < MIN_KEY_CHARS:
        raise ConfigurationError(f"the text key is too short: use at least {MIN_KEY_CHARS} random characters")
    if not os.environ.get(TEXT_KEY_ENV):
        _block_keys[secret_name] = value.encode()
    return value.encode()


def text_key_from_environment() -> bytes | None:
    """The key in $TALKTIME_TEXT_HMAC_KEY (the webhook receiver asks Prefect for nothing), None if unset;
    ConfigurationError if too short."""
    value = os.environ.get(TEXT_KEY_ENV)
    if not value:
        return None
    if len(value) < MIN_KEY_CHARS:
        raise ConfigurationError(f"the text key is too short: use at least {MIN_KEY_CHARS} random characters")
    return value.encode()


def text_policy(settings: RunSettings | IngestSettings) -> TextPolicy:
    """The policy the settings ask for, with its key for `hash`."""
    if settings.text_policy == "keep":
        return KEEP_TEXT
    if settings.text_policy == "drop":
        return TextPolicy("drop")
    return TextPolicy("hash", text_key(settings.text_key_secret))


def open_text_policy(store: Store, settings: RunSettings | IngestSettings) -> TextPolicy:
    """The run's policy, recorded in the output if it has none yet, else checked against the output's
    (ConfigurationError naming both when they differ, or when the key differs)."""
    policy = text_policy(settings)
    record_policy(store, policy.name, key_id(policy.key) if policy.key else None)
    return policy
