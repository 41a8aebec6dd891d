"""The polars fast path and the Python path give the same tables; odd batches fall back."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from flows.decode import decode_fast, decode_records, decode_slowly
from flows.emulator.dialects import render_dialect_b
from flows.inputs import RawRecord
from flows.transform import build_tables

NOW = datetime(2026, 11, 24, tzinfo=UTC)
IDS = [f"5b0c0a44-8a38-4a0e-9d52-6f1b0c6f7e{n:02d}" for n in range(6)]

speakers = st.sampled_from(["doctor", "patient", "unspecified", "Doctor", "nurse", None])
times = st.one_of(st.none(), st.integers(-5, 20_000))
items = st.one_of(
    st.fixed_dictionaries(
        {"speaker": speakers, "start_time_ms": times, "end_time_ms": times},
        optional={"text": st.one_of(st.none(), st.text(max_size=12)), "extra": st.integers()},
    ),
    st.none(),
)
responses = st.fixed_dictionaries(
    {
        "id": st.sampled_from(IDS + [i.upper() for i in IDS]),
        "status": st.sampled_from(["succeeded", "ongoing", "SUCCEEDED"]),
        "payload": st.fixed_dictionaries({"transcript": st.lists(items, max_size=8)}),
    },
    optional={"client_request_id": st.text(max_size=5)},
)


def records(bodies: list[Any]) -> list[RawRecord]:
    return [RawRecord(f"in.ndjson:{n}", json.dumps(b).encode()) for n, b in enumerate(bodies, start=1)]


def assert_same_tables(bodies: list[Any]) -> None:
    fast = decode_fast(records(bodies), NOW)
    assert fast is not None
    slow, skipped = decode_slowly(records(bodies), NOW)
    assert skipped == []
    fast_tables, slow_tables = build_tables(fast), build_tables(slow)
    for name, frame in slow_tables.items():
        assert_frame_equal(fast_tables[name], frame, check_row_order=True)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(responses, min_size=1, max_size=8), st.booleans(), st.booleans())
def test_fast_and_python_paths_give_identical_tables(bodies: list[Any], dialect_b: bool, events: bool) -> None:
    bodies = [render_dialect_b(b) if dialect_b else b for b in bodies]
    bodies = [{"type": "transcribe_async.succeeded", "data": b} if events else b for b in bodies]
    assert_same_tables(bodies)


@pytest.mark.parametrize(
    "item",
    [{"speaker": 5}, {"speaker": "doctor", "text": 7}, {"speaker": "doctor", "text": ["a"]},
     {"start_time_ms": "1"}, {"start_time_ms": 1.5}, {"start_time_ms": True}, {"start_time_ms": 2**70}, "text"],
    ids=["int-speaker", "int-text", "array-text", "string-time", "float-time", "bool-time", "huge-time",
         "string-item"],
)  # fmt: skip
def test_a_wrongly_typed_item_sends_the_batch_to_the_python_path(item: Any) -> None:
    body = {"id": IDS[0], "status": "succeeded", "payload": {"transcript": [item]}}
    assert decode_fast(records([body]), NOW) is None
    decoded, skipped = decode_records(records([body]), NOW)
    assert skipped == [] and decoded.raw_items.height == 1


def test_unreadable_records_are_named_and_the_rest_kept() -> None:
    good = {"id": IDS[0], "status": "succeeded", "payload": {"transcript": []}}
    batch = [*records([good]), RawRecord("in.ndjson:2", b"{not json"), RawRecord("in.ndjson:3", b'{"id": 1}')]
    decoded, skipped = decode_records(batch, NOW)
    assert decoded.responses["transcription_id"].to_list() == [IDS[0]]
    assert [s.split(":")[1] for s in skipped] == ["2", "3"]
    assert all("{" not in s for s in skipped)  # never the content


def test_metrics_computed_in_chunks_equal_one_pass() -> None:
    from flows.emulator.synthetic import synthetic_responses

    bodies = list(synthetic_responses(7, seed=3).values())
    decoded, _ = decode_records(records(bodies), NOW)
    whole, chunked = build_tables(decoded, chunk=100), build_tables(decoded, chunk=2)
    for name, frame in whole.items():
        assert_frame_equal(chunked[name], frame)


def test_each_batch_is_read_with_categories_of_its_own() -> None:
    """The global categories keep every string they see for the life of the process: reading the items'
    text through them kept every transcript of a run in memory (RSS grew ~25 MiB per batch; see
    docs/benchmarks.md). Every string field of the reader's schema must use the batch's own categories."""
    from flows.decode import reader_schema

    def categories(dtype: pl.DataType) -> list[pl.Categories]:
        if isinstance(dtype, pl.Categorical):
            return [dtype.categories]
        if isinstance(dtype, pl.Struct):
            return [c for f in dtype.fields for c in categories(f.dtype)]
        if isinstance(dtype, pl.List):
            return categories(dtype.inner)
        return []

    first, second = ([c for dtype in reader_schema().values() for c in categories(dtype)] for _ in range(2))
    assert len(first) == 1 + 3 + 4 + 3 + 4  # type, the envelope's 3 and the items' 4, twice (events' data)
    assert not any(c.is_global() for c in first + second)
    assert {c.name() for c in first}.isdisjoint({c.name() for c in second})
