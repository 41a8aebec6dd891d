"""An output's text policy, recorded once in `_talktime/policy.json` and compared by every later writer.

The first writer of an output creates the file (create-if-absent: of two first writers racing, one
creates it and the other compares against it); every later `run` and `ingest` reads it and stops with
a ConfigurationError naming both policies when it asks for another, because an output whose rows
keep text in some files and not in others would tell its readers something false. For `hash` the
file also holds the key's id (`transforms.text.key_id`, an HMAC of a constant: nothing of the key),
so a run hashing with another key is refused too: the same text must give the same hash throughout.

An output written before policies were recorded (data or a ledger, and no policy file) kept its
text: it counts as `keep`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime

from flows.errors import ConfigurationError
from flows.storage.layout import LEDGER_DIR, LEGACY_LEDGER, POLICY
from flows.storage.store import Store

TEXT_TABLES = ("transcript_items", "rejected_items")


@dataclass(frozen=True)
class RecordedPolicy:
    """What an output's policy file says: its text policy, and for `hash` the key's id."""

    text: str
    key_id: str | None = None


def read_policy(store: Store) -> RecordedPolicy | None:
    """The output's recorded policy; `keep` for an output written before policies were recorded; None for
    an output nothing has written yet."""
    try:
        data = store.read_bytes(POLICY)
    except FileNotFoundError:
        return RecordedPolicy("keep") if _written_before_policies(store) else None
    return _parsed(data, store)


def _parsed(data: bytes, store: Store) -> RecordedPolicy:
    try:
        recorded = json.loads(data)
        return RecordedPolicy(str(recorded["text_policy"]), recorded.get("key_id"))
    except (ValueError, KeyError, TypeError):
        raise ConfigurationError(f"{store.location}/{POLICY} is not a talktime policy file") from None


def _written_before_policies(store: Store) -> bool:
    return bool(store.list(LEDGER_DIR)) or store.exists(LEGACY_LEDGER) or any(store.exists(t) for t in TEXT_TABLES)


def check_policy(store: Store, text: str, key_id: str | None = None) -> None:
    """ConfigurationError (one line, both policies named) when the output holds another policy or key."""
    recorded = read_policy(store)
    if recorded is not None:
        _compare(store, recorded, text, key_id)


def _compare(store: Store, recorded: RecordedPolicy, text: str, key_id: str | None) -> None:
    if recorded.text != text:
        raise ConfigurationError(
            f"{store.location} keeps text under the policy {recorded.text!r}, and this run asks for {text!r}: "
            f"run with --text {recorded.text}, or write to another output (an output never mixes policies)"
        )
    if text == "hash" and key_id is not None and recorded.key_id not in (None, key_id):
        raise ConfigurationError(
            f"{store.location} was hashed with another text key (id {recorded.key_id}, this run's is {key_id}): "
            "use the same key, or write to another output (hashes under two keys cannot be compared)"
        )


def record_policy(store: Store, text: str, key_id: str | None = None) -> None:
    """Record the policy if the output has none yet (atomically), else compare it (ConfigurationError)."""
    try:
        recorded = _parsed(store.read_bytes(POLICY), store)
    except FileNotFoundError:
        if _written_before_policies(store):
            _compare(store, RecordedPolicy("keep"), text, key_id)  # its rows kept their text
        body = {"text_policy": text, "recorded_at": datetime.now(UTC).isoformat(timespec="seconds")}
        if text == "hash" and key_id:
            body["key_id"] = key_id
        if store.create_if_absent(POLICY, json.dumps(body, indent=1).encode() + b"\n") is not None:
            return
        recorded = _parsed(store.read_bytes(POLICY), store)  # another first writer was quicker
    _compare(store, recorded, text, key_id)
