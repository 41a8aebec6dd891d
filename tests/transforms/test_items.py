"""Each validity rule of shared/metrics.md, and both API dialects."""

from __future__ import annotations

from typing import Any

import pytest

from tests.helpers import item, tables_for

VALIDITY_CASES: list[tuple[str, Any, str | None]] = [
    ("valid", item("doctor", 0, 10), None),
    ("zero_length_is_valid", item("patient", 5, 5), None),
    ("upper_case_speaker_is_lowered", item("DOCTOR", 0, 10), None),
    ("missing_speaker_is_unspecified", {"start_time_ms": 0, "end_time_ms": 1, "text": "x"}, None),
    ("null_speaker_is_unspecified", item(None, 0, 1), None),
    ("missing_text_is_valid", {"speaker": "doctor", "start_time_ms": 0, "end_time_ms": 1}, None),
    ("null_text_is_valid", item("doctor", 0, 1, None), None),
    ("extra_fields_are_ignored", item("doctor", 0, 1, confidence=0.9, words=[{"a": 1}]), None),
    ("not_an_object_string", "just text", "not_an_object"),
    ("not_an_object_list", [1, 2], "not_an_object"),
    ("not_an_object_null", None, "not_an_object"),
    ("missing_start", {"speaker": "doctor", "end_time_ms": 1}, "missing_start_time"),
    ("null_start", item("doctor", None, 1), "missing_start_time"),
    ("string_start", item("doctor", "0", 1), "start_time_not_integer"),
    ("float_start", item("doctor", 0.0, 1), "start_time_not_integer"),
    ("bool_start", item("doctor", True, 1), "start_time_not_integer"),
    ("missing_end", {"speaker": "doctor", "start_time_ms": 1}, "missing_end_time"),
    ("string_end", item("doctor", 0, "10"), "end_time_not_integer"),
    ("float_end", item("doctor", 0, 10.5), "end_time_not_integer"),
    ("bool_end", item("doctor", 0, False), "end_time_not_integer"),
    ("huge_end", item("doctor", 0, 2**70), "end_time_out_of_range"),
    ("negative_start", item("doctor", -1, 10), "negative_start_time"),
    ("end_before_start", item("doctor", 10, 9), "end_before_start"),
    ("unknown_speaker", item("nurse", 0, 1), "unknown_speaker"),
    ("number_speaker", item(3, 0, 1), "speaker_not_string"),
    ("number_text", item("doctor", 0, 1, 42), "text_not_string"),
    ("object_text", item("doctor", 0, 1, {"t": "x"}), "text_not_string"),
]


@pytest.mark.parametrize(("raw", "reason"), [c[1:] for c in VALIDITY_CASES], ids=[c[0] for c in VALIDITY_CASES])
def test_validity_rule(raw: Any, reason: str | None) -> None:
    tables = tables_for([raw])
    rejected = tables["rejected_items"]
    if reason is None:
        assert rejected.height == 0
        assert tables["transcript_items"].height == 1
    else:
        assert rejected["reason"].to_list() == [reason]
        assert tables["transcript_items"].height == 0
        assert tables["transcriptions"]["rejected_item_count"].to_list() == [1]


def test_missing_speaker_becomes_unspecified() -> None:
    items = tables_for([{"start_time_ms": 0, "end_time_ms": 1}, item(None, 2, 3)])["transcript_items"]
    assert items["speaker"].to_list() == ["unspecified", "unspecified"]


def test_rejected_raw_item_is_the_item_as_json() -> None:
    rejected = tables_for([item("doctor", "1", 2, "é")])["rejected_items"]
    assert rejected["raw_item"].to_list() == ['{"speaker":"doctor","start_time_ms":"1","end_time_ms":2,"text":"é"}']


def _dialect_b(speaker: str | None, start: int, end: int, text: str) -> dict[str, Any]:
    raw: dict[str, Any] = {"text": text, "start_offset_ms": start, "end_offset_ms": end}
    if speaker is not None:
        raw["speaker_type"] = speaker
    return raw


def test_both_dialects_give_the_same_items() -> None:
    a = [item("doctor", 0, 1000, "hello there"), item("patient", 900, 2000, "hi"), item(None, 2500, 2600, "x")]
    b = [_dialect_b("DOCTOR", 0, 1000, "hello there"), _dialect_b("PATIENT", 900, 2000, "hi")]
    b.append(_dialect_b(None, 2500, 2600, "x"))
    ta, tb = tables_for(a), tables_for(b)
    for name in ("transcript_items", "speaker_metrics"):
        assert ta[name].equals(tb[name]), name
    assert tb["transcript_items"]["speaker"].to_list() == ["doctor", "patient", "unspecified"]


def test_dialect_b_string_offset_is_rejected() -> None:
    rejected = tables_for([{"speaker_type": "DOCTOR", "start_offset_ms": "5", "end_offset_ms": 9}])["rejected_items"]
    assert rejected["reason"].to_list() == ["start_time_not_integer"]


@pytest.mark.parametrize(
    ("text", "words"),
    [("", 0), ("   ", 0), ("a  b\tc\nd", 4), ("<UNIN/> okay", 2), ("non\u00a0breaking", 2), ("x\x1cy", 2), ("é à", 2)],
    ids=["empty", "blank", "mixed_space", "markup", "nbsp", "file_separator", "accents"],
)
def test_word_count_is_str_split(text: str, words: int) -> None:
    assert len(text.split()) == words
    assert tables_for([item("doctor", 0, 1, text)])["transcript_items"]["word_count"].to_list() == [words]
