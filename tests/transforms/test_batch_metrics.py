"""A batch of many transcriptions gets, for each, exactly the metrics the previous plans computed.

The one-sweep metrics (transforms/metrics.py) run one running maximum over the whole batch, kept
apart per transcription by offsets; a mistake there would leak one transcription's reach into the
next, which no single-transcription test can see. The plans they replaced (a group-by per metric,
kept under tests/transforms/previous/) are the oracle here, on batches with many transcriptions,
ties, zero-length items, nested items, and transcriptions without valid items.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from flows.outcomes import Outcome
from flows.transform import build_tables, decode_outcomes
from tests.transforms.previous.metrics import speaker_metrics as previous_speaker_metrics
from tests.transforms.previous.transcriptions import transcription_metrics as previous_transcription_metrics
from transforms.pipeline import collect_tables, item_tables
from transforms.schemas import RESPONSES, SORT_KEYS, conform

FETCHED_AT = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
SPEAKER = st.sampled_from(["doctor", "patient", "unspecified", "Patient"])


@st.composite
def an_item(draw: st.DrawFn) -> Any:
    start = draw(st.integers(0, 40))
    item = {
        "speaker": draw(SPEAKER),
        "start_time_ms": start,
        "end_time_ms": start + draw(st.sampled_from([0, 1, 3, 10, 25, 60])),
        "text": draw(st.sampled_from(["a b?", "ok", None, "why? ", ""])),
    }
    if draw(st.integers(0, 19)) == 0:  # now and then an item that is rejected
        item["end_time_ms"] = -1
    return item


@st.composite
def an_outcome(draw: st.DrawFn) -> Outcome:
    tid = str(uuid.UUID(int=draw(st.integers(0, 2**128 - 1)), version=4))
    status = draw(st.sampled_from(["succeeded", "succeeded", "succeeded", "ongoing", "failed"]))
    items = draw(st.lists(an_item(), max_size=9)) if status == "succeeded" else []
    return Outcome(tid, status, FETCHED_AT, api_version="2024-04-22", items=items)


def previous_tables(outcomes: list[Outcome]) -> dict[str, pl.DataFrame]:
    """The metric tables as the plans before the one-sweep rewrite computed them."""
    decoded = decode_outcomes(outcomes)
    items = collect_tables(item_tables(decoded.raw_items.lazy(), decoded.raw_json.lazy()))
    valid, rejected = items["transcript_items"].lazy(), items["rejected_items"].lazy()
    speakers = previous_speaker_metrics(valid).collect()
    responses = conform(decoded.responses.lazy(), RESPONSES)
    transcriptions = previous_transcription_metrics(responses, valid, rejected, speakers.lazy()).collect()
    return {"speaker_metrics": speakers, "transcriptions": transcriptions}


@settings(max_examples=120, deadline=None)
@given(st.lists(an_outcome(), min_size=1, max_size=12, unique_by=lambda o: o.transcription_id), st.integers(1, 5))
def test_a_batch_agrees_with_the_previous_plans(outcomes: list[Outcome], chunk: int) -> None:
    expected = previous_tables(outcomes)
    got = build_tables(decode_outcomes(outcomes), chunk=chunk)
    for name, frame in expected.items():
        # the previous talk_share divided by a broadcast sum, one unit in the last place off at times
        assert_frame_equal(
            got[name].drop("talk_share", strict=False),
            frame.sort(*SORT_KEYS[name]).drop("talk_share", strict=False),
            check_exact=True,
        )
    speakers = got["speaker_metrics"]
    totals: dict[str, int] = {}
    for row in speakers.iter_rows(named=True):
        totals[row["transcription_id"]] = totals.get(row["transcription_id"], 0) + row["talk_time_ms"]
    exact = [  # Python divides two ints correctly rounded
        row["talk_time_ms"] / totals[row["transcription_id"]] if totals[row["transcription_id"]] else None
        for row in speakers.iter_rows(named=True)
    ]
    assert speakers["talk_share"].to_list() == exact


def test_reach_does_not_cross_transcriptions() -> None:
    """The first transcription's long item would cover the second's if its reach leaked."""
    first, second = sorted(str(uuid.uuid4()) for _ in range(2))
    outcomes = [
        Outcome(first, "succeeded", FETCHED_AT, items=[{"speaker": "doctor", "start_time_ms": 0, "end_time_ms": 900}]),
        Outcome(
            second,
            "succeeded",
            FETCHED_AT,
            items=[
                {"speaker": "patient", "start_time_ms": 10, "end_time_ms": 20},
                {"speaker": "doctor", "start_time_ms": 30, "end_time_ms": 40},
            ],
        ),
    ]
    got = build_tables(decode_outcomes(outcomes))
    metrics = got["speaker_metrics"].filter(pl.col("transcription_id") == second)
    assert metrics["talk_time_ms"].to_list() == [10, 10]
    assert metrics["interruption_count"].to_list() == [0, 0]
    assert metrics["overlap_ms"].to_list() == [0, 0]
    row = got["transcriptions"].filter(pl.col("transcription_id") == second).row(0, named=True)
    assert (row["total_talk_ms"], row["overlap_ms"], row["speaker_switches"]) == (20, 0, 1)
    assert metrics["mean_response_gap_ms"].to_list() == [10.0, None]  # doctor, patient: the patient spoke first
