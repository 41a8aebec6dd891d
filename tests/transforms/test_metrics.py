"""One test per metric rule, on tiny literal transcripts."""

from __future__ import annotations

import pytest

from tests.helpers import item, metrics_by_speaker, tables_for


def test_talk_time_is_the_union_of_a_speakers_items() -> None:
    m = metrics_by_speaker([item("doctor", 0, 10), item("doctor", 5, 15), item("doctor", 5, 15)])
    assert m["doctor"]["talk_time_ms"] == 15


def test_touching_items_do_not_overlap() -> None:
    t = tables_for([item("doctor", 0, 10), item("patient", 10, 20)])
    assert t["transcriptions"]["overlap_ms"].to_list() == [0]
    assert metrics_by_speaker([item("doctor", 0, 10), item("patient", 10, 20)])["patient"]["interruption_count"] == 0


def test_overlap_counts_time_once_however_many_speakers() -> None:
    items = [item("doctor", 0, 10), item("patient", 0, 10), item("unspecified", 0, 10)]
    row = tables_for(items)["transcriptions"].row(0, named=True)
    assert (row["overlap_ms"], row["total_talk_ms"]) == (10, 10)
    assert {s: m["overlap_ms"] for s, m in metrics_by_speaker(items).items()} == {
        "doctor": 10,
        "patient": 10,
        "unspecified": 10,
    }


def test_a_speaker_overlapping_itself_is_not_overlap() -> None:
    row = tables_for([item("doctor", 0, 10), item("doctor", 5, 20)])["transcriptions"].row(0, named=True)
    assert row["overlap_ms"] == 0


@pytest.mark.parametrize(
    ("other", "interrupts"),
    [((0, 10), True), ((5, 10), False), ((0, 5), False), ((6, 9), False), ((0, 6), True)],
    ids=["inside", "same_start", "ends_at_start", "starts_after", "just_inside"],
)
def test_interruption_needs_a_start_strictly_inside(other: tuple[int, int], interrupts: bool) -> None:
    m = metrics_by_speaker([item("doctor", *other), item("patient", 5, 7)])
    assert m["patient"]["interruption_count"] == int(interrupts)


def test_an_item_inside_two_others_interrupts_once() -> None:
    items = [item("doctor", 0, 10), item("unspecified", 0, 10), item("patient", 5, 6)]
    assert metrics_by_speaker(items)["patient"]["interruption_count"] == 1


def test_turns_follow_time_order_not_api_order() -> None:
    items = [item("patient", 10, 20), item("doctor", 0, 5), item("doctor", 5, 8)]
    m = metrics_by_speaker(items)
    assert (m["doctor"]["turn_count"], m["doctor"]["longest_turn_ms"]) == (1, 8)
    assert tables_for(items)["transcriptions"]["speaker_switches"].to_list() == [1]


def test_zero_talk_gives_null_shares_and_rates() -> None:
    m = metrics_by_speaker([item("doctor", 5, 5, "hi")])
    assert (m["doctor"]["talk_time_ms"], m["doctor"]["talk_share"], m["doctor"]["words_per_minute"]) == (0, None, None)


def test_ratio_is_null_without_a_patient() -> None:
    row = tables_for([item("doctor", 0, 10)])["transcriptions"].row(0, named=True)
    assert row["doctor_patient_ratio"] is None
    assert row["speaker_switches"] == 0


def test_a_succeeded_transcription_without_items() -> None:
    row = tables_for([])["transcriptions"].row(0, named=True)
    assert (row["item_count"], row["speaker_count"], row["speaker_switches"], row["total_talk_ms"]) == (0, 0, 0, 0)
    assert (row["span_ms"], row["silence_ms"], row["switches_per_minute"]) == (None, None, None)


def test_only_rejected_items() -> None:
    t = tables_for([item("doctor", 5, 1)])
    row = t["transcriptions"].row(0, named=True)
    assert (row["item_count"], row["rejected_item_count"], row["first_start_ms"]) == (0, 1, None)
    assert t["speaker_metrics"].height == 0


def test_talk_share_is_the_correctly_rounded_quotient() -> None:
    """polars divides by a broadcast scalar through its reciprocal: 3 * (1/5) is 0.6000000000000001."""
    m = metrics_by_speaker([item("doctor", 0, 1), item("patient", 0, 1), item("unspecified", 0, 3)])
    assert m["unspecified"]["talk_share"] == 3 / 5
    m = metrics_by_speaker([item("doctor", 0, 10), item("patient", 0, 1)])
    assert m["doctor"]["talk_share"] == 10 / 11
