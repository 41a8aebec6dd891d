"""`talktime run`, `ingest` and `demo` end to end, on Prefect's real local server."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from flows.cli import main
from flows.emulator.app import DEFAULT_API_KEY, EmulatorConfig, Faults
from flows.emulator.server import EmulatorServer, load_responses
from tests.conftest import FLOW_TEST_MARKS, PRIMOCK, SAMPLES
from transforms.schemas import TABLES

pytestmark = FLOW_TEST_MARKS


def read(out: Path, table: str) -> pl.DataFrame:
    return pl.read_parquet(f"{out}/{table}/**/*.parquet")


def test_run_writes_four_datasets_with_one_row_per_requested_id(tmp_path: Path) -> None:
    responses = load_responses([PRIMOCK])
    ids = [*list(responses)[:20], "00000000-0000-4000-8000-000000000404", "not-a-uuid", next(iter(responses)).upper()]
    (tmp_path / "ids.txt").write_text("\n".join(ids) + "\n")
    faults = Faults(rate_limited=0.1, server_error=0.1, not_json=0.05, retry_after="0")
    with EmulatorServer(EmulatorConfig(responses=responses, faults=faults, seed=3)) as server:
        code = main(
            ["run", "--api-url", server.api_url, "--ids", str(tmp_path / "ids.txt"), "--out", str(tmp_path / "out"),
             "--api-key", DEFAULT_API_KEY, "--batch-size", "7", "--concurrency", "4"]
        )  # fmt: skip
    assert code == 0
    out = tmp_path / "out"
    transcriptions = read(out, "transcriptions")
    assert transcriptions.height == 22 and transcriptions["transcription_id"].n_unique() == 22
    assert transcriptions.group_by("status").len().sort("status").rows() == [
        ("error", 1),
        ("not_found", 1),
        ("succeeded", 20),
    ]
    for table, schema in TABLES.items():
        assert read(out, table).select(schema.names()).schema == schema
    expected_items = sum(len(responses[i]["payload"]["transcript"]) for i in ids[:20])
    items, rejected = read(out, "transcript_items"), read(out, "rejected_items")
    assert items.height + rejected.height == expected_items
    metadata = __import__("pyarrow.parquet").parquet.read_schema(next((out / "transcriptions").rglob("*.parquet")))
    assert metadata.metadata[b"talktime.table"] == b"transcriptions"


def test_run_without_a_key_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "ids.txt").write_text("00000000-0000-4000-8000-000000000000\n")
    import os

    os.environ.pop("TALKTIME_API_KEY", None)
    code = main(["run", "--api-url", "http://127.0.0.1:9", "--ids", str(tmp_path / "ids.txt"), "--out", str(tmp_path)])
    assert code == 2
    assert "TALKTIME_API_KEY" in capsys.readouterr().err


def test_wrong_key_fails_without_printing_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "ids.txt").write_text("00000000-0000-4000-8000-000000000000\n")
    with EmulatorServer(EmulatorConfig()) as server:
        code = main(
            ["run", "--api-url", server.api_url, "--ids", str(tmp_path / "ids.txt"), "--out", str(tmp_path / "o"),
             "--api-key", "sk-wrong-secret-123"]
        )  # fmt: skip
    captured = capsys.readouterr()
    assert code == 2 and "401" in captured.err
    assert "sk-wrong-secret-123" not in captured.out + captured.err


def test_ingest_reads_responses_and_webhook_events(tmp_path: Path) -> None:
    first, second = sorted(PRIMOCK.glob("*.json"))[:2]
    event = {"id": "e1", "type": "transcribe_async.succeeded", "data": json.loads(second.read_text())}
    (tmp_path / "events.ndjson").write_text(json.dumps(event) + "\nnot json\n")
    code = main(["ingest", "--input", str(first), str(tmp_path / "events.ndjson"), "--out", str(tmp_path / "out")])
    assert code == 0
    transcriptions = read(tmp_path / "out", "transcriptions")
    assert sorted(transcriptions["client_request_id"].to_list()) == ["day1_consultation01", "day1_consultation02"]


def test_ingest_of_the_bundled_samples_matches_the_demo(tmp_path: Path) -> None:
    assert main(["ingest", "--input", str(SAMPLES / "responses"), "--out", str(tmp_path / "ingest")]) == 0
    assert main(["demo", "--out", str(tmp_path / "demo")]) == 0
    demo = read(tmp_path / "demo", "speaker_metrics").sort("transcription_id", "speaker")
    ingested = read(tmp_path / "ingest", "speaker_metrics").sort("transcription_id", "speaker")
    assert demo.equals(ingested)
    statuses = dict(read(tmp_path / "demo", "transcriptions").group_by("status").len().rows())
    assert statuses["succeeded"] == 58 and statuses["failed"] == 2 and statuses["ongoing"] == 1
    primock_ids = {json.loads(p.read_text())["id"] for p in PRIMOCK.glob("*.json")}
    succeeded = read(tmp_path / "demo", "transcriptions").filter(pl.col("status") == "succeeded")
    assert primock_ids <= set(succeeded["transcription_id"])


def test_no_credential_or_transcript_text_in_any_output(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    caplog.set_level(logging.DEBUG)
    responses = load_responses([PRIMOCK])
    ids = list(responses)[:6]
    texts = [item["text"] for i in ids for item in responses[i]["payload"]["transcript"] if len(item["text"]) > 25]
    (tmp_path / "ids.txt").write_text("\n".join([*ids, "not-a-uuid"]) + "\n")
    secret_key = "sk-live-do-not-log-4242"
    faults = Faults(server_error=0.2, truncated=0.1, not_json=0.1, retry_after="0")
    with EmulatorServer(EmulatorConfig(responses=responses, api_key=secret_key, faults=faults, seed=9)) as server:
        assert main(["run", "--api-url", server.api_url, "--ids", str(tmp_path / "ids.txt"),
                     "--out", str(tmp_path / "out"), "--api-key", secret_key]) == 0  # fmt: skip
    captured = capsys.readouterr()
    everything = captured.out + captured.err + caplog.text
    assert "succeeded" in everything  # the summary was printed: the capture works
    assert secret_key not in everything
    assert not [t for t in texts if t in everything]


@pytest.mark.parametrize(
    "argv",
    [["ingest", "--input", "data/samples/responses", "--out", "x", "--batch-size", "0"],
     ["run", "--api-url", "http://127.0.0.1:9", "--ids", "x", "--out", "x", "--concurrency", "0"]],
    ids=["batch-size-0", "concurrency-0"],
)  # fmt: skip
def test_invalid_settings_are_one_line_and_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("talktime: error: invalid settings:") and err.count("\n") == 1
