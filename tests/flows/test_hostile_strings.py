"""Hostile strings from the API (issue 19): codes and messages are bounded and made printable before they
are stored, and escaped wherever they are shown: console, logs, artifacts, `status`, the report.

The end-to-end tests run `talktime run` against the emulator serving hostile codes (a failed payload's
code, and a 4xx body's code) and read back what Prefect's server recorded.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from flows.emulator.app import DEFAULT_API_KEY, EmulatorConfig
from flows.emulator.server import EmulatorServer
from flows.untrusted import CODE_MAX_CHARS, MESSAGE_MAX_CHARS, api_code, api_message, markdown_text, printable

ESC = "\x1b[2J\x1b[31mred\x1b[0m"
FORGED = "x\n12:00:00.000 | INFO    | Flow run 'calm-cat' - Finished in state Completed()"
HUGE = "A" * 5_000_000
IMAGE = "![x](http://evil.example/track.png)"
IMG = '<img src="http://evil.example/x.png">'
BIDI = "code\u202eevil"
HOSTILE = {"esc": ESC, "forged-line": FORGED, "5-mb": HUGE, "md-image": IMAGE, "html-img": IMG, "bidi": BIDI}
STORED_CODE = re.compile(r"[A-Za-z0-9_.:~-]{1,64}")
CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


# -- the rules ------------------------------------------------------------------------------------


ODD_CODES = {**HOSTILE, "empty": "", "tilde": "~", "65-chars": "a" * 65, "space": "ok code"}


@pytest.mark.parametrize("code", ODD_CODES.values(), ids=ODD_CODES.keys())
def test_a_hostile_code_becomes_a_short_token_marked_as_changed(code: str) -> None:
    stored = api_code(code)
    assert STORED_CODE.fullmatch(stored) and len(stored) <= CODE_MAX_CHARS
    assert stored.count("~") == 1 and re.fullmatch(r"[0-9a-f]{8}", stored.rsplit("~", 1)[1])
    assert api_code(code) == stored  # deterministic


@pytest.mark.parametrize("code", ["422", "not_found", "http_418", "a.b:c-d_e", "x" * 64], ids=str)
def test_a_clean_code_is_kept_as_it_is(code: str) -> None:
    assert api_code(code) == code


def test_two_hostile_codes_that_clean_alike_stay_apart() -> None:
    assert api_code("a\nb") != api_code("a\rb")
    assert api_code("a\nb").startswith("a_b~")


def test_a_stored_message_is_bounded_and_has_no_control_characters() -> None:
    assert api_message("too short\r\n\x1b[31m!") == "too short [31m!"
    long = api_message(HUGE)
    assert len(long) == MESSAGE_MAX_CHARS and long.endswith("…")
    assert not CONTROL.search(api_message(FORGED + BIDI))


def test_printable_escapes_what_would_move_the_cursor_or_start_a_line() -> None:
    assert printable(ESC) == "\\x1b[2J\\x1b[31mred\\x1b[0m"
    assert "\n" not in printable(FORGED) and printable(BIDI) == "code\\u202eevil"
    assert printable("a" * 10, 5) == "aaaa…"


@pytest.mark.parametrize("text", [IMAGE, IMG, "`code`", "a|b", "[link](http://evil.example/)"])
def test_markdown_text_leaves_no_image_link_html_code_or_cell(text: str) -> None:
    shown = markdown_text(text)
    assert not re.search(r"(?<!\\)[`|<>\[\]!]", shown) and "://" not in shown  # each one escaped


# -- end to end -----------------------------------------------------------------------------------

FAILED_IDS = [f"5b0c0a44-8a38-4a0e-9d52-{n:012x}" for n in range(1, 7)]
ERROR_IDS = [f"6b0c0a44-8a38-4a0e-9d52-{n:012x}" for n in range(1, 7)]


def hostile_config() -> EmulatorConfig:
    """Failed results whose payload code (and message) is hostile; 422 answers whose body's code is."""
    responses = {
        tid: {"id": tid.upper(), "status": "failed", "payload": {"code": code, "message": f"{code} {FORGED}"}}
        for tid, code in zip(FAILED_IDS, HOSTILE.values(), strict=True)
    }
    codes = zip(ERROR_IDS, HOSTILE.values(), strict=True)
    answers = {tid: (422, {"code": code, "message": code}) for tid, code in codes}
    return EmulatorConfig(responses=responses, answers=answers)


