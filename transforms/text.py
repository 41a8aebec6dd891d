"""An output's text policy applied to a batch's tables, and the placeholder a landing keeps of a text.

Transcript text is patient data. The metrics need it for two things only (word counts, and whether
an item is a question), and they are computed before the policy is applied, so every metric is
the same whatever the policy. The policy then decides what the item tables keep of it:

    keep   the text as received (the default, for compatibility)
    drop   nothing: `transcript_items.text` is null, and `rejected_items.raw_item` keeps only the
           item's speaker and time members (its `text` member null, any other member left out;
           an item that is not an object is written as JSON `null`)
    hash   `transcript_items.text` is the lower-case hex HMAC-SHA256 of the UTF-8 text under a key
           the caller passes in (never stored with the output): the same text gives the same hash
           within an output with one key, so analysts can still count distinct utterances;
           `raw_item` as under drop, its `text` member the same hash when it is a string

A webhook landing that drops or hashes text (`text_shapes`) keeps each text's shape instead: one
`_` per word, and a final `?` when the text is a question, so that ingest computes the same word
and question counts from it. A hashing landing also keeps the hash, in the item member
LANDED_HASH_FIELD, which an output hashing with the same key takes as the text's hash.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable
from typing import Any, Literal

import polars as pl

from transforms.flatten import LANDED_HASH_FIELD
from transforms.items import WORD_PATTERN
from transforms.jsonvalues import HugeInt, strict_json
from transforms.metrics import QUESTION_PATTERN
from transforms.schemas import REJECTED_ITEMS, TRANSCRIPT_ITEMS

TextPolicyName = Literal["keep", "drop", "hash"]
TEXT_POLICIES: tuple[TextPolicyName, ...] = ("keep", "drop", "hash")
# What a dropped or hashed raw_item keeps: the members the rules read, except the text.
KEPT_MEMBERS = ("speaker", "speaker_type", "start_time_ms", "end_time_ms", "start_offset_ms", "end_offset_ms")
_INT_DIGITS_LIMIT = 4000  # Python refuses to convert longer integer literals (4300 digits)


def text_hmac(key: bytes, text: str) -> str:
    """The lower-case hex HMAC-SHA256 of the text's UTF-8 bytes (lone surrogates as U+FFFD)."""
    return hmac.new(key, text.encode("utf-8", "replace"), hashlib.sha256).hexdigest()


def key_id(key: bytes) -> str:
    """A short name of a key that reveals nothing of it (an HMAC of a constant): which key hashed an output."""
    return hmac.new(key, b"talktime text key id", hashlib.sha256).hexdigest()[:16]


def _hashed(key: bytes) -> Callable[[pl.Series], pl.Series]:
    def hash_series(texts: pl.Series) -> pl.Series:
        return pl.Series([None if t is None else text_hmac(key, t) for t in texts.to_list()], dtype=pl.String)

    return hash_series


def _parse_raw(raw: str) -> Any:
    def integer(digits: str) -> int | HugeInt:
        return HugeInt(digits) if len(digits.lstrip("-")) > _INT_DIGITS_LIMIT else int(digits)

    return json.loads(raw, parse_int=integer)


def redacted_raw_item(raw: str | None, hashed: Callable[[str], str] | None) -> str | None:
    """A rejected item's JSON with its text dropped (`hashed` None) or hashed; see the module's docstring."""
    if raw is None:
        return None
    try:
        item = _parse_raw(raw)
    except (ValueError, RecursionError):
        return "null"
    if not isinstance(item, dict):
        return "null"
    kept = {name: item[name] for name in KEPT_MEMBERS if name in item}
    if "text" in item:
        text, landed = item["text"], item.get(LANDED_HASH_FIELD)
        if hashed is None or not isinstance(text, str):
            kept["text"] = None
        else:  # a hashing landing kept the text's hash (the text is its shape)
            kept["text"] = landed if isinstance(landed, str) else hashed(text)
    return strict_json(kept, separators=(",", ":")) or "null"


def apply_text_policy(
    tables: dict[str, pl.DataFrame],
    policy: TextPolicyName,
    key: bytes | None = None,
    landed_hashes: pl.DataFrame | None = None,
) -> dict[str, pl.DataFrame]:
    """The tables with `transcript_items.text` and `rejected_items.raw_item` as the policy says.

    Apply it after every metric is computed. `key` is required by `hash`; `landed_hashes`
    (transcription_id, item_index, LANDED_HASH_FIELD) are hashes a landing kept of texts it
    replaced by their shape, taken instead of the hash of that shape.
    """
    if policy == "keep":
        return tables
    if policy == "hash" and not key:
        raise ValueError("the hash text policy needs a key")
    items, rejected = tables["transcript_items"], tables["rejected_items"]
    if policy == "drop":
        text = pl.lit(None, pl.String)
    else:
        assert key is not None
        text = pl.col("text").map_batches(_hashed(key), return_dtype=pl.String)
        if landed_hashes is not None and not landed_hashes.is_empty():
            items = items.join(landed_hashes, on=["transcription_id", "item_index"], how="left")
            text = pl.coalesce(pl.col(LANDED_HASH_FIELD), text)
    hashed = None if policy == "drop" else (lambda value: text_hmac(key or b"", value))
    raw = pl.col("raw_item").map_batches(
        lambda raws: pl.Series([redacted_raw_item(r, hashed) for r in raws.to_list()], dtype=pl.String),
        return_dtype=pl.String,
    )
    return {
        **tables,
        "transcript_items": items.with_columns(text.alias("text")).select(TRANSCRIPT_ITEMS.names()),
        "rejected_items": rejected.with_columns(raw.alias("raw_item")).select(REJECTED_ITEMS.names()),
    }


def text_shapes(texts: list[str | None]) -> list[str | None]:
    """Each text's shape: one `_` per word (as word counts count them), ending in `?` when the text
    is a question (as question counts tell it); null stays null. Counts of a shape equal the text's."""
    series = pl.Series(texts, dtype=pl.String)
    words = series.str.count_matches(WORD_PATTERN).to_list()
    questions = series.str.contains(QUESTION_PATTERN).to_list()
    return [
        None if text is None else " ".join(["_"] * count) + ("?" if question else "")
        for text, count, question in zip(texts, words, questions, strict=True)
    ]


def landed_items(items: list[Any], policy: TextPolicyName, key: bytes | None = None) -> list[Any]:
    """A transcript's items as a webhook landing keeps them under `policy` (a new list; `keep`: unchanged).

    Under drop and hash each string `text` becomes its shape (`text_shapes`), and under hash its
    hash is kept in LANDED_HASH_FIELD; a text that is not a string becomes 0 (still not a string: the
    item stays rejected as `text_not_string`); an item that is not an object becomes null (still
    `not_an_object`). Speakers, times and every other member stay, so ingest reads the same items,
    rejects the same ones, and computes the same metrics.
    """
    if policy == "keep":
        return items
    if policy == "hash" and not key:
        raise ValueError("the hash text policy needs a key")
    texts = [item["text"] if isinstance(item, dict) and isinstance(item.get("text"), str) else None for item in items]
    shapes = text_shapes(texts)
    landed: list[Any] = []
    for item, text, shape in zip(items, texts, shapes, strict=True):
        if not isinstance(item, dict):
            landed.append(None)
            continue
        kept = {name: value for name, value in item.items() if name != LANDED_HASH_FIELD}
        if text is not None:
            kept["text"] = shape
            if policy == "hash" and key:
                kept[LANDED_HASH_FIELD] = text_hmac(key, text)
        elif kept.get("text") is not None:
            kept["text"] = 0
        landed.append(kept)
    return landed
