"""Legal but hostile JSON: every record ends as a row, a rejected item or a named skip; no crash, no leak."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest

from flows.decode import decode_fast, decode_records
from flows.inputs import RawRecord
from flows.transform import build_tables

NOW = datetime(2026, 11, 24, tzinfo=UTC)
ID = "5b0c0a44-8a38-4a0e-9d52-6f1b0c6f7e00"
SECRET_TEXT = "the patient said something private"


def record(body: str) -> RawRecord:
    return RawRecord("in.ndjson:1", body.encode())


def succeeded(*items: str, crid: str = '"c"') -> str:
    transcript = ",".join(items)
    return f'{{"id":"{ID}","client_request_id":{crid},"status":"succeeded","payload":{{"transcript":[{transcript}]}}}}'


def tables_of(body: str) -> dict[str, pl.DataFrame]:
    decoded, skipped = decode_records([record(body)], NOW)
    assert skipped == []
    return build_tables(decoded)


LONE = "\\ud83d"  # the JSON escape of half an emoji, as a producer that cut it emits


@pytest.mark.parametrize(
    ("body", "table", "column", "expected"),
    [
        (succeeded(f'{{"speaker":"doctor","start_time_ms":0,"end_time_ms":5,"text":"{SECRET_TEXT} {LONE}"}}'),
         "transcript_items", "text", f"{SECRET_TEXT} \ufffd"),
        (succeeded(f'{{"speaker":"doctor{LONE}","start_time_ms":0,"end_time_ms":5,"text":"x"}}'),
         "rejected_items", "reason", "unknown_speaker"),
        (succeeded(crid=f'"req-{LONE}"'), "transcriptions", "client_request_id", "req-\ufffd"),
        (f'{{"id":"{ID}","status":"failed","payload":{{"code":1,"message":"{SECRET_TEXT}{LONE}"}}}}',
         "transcriptions", "error_message", f"{SECRET_TEXT}\ufffd"),
        (succeeded(f'{{"speaker":"doctor","start_time_ms":0,"end_time_ms":5,"text":"a \\udc00{LONE}\\ude00 b"}}'),
         "transcript_items", "text", "a \ufffd\U0001f600 b"),
    ],
    ids=["text", "speaker", "client-request-id", "failed-message", "low-then-pair"],
)  # fmt: skip
def test_a_lone_surrogate_is_repaired_to_the_replacement_character(
    body: str, table: str, column: str, expected: str
) -> None:
    assert tables_of(body)[table][column].to_list() == [expected]


def test_an_escaped_backslash_before_u_is_text_not_a_surrogate() -> None:
    body = succeeded('{"speaker":"doctor","start_time_ms":0,"end_time_ms":5,"text":"C:\\\\ud83d"}')
    assert tables_of(body)["transcript_items"]["text"].to_list() == ["C:\\ud83d"]


def test_the_fast_path_takes_a_batch_with_a_lone_surrogate() -> None:
    body = succeeded(f'{{"speaker":"doctor","start_time_ms":0,"end_time_ms":5,"text":"x{LONE}"}}')
    fast = decode_fast([record(body)], NOW)
    assert fast is not None and fast.raw_items["text"].to_list() == ["x\ufffd"]


DEEP = "[" * 5000 + "]" * 5000


def test_a_record_nested_too_deep_is_skipped_and_named_and_the_batch_goes_on() -> None:
    good = succeeded('{"speaker":"doctor","start_time_ms":0,"end_time_ms":5,"text":"x"}')
    deep = f'{{"id":"{ID.replace("00", "01")}","status":"succeeded","payload":{{"transcript":[],"x":{DEEP}}}}}'
    decoded, skipped = decode_records([record(good), RawRecord("in.ndjson:2", deep.encode())], NOW)
    assert decoded.responses["transcription_id"].to_list() == [ID]
    assert len(skipped) == 1 and skipped[0].startswith("in.ndjson:2: ") and "deep" in skipped[0]


@pytest.mark.parametrize(
    ("item", "reason"),
    [
        ('{"speaker":"doctor","start_time_ms":' + "9" * 5000 + ',"end_time_ms":5}', "start_time_out_of_range"),
        ('{"speaker":"doctor","start_time_ms":0,"end_time_ms":-' + "9" * 5000 + "}", "end_time_out_of_range"),
        ('{"speaker":"doctor","start_time_ms":0,"end_time_ms":3600001}', "end_time_out_of_range"),
        ('{"speaker":"doctor","start_time_ms":3600001,"end_time_ms":3600002}', "start_time_out_of_range"),
        ('{"speaker":"doctor","start_time_ms":0,"end_time_ms":9000000000000000000}', "end_time_out_of_range"),
    ],
    ids=["huge-start", "huge-negative-end", "end-past-an-hour", "start-past-an-hour", "near-int64-max"],
)
def test_a_time_outside_the_contract_is_rejected_with_a_reason(item: str, reason: str) -> None:
    tables = tables_of(succeeded(item, '{"speaker":"patient","start_time_ms":0,"end_time_ms":10}'))
    assert tables["rejected_items"]["reason"].to_list() == [reason]
    assert isinstance(json.loads(tables["rejected_items"]["raw_item"][0], parse_int=str), dict)  # kept, as JSON
    assert tables["transcriptions"]["total_talk_ms"].to_list() == [10]


def test_an_item_ending_at_the_hour_is_valid() -> None:
    tables = tables_of(succeeded('{"speaker":"doctor","start_time_ms":3599000,"end_time_ms":3600000}'))
    assert tables["transcript_items"]["end_time_ms"].to_list() == [3_600_000]


def test_summed_talk_time_cannot_overflow() -> None:
    items = [f'{{"speaker":"doctor","start_time_ms":{s},"end_time_ms":3600000}}' for s in (0, 1, 2)]
    tables = tables_of(succeeded(*items, '{"speaker":"patient","start_time_ms":0,"end_time_ms":3600000}'))
    speakers = tables["speaker_metrics"]
    assert speakers["talk_time_ms"].to_list() == [3_600_000, 3_600_000]
    assert speakers["talk_share"].to_list() == [0.5, 0.5]


@pytest.mark.parametrize(
    ("body", "table", "column"),
    [
        (f'{{"id":"{ID}","status":"failed","payload":{{"code":NaN,"message":"m","at":-Infinity}}}}',
         "transcriptions", "error_payload"),
        (succeeded('{"speaker":"doctor","start_time_ms":NaN,"end_time_ms":Infinity}'), "rejected_items", "raw_item"),
    ],
    ids=["failed-payload", "rejected-item"],
)  # fmt: skip
def test_nan_and_infinity_are_stored_as_strict_json(body: str, table: str, column: str) -> None:
    text = tables_of(body)[table][column][0]

    def refuse(constant: str) -> None:
        raise AssertionError(f"non-strict JSON constant {constant}")

    assert None in json.loads(text, parse_constant=refuse).values()


def test_a_failed_payload_with_a_huge_integer_keeps_it_as_digits() -> None:
    body = f'{{"id":"{ID}","status":"failed","payload":{{"code":{"7" * 5000},"message":"m"}}}}'
    row = tables_of(body)["transcriptions"].row(0, named=True)
    assert json.loads(row["error_payload"].replace("7" * 5000, "7"))["code"] == 7
    assert row["error_code"] is None and row["error_message"] == "m"


def test_one_ingest_file_of_poison_records_does_not_stop_the_others(tmp_path: Path) -> None:
    from tests.crash_driver import ingest_without_prefect  # the flow's body, no Prefect server needed

    ids = [ID.replace("00", f"{n:02d}") for n in range(10, 16)]
    good = [succeeded('{"speaker":"doctor","start_time_ms":0,"end_time_ms":5,"text":"x"}').replace(ID, i) for i in ids]
    poison = [
        f'{{"id":"{ID}","status":"succeeded","payload":{{"transcript":[],"x":{DEEP}}}}}',
        succeeded('{"speaker":"doctor","start_time_ms":' + "1" * 5000 + ',"end_time_ms":5}').replace(ID, ids[0]),
        succeeded(f'{{"speaker":"doctor","start_time_ms":0,"end_time_ms":5,"text":"{SECRET_TEXT}{LONE}"}}'),
    ]
    (tmp_path / "a.ndjson").write_text("\n".join([poison[0], *good[:3], poison[2], poison[1], *good[3:]]) + "\n")
    summary = ingest_without_prefect(str(tmp_path / "out"), 3, [str(tmp_path / "a.ndjson")])
    transcriptions = pl.read_parquet(f"{tmp_path}/out/transcriptions/**/*.parquet")
    assert sorted(transcriptions["transcription_id"]) == sorted([ID, *ids])
    assert len(summary.skipped) == 1 and summary.skipped[0].startswith(f"{tmp_path / 'a.ndjson'}:1: ")


@pytest.mark.usefixtures("prefect_server")
@pytest.mark.filterwarnings("ignore:unclosed <socket.socket:ResourceWarning")
@pytest.mark.filterwarnings("ignore:Exception ignored in. <socket.socket:pytest.PytestUnraisableExceptionWarning")
def test_an_unexpected_error_in_a_batch_never_carries_its_message_into_logs_or_states(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    import asyncio
    import logging

    from prefect.client.orchestration import get_client

    import flows.batch
    from flows.cli import main

    def leak(*_: object, **__: object) -> None:
        raise ValueError(f"could not read {SECRET_TEXT!r}")  # a library quoting the value it choked on

    monkeypatch.setattr(flows.batch, "build_tables", leak)
    caplog.set_level(logging.DEBUG)
    (tmp_path / "a.ndjson").write_text(succeeded('{"speaker":"doctor","start_time_ms":0,"end_time_ms":5}') + "\n")
    assert main(["ingest", "--input", str(tmp_path / "a.ndjson"), "--out", str(tmp_path / "out")]) == 3

    async def recorded_by_prefect() -> list[str]:
        """Every place the server keeps an exception: log lines (tracebacks included) and run states."""
        async with get_client() as client:
            runs = [*await client.read_task_runs(), *await client.read_flow_runs()]
            logs = await client.read_logs()
            return [str(r.state) for r in runs] + [log.message for log in logs]

    captured = capsys.readouterr()
    recorded = asyncio.run(recorded_by_prefect())
    assert any("message withheld" in line for line in recorded)  # the server did record the failure
    everything = "\n".join([captured.out, captured.err, caplog.text, *recorded])
    assert "unexpected error: ValueError at " in captured.err  # the failure is reported, by its type
    assert "message withheld" in captured.err
    assert SECRET_TEXT not in everything


@pytest.mark.parametrize("depth", [500, 990, 3000])
def test_a_deep_value_inside_a_rejected_item_never_crashes_the_batch(depth: int) -> None:
    deep = "[" * depth + "]" * depth
    bad = f'{{"speaker":"nurse","start_time_ms":0,"end_time_ms":5,"x":{deep}}}'
    body = succeeded(bad, '{"speaker":"doctor","start_time_ms":0,"end_time_ms":5}')
    decoded, skipped = decode_records([record(body), record(succeeded().replace(ID, ID[:-2] + "99"))], NOW)
    tables = build_tables(decoded)
    if skipped:  # too deep for Python's parser here: the record is named, the other one kept
        assert skipped == ["in.ndjson:1: JSON nested too deep to read"]
        assert tables["transcriptions"]["transcription_id"].to_list() == [ID[:-2] + "99"]
    else:
        assert tables["rejected_items"]["reason"].to_list() == ["unknown_speaker"]
        assert tables["transcript_items"].height == 1


@pytest.mark.parametrize("error", [ValueError, KeyError, UnicodeError], ids=["value", "key", "unicode"])
def test_a_withheld_error_carries_no_chained_or_context_exception(error: type[Exception]) -> None:
    import traceback

    from flows.errors import WithheldError, withholding

    @withholding
    def leak() -> None:
        try:
            raise error(SECRET_TEXT)
        except Exception:
            raise error(f"while handling: {SECRET_TEXT}")  # noqa: B904  (the implicit __context__ is the point)

    with pytest.raises(WithheldError) as raised:
        leak()
    assert raised.value.__cause__ is None and raised.value.__context__ is None
    assert SECRET_TEXT not in "".join(traceback.format_exception(raised.value))


def test_a_pipeline_error_leaves_without_the_library_exception_it_was_raised_from() -> None:
    import traceback

    from flows.errors import StorageError, withholding

    @withholding
    def fail() -> None:
        try:
            raise OSError(SECRET_TEXT)
        except OSError as exc:
            raise StorageError("cannot write the output") from exc

    with pytest.raises(StorageError) as raised:
        fail()
    assert raised.value.__cause__ is None and raised.value.__context__ is None
    assert SECRET_TEXT not in "".join(traceback.format_exception(raised.value))
