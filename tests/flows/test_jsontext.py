"""flows.jsontext: untrusted JSON read without crashing or quoting it, strict JSON written."""

from __future__ import annotations

import json
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flows.jsontext import JsonError, loads, repair_unicode, strict_json
from transforms.jsonvalues import HugeInt

# Any code point, lone surrogates included, and the characters that need escaping.
texts = st.text(st.one_of(st.characters(), st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), st.just("\\")))


def without_lone_surrogates(text: str) -> str:
    """What the repair should give: every lone surrogate replaced by U+FFFD, pairs joined."""
    joined = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return re.sub("[\ud800-\udfff]", "\ufffd", joined)


@given(texts, st.booleans())
def test_repair_replaces_exactly_the_lone_surrogates(text: str, ascii_only: bool) -> None:
    data = json.dumps({"text": text}, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")
    if not ascii_only and re.search("[\ud800-\udfff]", text):
        return  # a raw surrogate is not UTF-8: such bytes are "not JSON", tested below
    assert loads(data) == {"text": without_lone_surrogates(text)}


def test_repair_counts_what_it_repaired() -> None:
    assert repair_unicode(rb'["\ud83d\ude00", "\\ud83d", "\udc00\ud83d"]') == (
        rb'["\ud83d\ude00", "\\ud83d", "\ufffd\ufffd"]',
        2,
    )


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b'{"secret": ' + b"[" * 100_000, "too_deep"),
        (b'{"secret": 1', "not_json"),
        (b'{"secret": "\xff"}', "not_json"),
        ('{"secret": "\ud800"}'.encode("utf-8", "surrogatepass"), "not_json"),
    ],
    ids=["deep", "truncated", "not-utf8", "raw-surrogate"],
)
def test_unreadable_json_is_an_error_that_quotes_nothing(data: bytes, reason: str) -> None:
    with pytest.raises(JsonError) as error:
        loads(data)
    assert error.value.reason == reason and "secret" not in str(error.value) and "[[" not in str(error.value)


def test_a_huge_integer_is_read_as_hugeint_and_written_back_as_digits() -> None:
    value = loads(b'{"n": -' + b"5" * 5000 + b', "m": 12}')
    assert isinstance(value["n"], HugeInt) and value["m"] == 12
    assert strict_json(value) == '{"n": -' + "5" * 5000 + ', "m": 12}'


def test_strict_json_writes_nan_and_infinity_as_null() -> None:
    assert strict_json(loads(b'{"a": NaN, "b": [Infinity, -Infinity, 1.5]}')) == '{"a": null, "b": [null, null, 1.5]}'
