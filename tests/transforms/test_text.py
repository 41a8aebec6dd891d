"""The text policy on a batch's tables, and the shapes a webhook landing keeps (transforms.text)."""

from __future__ import annotations

import json
from typing import Any

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from flows.outcomes import Outcome
from flows.transform import TextPolicy, transform_outcomes
from tests.helpers import FETCHED_AT, TID, item
from transforms.items import WORD_PATTERN
from transforms.metrics import QUESTION_PATTERN
from transforms.schemas import TABLES
from transforms.text import (
    LANDED_HASH_FIELD,
    apply_text_policy,
    key_id,
    landed_items,
    redacted_raw_item,
    text_hmac,
    text_shapes,
)

KEY = b"k" * 32
MARKER = "MARKER the patient reported chest pain MARKER"
WORKED = [
    item("doctor", 0, 4000, "Good morning, what brings you in?"),
    item("patient", 4500, 9000, "I have had a cough for two weeks."),
    item("patient", 9000, 11000, "It gets worse at night."),
    item("doctor", 10000, 13000, "Any fever?"),
    item("doctor", 13000, 15000, "Okay."),
    item("patient", 16000, 18000, MARKER),
    item("unspecified", 18500, 19000, "[noise]"),
    item("doctor", 20000, 19000, MARKER),  # rejected: end before start
    MARKER,  # rejected: not an object
    item("patient", 1, 2, [MARKER]),  # rejected: text not a string
    item("doctor", 0, 10, MARKER),
]
POLICIES = [TextPolicy("keep"), TextPolicy("drop"), TextPolicy("hash", KEY)]


def tables(items: list[Any], text: TextPolicy) -> dict[str, pl.DataFrame]:
    return transform_outcomes([Outcome(TID, "succeeded", FETCHED_AT, api_version="2024-04-22", items=items)], text)


@pytest.mark.parametrize("text", POLICIES[1:], ids=["drop", "hash"])
def test_the_metric_tables_are_the_same_whatever_the_policy(text: TextPolicy) -> None:
    kept, other = tables(WORKED, POLICIES[0]), tables(WORKED, text)
    for table in ("transcriptions", "speaker_metrics"):
        assert_frame_equal(other[table], kept[table])
    for table in ("transcript_items", "rejected_items"):  # the same rows and columns, the text aside
        assert other[table].schema == TABLES[table]
        assert_frame_equal(other[table].drop("text", "raw_item", strict=False),
                           kept[table].drop("text", "raw_item", strict=False))  # fmt: skip


def test_drop_writes_null_text_and_raw_items_without_text() -> None:
    dropped = tables(WORKED, TextPolicy("drop"))
    assert dropped["transcript_items"]["text"].null_count() == dropped["transcript_items"].height
    raws = dropped["rejected_items"]["raw_item"].to_list()
    assert raws == [
        '{"speaker":"doctor","start_time_ms":20000,"end_time_ms":19000,"text":null}',
        "null",
        '{"speaker":"patient","start_time_ms":1,"end_time_ms":2,"text":null}',
    ]
    assert all(json.loads(raw) is None or isinstance(json.loads(raw), dict) for raw in raws)


def test_hash_is_a_keyed_hmac_equal_for_equal_texts() -> None:
    hashed = tables(WORKED, TextPolicy("hash", KEY))
    texts = dict(hashed["transcript_items"].select("item_index", "text").iter_rows())
    assert texts[5] == texts[10] == text_hmac(KEY, MARKER)  # the same utterance twice: one hash
    assert texts[0] == text_hmac(KEY, "Good morning, what brings you in?") != texts[5]
    assert all(len(t) == 64 and int(t, 16) >= 0 for t in texts.values())
    other_key = tables(WORKED, TextPolicy("hash", b"x" * 32))["transcript_items"]
    assert dict(other_key.select("item_index", "text").iter_rows())[5] != texts[5]
    raw = json.loads(hashed["rejected_items"]["raw_item"][0])
    assert raw["text"] == text_hmac(KEY, MARKER)
    assert MARKER not in str(hashed["rejected_items"].to_dicts())


def test_hash_without_a_key_is_refused() -> None:
    with pytest.raises(ValueError, match="needs a key"):
        apply_text_policy(tables(WORKED, POLICIES[0]), "hash", None)


def test_key_id_names_a_key_without_revealing_it() -> None:
    assert key_id(KEY) == key_id(KEY) != key_id(b"y" * 32)
    assert len(key_id(KEY)) == 16 and KEY.hex()[:16] != key_id(KEY)


@pytest.mark.parametrize(
    ("raw", "dropped"),
    [
        ('{"speaker":"nurse","start_time_ms":1,"end_time_ms":2,"text":"MARKER","extra":"MARKER"}',
         '{"speaker":"nurse","start_time_ms":1,"end_time_ms":2,"text":null}'),
        ('{"speaker_type":"DOCTOR","start_offset_ms":"1","end_offset_ms":2}',
         '{"speaker_type":"DOCTOR","start_offset_ms":"1","end_offset_ms":2}'),
        ('{"start_time_ms":' + "9" * 5000 + ',"end_time_ms":2,"text":"MARKER"}',
         '{"start_time_ms":' + "9" * 5000 + ',"end_time_ms":2,"text":null}'),
        ('["MARKER"]', "null"),
        ('"MARKER"', "null"),
        ("not json", "null"),
        (None, None),
    ],
    ids=["other-members-left-out", "dialect-b", "huge-int-kept", "array", "string", "unreadable", "null"],
)  # fmt: skip
def test_a_dropped_raw_item_keeps_speaker_and_times_only(raw: str | None, dropped: str | None) -> None:
    assert redacted_raw_item(raw, None) == dropped


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.none(), st.text(alphabet=st.sampled_from("ab ?\t\n\x1c\u00a0\u3000.é")))))
def test_a_shape_has_the_texts_word_and_question_counts(texts: list[str | None]) -> None:
    shapes = pl.Series(text_shapes(texts), dtype=pl.String)
    originals = pl.Series(texts, dtype=pl.String)
    assert shapes.str.count_matches(WORD_PATTERN).to_list() == originals.str.count_matches(WORD_PATTERN).to_list()
    assert shapes.str.contains(QUESTION_PATTERN).to_list() == originals.str.contains(QUESTION_PATTERN).to_list()
    assert all(shape is None or set(shape) <= {"_", " ", "?"} for shape in shapes.to_list())


@pytest.mark.parametrize("policy", ["drop", "hash"])
def test_a_landing_keeps_no_text_and_the_same_metrics(policy: str) -> None:
    landed = landed_items(WORKED, policy, KEY)  # type: ignore[arg-type]
    assert MARKER not in json.dumps(landed)
    kept = tables(WORKED, POLICIES[0])
    again = tables(landed, POLICIES[0])
    for table in ("transcriptions", "speaker_metrics"):
        assert_frame_equal(again[table], kept[table])
    assert_frame_equal(again["rejected_items"].drop("raw_item"), kept["rejected_items"].drop("raw_item"))
    if policy == "hash":  # an output hashing with the same key gets the hashes of the texts, not of the shapes
        assert landed[0][LANDED_HASH_FIELD] == text_hmac(KEY, WORKED[0]["text"])
        assert_frame_equal(
            tables(landed, POLICIES[2])["transcript_items"], tables(WORKED, POLICIES[2])["transcript_items"]
        )
        assert json.loads(tables(landed, POLICIES[2])["rejected_items"]["raw_item"][0])["text"] == text_hmac(
            KEY, MARKER
        )


def test_a_keeping_landing_changes_nothing() -> None:
    assert landed_items(WORKED, "keep") is WORKED
