"""Ingest and run bounded by bytes, not by records or ids (issue 19): ingest's batches cut by bytes, a
record too large for the memory budget an `error` row (record_too_large) instead of decoded; a run's
batch stops starting requests once its responses fill its share of the budget and hands the ids left
to a later batch, a response too large for it an `error` row (response_too_large). Peak memory itself
is measured by the benchmark, never asserted here."""

from __future__ import annotations

import json
import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import polars as pl
import pytest

from flows import runs
from flows.batch import fetch_batch, read_batch
from flows.emulator.app import DEFAULT_API_KEY, EmulatorConfig
from flows.emulator.server import EmulatorServer
from flows.inputs import plan_slices, read_slice
from flows.secrets import API_KEY_ENV
from flows.settings import IngestSettings, RunSettings

IDS = [f"00000000-0000-4000-8000-{n:012d}" for n in range(6)]


def response(tid: str, words: int) -> dict[str, object]:
    text = " ".join(["word"] * words)
    items = [{"speaker": "doctor", "start_time_ms": 0, "end_time_ms": 1000, "text": text}]
    return {"id": tid, "status": "succeeded", "payload": {"transcript": items}}


def test_slices_are_cut_by_bytes_as_well_as_records_and_lose_nothing(tmp_path: Path) -> None:
    sizes = [10, 5000, 20, 30000, 15, 15, 40000, 5]
    lines = [json.dumps(response(f"00000000-0000-4000-8000-{n:012d}", words)) for n, words in enumerate(sizes)]
    (tmp_path / "a.ndjson").write_text("\n".join(lines[:5]) + "\n")
    (tmp_path / "b.ndjson").write_text("\n".join(lines[5:]) + "\n")
    cap = 60_000
    slices = list(plan_slices([tmp_path], batch_size=4, max_bytes=cap))
    records = [[r.data.decode() for r in read_slice(s)] for s in slices]
    assert [line for batch in records for line in batch] == lines  # every record once, in order
    for batch in records:
        assert len(batch) <= 4
        assert len(batch) == 1 or sum(len(line) + 1 for line in batch) <= cap  # only a lone record is larger
    assert [len(batch) for batch in records] == [3, 1, 2, 1, 1]
    assert [len(batch) for batch in plan_slices_by_records(tmp_path)] == [4, 4]


def plan_slices_by_records(folder: Path) -> list[list[str]]:
    return [[r.data.decode() for r in read_slice(s)] for s in plan_slices([folder], batch_size=4)]


def ingest(settings: IngestSettings) -> None:
    with ThreadPoolExecutor(1) as pool:
        runs.ingest(settings, lambda spec: pool.submit(read_batch, settings, spec), logging.getLogger())


def test_a_record_over_the_budget_becomes_an_error_row_and_the_rest_is_ingested(tmp_path: Path) -> None:
    big = response(IDS[1], 400_000)  # about 2 MiB: over the record limit of a 64 MiB budget
    event = {"id": "11111111-0000-4000-8000-000000000000", "created_at": "2026-12-04T10:00:00Z",
             "type": "transcribe_async.succeeded", "data": response(IDS[2], 400_000)}  # fmt: skip
    nameless = {"status": "succeeded", "payload": {"transcript": [], "pad": "x" * 2_000_000}}
    records = [response(IDS[0], 10), big, event, nameless, response(IDS[3], 10)]
    (tmp_path / "in.ndjson").write_text("\n".join(json.dumps(r) for r in records) + "\n")
    settings = IngestSettings(inputs=[str(tmp_path / "in.ndjson")], out=str(tmp_path / "out"), batch_size=10,
                              in_flight=1, memory_budget_mb=64)  # fmt: skip
    assert settings.batch_bytes < 2_000_000
    ingest(settings)
    rows = pl.read_parquet(tmp_path / "out" / "transcriptions" / "**" / "*.parquet").sort("transcription_id")
    got = dict(zip(rows["transcription_id"], zip(rows["status"], rows["error_code"], strict=True), strict=True))
    assert got == {
        IDS[0]: ("succeeded", None),
        IDS[1]: ("error", "record_too_large"),
        IDS[2]: ("error", "record_too_large"),  # the event's transcription, not the event's own id
        IDS[3]: ("succeeded", None),
    }
    message = rows.filter(pl.col("transcription_id") == IDS[1])["error_message"][0]
    assert "over ingest's record limit" in message and "--memory-budget-mb" in message


# talktime run -----------------------------------------------------------------------------------


def long_response(tid: str, items: int) -> dict[str, object]:
    """A succeeded response of `items` short items (about 95 bytes of JSON each)."""
    transcript = [
        {"speaker": "doctor" if n % 2 else "patient", "start_time_ms": n * 100, "end_time_ms": n * 100 + 90,
         "text": "some words of a long consultation"}
        for n in range(items)
    ]  # fmt: skip
    return {"id": tid.upper(), "status": "succeeded", "payload": {"transcript": transcript}}


def test_a_run_s_batches_stop_at_their_share_of_the_budget_and_hand_the_rest_to_later_batches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = [f"00000000-0000-4000-8000-{n:012d}" for n in range(13)]
    huge = ids[6]
    responses = {tid: long_response(tid, 12_000 if tid == huge else 3_000) for tid in ids}
    sizes = {tid: len(json.dumps(body)) for tid, body in responses.items()}
    (tmp_path / "ids.txt").write_text("\n".join(ids) + "\n")
    concurrency = 2
    settings = RunSettings(api_url="", ids_file=str(tmp_path / "ids.txt"), out=str(tmp_path / "out"),
                           memory_budget_mb=64, concurrency=concurrency, max_wait_s=0)  # fmt: skip
    limit = settings.batch_bytes  # 0.8 MiB: about 3 responses, and less than the huge one
    assert max(sizes[t] for t in ids if t != huge) * 2 < limit < sizes[huge]
    assert len(ids) <= settings.batch_size  # counted by ids, they would be one batch
    monkeypatch.setenv(API_KEY_ENV, DEFAULT_API_KEY)
    with EmulatorServer(EmulatorConfig(responses=responses)) as server:
        settings = settings.model_copy(update={"api_url": server.api_url})
        with ThreadPoolExecutor(settings.in_flight) as pool:
            summary = runs.poll(settings, lambda spec: pool.submit(fetch_batch, settings, spec), logging.getLogger())
        requests = {tid: server.app.requests[tid] for tid in ids}  # (the credentials check polls another id)
    assert requests == dict.fromkeys(ids, 1), "an id requested twice, or never"
    rows = pl.read_parquet(tmp_path / "out" / "transcriptions" / "**" / "*.parquet")
    assert sorted(rows["transcription_id"]) == ids  # one row per id
    assert summary.batches > 1
    largest = max(sizes[t] for t in ids if t != huge)
    for polled in summary.polled:  # what each batch kept: under its limit plus the requests it had under way
        kept = polled.filter(pl.col("status") == "succeeded")["transcription_id"]
        assert sum(sizes[t] for t in kept) < limit + concurrency * largest
    errors = rows.filter(pl.col("status") != "succeeded")
    assert errors.select("transcription_id", "status", "error_code").rows() == [(huge, "error", "response_too_large")]
    assert "--memory-budget-mb" in errors["error_message"][0]