def prefect_records() -> tuple[list[str], list[Any]]:
    """The latest flow run's log messages and artifacts, read back from the test's Prefect server."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, LogFilter, LogFilterFlowRunId
    from prefect.client.schemas.sorting import FlowRunSort
    from prefect.logging.handlers import APILogHandler

    APILogHandler().flush()
    with get_client(sync_client=True) as client:
        (flow_run,) = client.read_flow_runs(sort=FlowRunSort.START_TIME_DESC, limit=1)
        logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run.id])))
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run.id]))
        )
    return [str(flow_run.state.message), *(log.message for log in logs)], list(artifacts)


def assert_shown_safely(text: str, what: str) -> None:
    assert not CONTROL.search(text), f"{what}: a control character"
    assert "12:00:00.000 | INFO" not in text.replace("\\n12:00:00.000 | INFO", ""), f"{what}: a forged line"
    assert "A" * 2000 not in text, f"{what}: the 5 MB code"
    for shown in ("![", "<img", "http://evil"):
        assert shown not in text, f"{what}: {shown}"


@pytest.mark.usefixtures("prefect_server", "collect_garbage")
@pytest.mark.filterwarnings("ignore:unclosed <socket.socket:ResourceWarning")
@pytest.mark.filterwarnings("ignore:Exception ignored in. <socket.socket:pytest.PytestUnraisableExceptionWarning")
def test_hostile_codes_through_a_run_are_stored_bounded_and_shown_escaped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from flows.cli import main
    from flows.storage.reader import read_table
    from tests.flows.test_report import EXTERNAL

    ids = tmp_path / "ids.txt"
    ids.write_text("\n".join(FAILED_IDS + ERROR_IDS) + "\n")
    out = str(tmp_path / "out")
    with EmulatorServer(hostile_config()) as server:
        code = main(["run", "--api-url", server.api_url, "--ids", str(ids), "--out", out, "--api-key", DEFAULT_API_KEY,
                     "--batch-size", "4", "--max-error-share", "1"])  # fmt: skip
    run_output = capsys.readouterr()
    assert code == 0, run_output.err[-3000:]

    table = read_table(out, "transcriptions").sort("transcription_id")
    assert table["status"].to_list() == ["failed"] * 6 + ["error"] * 6
    for stored in table["error_code"]:
        assert STORED_CODE.fullmatch(stored) and "~" in stored
    assert table["error_code"].n_unique() == 6  # the same six codes, whichever way they came
    messages = table.filter(pl.col("status") == "failed")["error_message"]
    assert messages.str.len_chars().max() == MESSAGE_MAX_CHARS and not messages.str.contains(CONTROL.pattern).any()

    recorded, artifacts = prefect_records()
    assert any("error codes: " in m for m in recorded)  # the codes are shown, escaped
    assert_shown_safely(run_output.out + run_output.err, "the run's console")
    assert_shown_safely("\n".join(recorded), "Prefect's log and state")
    summary = next(a for a in artifacts if a.key == "talktime-run-summary")
    rows = next(a for a in artifacts if a.key == "talktime-run-table")
    for artifact in (summary, rows):
        text = artifact.data if isinstance(artifact.data, str) else json.dumps(artifact.data)
        assert_shown_safely(text + str(artifact.description), f"artifact {artifact.key}")
        assert len(text) < 20_000
    assert "error codes: " in summary.data and "\\~" in summary.data

    assert main(["status", "--out", out]) == 0
    status = capsys.readouterr().out
    assert status.startswith("talktime status: ") and "failed 6" in status
    assert_shown_safely(status, "talktime status")

    assert main(["report", "--out", out, "--html", str(tmp_path / "report.html")]) == 0
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert 'id="outcomes"' in page and "failed · " in page
    assert_shown_safely(page, "the report")
    assert not EXTERNAL.search(page)


def test_a_report_over_codes_stored_before_the_rule_finishes_without_control_characters(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An output written by an older talktime holds its codes raw: the report still draws them, escaped."""
    import flows.outcomes
    from flows.cli import main
    from tests.crash_driver import ingest_without_prefect
    from tests.flows.test_report import EXTERNAL

    records = [
        {"id": tid.upper(), "status": "failed", "payload": {"code": code, "message": "m"}}
        for tid, code in zip(FAILED_IDS, [ESC, FORGED, IMAGE, IMG, BIDI, "B" * 200_000], strict=True)
    ]
    (tmp_path / "in.ndjson").write_text("\n".join(json.dumps(r) for r in records) + "\n")
    with monkeypatch.context() as old:
        old.setattr(flows.outcomes, "api_code", lambda code: code, raising=False)  # as written before the rule
        ingest_without_prefect(str(tmp_path / "out"), 10, [str(tmp_path / "in.ndjson")])
    stored = pl.read_parquet(f"{tmp_path}/out/transcriptions/**/*.parquet")["error_code"]
    assert ESC in stored.to_list()  # the raw code really is stored
    assert main(["report", "--out", str(tmp_path / "out"), "--html", str(tmp_path / "r.html")]) == 0
    page = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert_shown_safely(page.replace("B" * 2000, ""), "the report")
    assert "B" * 2000 not in page and not EXTERNAL.search(page)


def test_ingest_names_an_unreadable_record_s_file_printably(tmp_path: Path) -> None:
    from tests.crash_driver import ingest_without_prefect

    folder = tmp_path / "in"
    folder.mkdir()
    hostile = folder / "a\x1b[31m\nWARNING forged.ndjson"
    hostile.write_text("not json\n")
    summary = ingest_without_prefect(str(tmp_path / "out"), 10, [str(folder)])
    assert len(summary.skipped) == 1
    (skipped,) = summary.skipped
    assert not CONTROL.search(skipped) and "\n" not in skipped
    assert skipped.startswith(f"{folder}/a\\x1b[31m\\nWARNING forged.ndjson:1: ")
