"""The worked example of shared/metrics.md, number for number."""

from __future__ import annotations

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from tests.helpers import TID, item, tables_for
from transforms.schemas import SPEAKER_METRICS, TRANSCRIPTIONS

WORKED_EXAMPLE = [
    item("doctor", 0, 4000, "Good morning, what brings you in?"),
    item("patient", 4500, 9000, "I have had a cough for two weeks."),
    item("patient", 9000, 11000, "It gets worse at night."),
    item("doctor", 10000, 13000, "Any fever?"),
    item("doctor", 13000, 15000, "Okay."),
    item("patient", 16000, 18000, "No fever."),
    item("unspecified", 18500, 19000, "[noise]"),
    item("doctor", 20000, 19000, "Goodbye."),
]


@pytest.fixture(scope="module")
def tables() -> dict[str, pl.DataFrame]:
    return tables_for(WORKED_EXAMPLE)


def test_speaker_metrics_match_the_worked_example(tables: dict[str, pl.DataFrame]) -> None:
    expected = pl.DataFrame(
        {
            "transcription_id": [TID] * 3,
            "speaker": ["doctor", "patient", "unspecified"],
            "item_count": [3, 3, 1],
            "talk_time_ms": [9000, 8500, 500],
            "talk_share": [0.5, 8500 / 18000, 500 / 18000],
            "word_count": [9, 15, 1],
            "words_per_minute": [60.0, 15 / (8500 / 60000), 120.0],
            "turn_count": [2, 2, 1],
            "mean_turn_ms": [4500.0, 4250.0, 500.0],
            "longest_turn_ms": [5000, 6500, 500],
            "overlap_ms": [1000, 1000, 0],
            "interruption_count": [1, 0, 0],
            "question_count": [2, 0, 0],
            "first_turn_ms": [4000, 6500, 500],
            "mean_response_gap_ms": [0.0, 750.0, 500.0],
        },
        schema=SPEAKER_METRICS,
    )
    assert_frame_equal(tables["speaker_metrics"], expected)
    assert tables["speaker_metrics"]["talk_share"][1] == pytest.approx(0.472222, abs=1e-6)
    assert tables["speaker_metrics"]["words_per_minute"][1] == pytest.approx(105.882352, abs=1e-6)


def test_transcription_row_matches_the_worked_example(tables: dict[str, pl.DataFrame]) -> None:
    row = tables["transcriptions"].row(0, named=True)
    expected = {
        "item_count": 7,
        "rejected_item_count": 1,
        "speaker_count": 3,
        "first_start_ms": 0,
        "last_end_ms": 19000,
        "span_ms": 19000,
        "total_talk_ms": 17000,
        "silence_ms": 2000,
        "overlap_ms": 1000,
        "speaker_switches": 4,
    }
    assert {k: row[k] for k in expected} == expected
    assert row["switches_per_minute"] == pytest.approx(12.631578, abs=1e-6)
    assert row["doctor_patient_ratio"] == pytest.approx(1.058823, abs=1e-6)
    assert tables["transcriptions"].schema == TRANSCRIPTIONS


def test_the_rejected_item_is_item_7_with_its_reason(tables: dict[str, pl.DataFrame]) -> None:
    rejected = tables["rejected_items"]
    assert rejected.select("item_index", "reason").to_dicts() == [{"item_index": 7, "reason": "end_before_start"}]
    assert '"text":"Goodbye."' in rejected["raw_item"][0]


def test_items_table_keeps_api_positions_and_counts_words(tables: dict[str, pl.DataFrame]) -> None:
    items = tables["transcript_items"]
    assert items["item_index"].to_list() == [0, 1, 2, 3, 4, 5, 6]
    assert items["word_count"].to_list() == [6, 8, 5, 2, 1, 2, 1]
    assert items["duration_ms"].to_list() == [4000, 4500, 2000, 3000, 2000, 2000, 500]
