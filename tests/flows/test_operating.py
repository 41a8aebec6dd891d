"""Operating a run: failures that cannot be missed, mistakes caught before Prefect starts, what a run shows.

Flows run on Prefect's real local server (the session's test harness) against the emulator as a
real HTTP server; what Prefect recorded (task run names, logs, artifacts, states) is read back
from that server.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any
from uuid import UUID

import polars as pl
import pytest

from flows.cli import main
from flows.emulator.app import DEFAULT_API_KEY, EmulatorConfig, Faults
from flows.emulator.server import EmulatorServer, load_responses
from flows.settings import RunSettings
from flows.storage.reader import read_table
from tests.conftest import FLOW_TEST_MARKS, PRIMOCK

pytestmark = FLOW_TEST_MARKS

RESPONSES = load_responses([PRIMOCK])
IDS = list(RESPONSES)[:10]


def manifest(tmp_path: Path, ids: list[str] = IDS) -> str:
    path = tmp_path / "ids.txt"
    path.write_text("\n".join(ids) + "\n")
    return str(path)


def run_args(api_url: str, tmp_path: Path, *extra: str) -> list[str]:
    return ["run", "--api-url", api_url, "--ids", manifest(tmp_path), "--out", str(tmp_path / "out"),
            "--api-key", DEFAULT_API_KEY, "--batch-size", "4", *extra]  # fmt: skip


def statuses(out: Path) -> dict[str, int]:
    frame = read_table(str(out), "transcriptions")
    return dict(frame.group_by("status").len().iter_rows())


def flow_run_of(state: Any) -> UUID:
    flow_run_id = state.state_details.flow_run_id
    assert flow_run_id is not None
    return UUID(str(flow_run_id))


# -- failures you cannot miss -------------------------------------------------------------------


def test_a_run_whose_every_id_ends_in_error_fails_with_the_counts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = EmulatorConfig(responses=RESPONSES, faults=Faults(server_error=1.0))
    with EmulatorServer(config) as server:
        code = main([*run_args(server.api_url, tmp_path, "--max-attempts", "1"), "--json"])
    captured = capsys.readouterr()
    assert code == 1
    assert "the run failed: 10 of 10 ids ended in error (100%, more than 10%" in captured.err
    assert "retries_exhausted 10" in captured.err
    result = json.loads(captured.out)
    assert result["state"] == "FAILED" and result["statuses"] == {"error": 10}
    assert result["failure"].startswith("10 of 10 ids ended in error")


def test_the_error_threshold_counts_pending_errors_only() -> None:
    from flows.runs import failure
    from flows.storage.ledger import POLLED_SCHEMA
    from flows.summary import RunSummary

    def summary(rows: list[tuple[str, bool]]) -> RunSummary:
        result = RunSummary()
        polled = pl.DataFrame(
            {"transcription_id": [f"id{i}" for i in range(len(rows))], "status": [r[0] for r in rows],
             "final": [r[1] for r in rows], "written": [True] * len(rows)},
            schema=POLLED_SCHEMA,
        )  # fmt: skip
        result.add(polled, {}, pl.DataFrame(schema={"speaker": pl.String, "talk_time_ms": pl.Int64}))
        return result

    one_in_ten = summary([("error", False)] + [("succeeded", True)] * 9)
    assert failure(one_in_ten, 0.1) is None  # not more than 10%
    assert failure(one_in_ten, 0.05) == "1 of 10 ids ended in error (10%, more than 5%; they stay pending)"
    invalid_ids = summary([("error", True)] * 5 + [("succeeded", True)] * 5)  # not UUIDs: final rows
    assert failure(invalid_ids, 0.1) is None
    stopped = summary([("succeeded", True)])
    stopped.stopped_early = "the API failed every request for 300 s"
    assert failure(stopped, 1.0) == "stopped early: the API failed every request for 300 s"


def test_a_wrong_api_url_stops_at_the_first_batch_and_records_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    with EmulatorServer(EmulatorConfig(responses=RESPONSES)) as server:
        wrong = server.api_url.replace("/v1/copilot-api/server", "/v1/copilot-api")
        assert main(run_args(wrong, tmp_path)) == 2
        err = capsys.readouterr().err
        assert "every id of the first batch (4) answered 404, so nothing was recorded: check --api-url" in err
        assert not [record for record in caplog.records if record.exc_info]  # no traceback logged
        assert not list((tmp_path / "out").glob("transcriptions/**/*.parquet"))
        assert main(run_args(server.api_url, tmp_path)) == 0  # the right URL then fetches every id
    assert statuses(tmp_path / "out") == {"succeeded": 10}


def test_a_run_with_few_ids_to_poll_records_their_404s(tmp_path: Path) -> None:
    """A resumed run whose only id left is unknown is no sign of a wrong URL (fewer than 5 ids to poll)."""
    unknown = ["00000000-0000-4000-8000-000000000404", "00000000-0000-4000-8000-000000000405"]
    with EmulatorServer(EmulatorConfig(responses=RESPONSES)) as server:
        ids = manifest(tmp_path, unknown)
        argv = [
            "run",
            "--api-url",
            server.api_url,
            "--ids",
            ids,
            "--out",
            str(tmp_path / "out"),
            "--api-key",
            DEFAULT_API_KEY,
        ]
        assert main(argv) == 0
    assert statuses(tmp_path / "out") == {"not_found": 2}


def test_refetch_polls_ids_whose_recorded_outcome_is_final(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with EmulatorServer(EmulatorConfig(responses=RESPONSES)) as server:
        wrong = server.api_url.replace("/v1/copilot-api/server", "/v1/copilot-api")
        assert main(run_args(wrong, tmp_path, "--no-route-check")) == 0
        assert statuses(out) == {"not_found": 10}
        assert main(run_args(server.api_url, tmp_path)) == 0  # final: skipped
        assert statuses(out) == {"not_found": 10}
        assert main(run_args(server.api_url, tmp_path, "--refetch", "not_found,expired")) == 0
    assert statuses(out) == {"succeeded": 10}  # one row per id: the new outcome replaced the old
    assert read_table(str(out), "transcriptions").height == 10


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def last_flow_run_and_logs() -> tuple[Any, list[str]]:
    """The latest flow run the test server knows of, and every log line of it (its tasks' included)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.client.schemas.sorting import FlowRunSort
    from prefect.logging.handlers import APILogHandler

    APILogHandler().flush()
    with get_client(sync_client=True) as client:
        (flow_run,) = client.read_flow_runs(sort=FlowRunSort.START_TIME_DESC, limit=1)
        logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run.id])))
    return flow_run, [log.message for log in logs]


@pytest.mark.parametrize("where", ["first request", "batches"])
def test_a_wrong_api_key_is_one_line_without_traceback_in_the_cli_and_the_flow_run_log(
    where: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """Checked by one request before any batch starts; a batch refused later (here: the first id is no
    UUID, so the check sends nothing) fails the run the same way, its batches without a traceback."""
    ids = IDS if where == "first request" else ["not-a-uuid", *IDS]
    argv = ["run", "--ids", manifest(tmp_path, ids), "--out", str(tmp_path / "out"), "--api-key", "wrong-key",
            "--batch-size", "3"]  # fmt: skip
    with EmulatorServer(EmulatorConfig(responses=RESPONSES)) as server:
        code = main([*argv, "--api-url", server.api_url])
        requests = len(server.app.request_log)
    err = capsys.readouterr().err
    line = "the API rejected the credentials (401): check the API key"
    assert code == 2, err
    # stderr also holds Prefect's log lines (not a terminal): the error is said once, last, no traceback
    lines = err.splitlines()
    assert [m for m in lines if "talktime: error:" in m] == [lines[-1]]
    assert lines[-1].startswith(f"talktime: error: {line}")
    assert not [m for m in lines if m.startswith("flows.errors.") or "client has been closed" in m]
    if where == "first request":
        assert requests == 1  # no batch started
    flow_run, messages = last_flow_run_and_logs()
    assert flow_run.state.is_failed() and line in flow_run.state.message
    assert len([m for m in messages if m.startswith(f"talktime: error: {line}")]) == 1
    assert len([m for m in messages if m.startswith("talktime: error:")]) == 1
    assert not [m for m in messages if "Traceback" in m or "client has been closed" in m]
    assert not [record for record in caplog.records if record.exc_info]
    assert "wrong-key" not in err + "".join(messages)


# -- mistakes caught before Prefect starts ------------------------------------------------------


@pytest.fixture
def no_prefect(monkeypatch: pytest.MonkeyPatch) -> None:
    """The flows may not start: each of these mistakes must be caught before."""
    import flows.pipeline

    def refuse(*_: object, **__: object) -> None:
        raise AssertionError("a flow was started")

    monkeypatch.setattr(flows.pipeline, "run_flow", refuse)
    monkeypatch.setattr(flows.pipeline, "ingest_flow", refuse)


def _mistakes(tmp: Path) -> dict[str, tuple[list[str], str]]:
    (tmp / "afile").write_text("x")
    (tmp / "bad.csv").write_text('a,b\n"x,1\n')
    (tmp / "ok.txt").write_text("00000000-0000-4000-8000-000000000000\n")
    run = ["run", "--api-url", "http://127.0.0.1:9/v1/copilot-api/server", "--api-key", "k"]
    ok_ids = ["--ids", str(tmp / "ok.txt")]
    return {
        "missing ids file": ([*run, "--ids", str(tmp / "nope.txt"), "--out", str(tmp / "o")], "ids file not found"),
        "malformed csv": ([*run, "--ids", str(tmp / "bad.csv"), "--out", str(tmp / "o")], "not a readable CSV"),
        "out is a file": ([*run, *ok_ids, "--out", str(tmp / "afile")], "is a file, not a directory"),
        "out cannot be created": ([*run, *ok_ids, "--out", str(tmp / "afile" / "o")], "cannot be created"),
        "batch size 0": ([*run, *ok_ids, "--out", str(tmp / "o"), "--batch-size", "0"], "batch_size"),
        "concurrency 0": ([*run, *ok_ids, "--out", str(tmp / "o"), "--concurrency", "0"], "concurrency"),
        "missing input": (["ingest", "--input", str(tmp / "nope"), "--out", str(tmp / "o")], "input not found"),
        "compact nothing": (["compact", "--out", str(tmp / "nothing")], "does not exist"),
        "status nothing": (["status", "--out", str(tmp / "nothing")], "nothing at"),
        "status of a file": (["status", "--out", str(tmp / "afile")], "is a file"),
    }


@pytest.mark.usefixtures("no_prefect")
@pytest.mark.parametrize(
    "mistake",
    ["missing ids file", "malformed csv", "out is a file", "out cannot be created", "batch size 0", "concurrency 0",
     "missing input", "compact nothing", "status nothing", "status of a file"],
)  # fmt: skip
def test_an_operator_mistake_is_one_line_and_exit_2(
    mistake: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv, expected = _mistakes(tmp_path)[mistake]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("talktime: error: ") and err.count("\n") == 1 and expected in err
    assert not (tmp_path / "nothing").exists()  # compact and status create nothing


@pytest.mark.usefixtures("no_prefect")
@pytest.mark.parametrize("command", ["run", "ingest"])
def test_a_prefect_server_that_does_not_answer_is_one_line_before_the_flow_starts(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    url = f"http://127.0.0.1:{closed_port()}/api"
    argv = (
        run_args("http://127.0.0.1:9/v1/copilot-api/server", tmp_path)
        if command == "run"
        else ["ingest", "--input", str(PRIMOCK), "--out", str(tmp_path / "out")]
    )
    with temporary_settings(updates={PREFECT_API_URL: url}):  # as from the environment or the profile
        assert main(argv) == 2
    err = capsys.readouterr().err
    assert err == (
        f"talktime: error: no Prefect server answers at PREFECT_API_URL={url} (connection refused to "
        f"{url[7:-4]}): start it (`prefect server start`), or unset PREFECT_API_URL "
        "(`prefect config unset PREFECT_API_URL`) to run on a temporary server\n"
    )
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("extra", [(), ("--quiet",), ("--json",)], ids=["default", "quiet", "json"])
def test_without_prefect_api_url_the_cli_says_at_once_that_a_temporary_server_starts(
    extra: tuple[str, ...], tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    import flows.pipeline

    def started(*_: object, **__: object) -> None:
        raise KeyboardInterrupt  # the flow would start here: stop (exit 130) without a server

    monkeypatch.setattr(flows.pipeline, "run_flow", started)
    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        assert main([*run_args("http://127.0.0.1:9/v1/copilot-api/server", tmp_path), *extra]) == 130
    err = capsys.readouterr().err
    notice = "talktime: starting a temporary Prefect server (set PREFECT_API_URL to use yours)\n"
    assert err == ("" if extra else notice)


def test_an_unreachable_api_names_the_transport_cause_in_the_summary_and_the_failed_state(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    port = closed_port()
    code = main([*run_args(f"http://127.0.0.1:{port}/v1/copilot-api/server", tmp_path, "--max-attempts", "2"),
                 "--json"])  # fmt: skip
    captured = capsys.readouterr()
    cause = f"connection refused to 127.0.0.1:{port}"
    assert code == 1
    result = json.loads(captured.out)
    assert result["failure"] == f"10 of 10 ids ended in error (100%, more than 10%; they stay pending): " \
                                f"retries_exhausted 10; network: {cause}"  # fmt: skip
    assert result["retries"] == {f"network ({cause})": 10}
    assert f"talktime: the run failed: {result['failure']}" in captured.err
    flow_run, messages = last_flow_run_and_logs()
    assert flow_run.state.is_failed() and flow_run.state.message == result["failure"]
    assert f"this run: 3 batches, 20 requests, retries: network ({cause}) 10" in messages
    assert not [m for m in messages if "/v1/copilot-api" in m]  # host and port only, never the URL's path


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    from flows.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="ids file not found"):
        main(
            ["run", "--api-url", "http://127.0.0.1:9", "--ids", str(tmp_path / "x"), "--out", str(tmp_path), "--debug"]
        )


def test_a_missing_bucket_is_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from moto.server import ThreadedMotoServer

    for key, value in {
        "AWS_ACCESS_KEY_ID": "t",
        "AWS_SECRET_ACCESS_KEY": "t",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(key, value)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        out = f"s3://no-such-bucket/talktime?endpoint_override=http://{host}:{port}"
        code = main(["ingest", "--input", str(sorted(PRIMOCK.glob("*.json"))[0]), "--out", out])
    finally:
        server.stop()
    err = capsys.readouterr().err
    assert code == 2
    assert "talktime: error: cannot write _talktime/lease.json in s3://no-such-bucket/talktime: NoSuchBucket" in err
    assert not [record for record in caplog.records if record.exc_info]  # no traceback logged


def test_a_missing_requests_limit_stops_the_run_before_any_request(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = EmulatorConfig(responses=RESPONSES)
    with EmulatorServer(config) as server:
        code = main(run_args(server.api_url, tmp_path, "--requests-limit", "talktime-no-such-limit"))
        assert not server.app.request_log
    err = capsys.readouterr().err
    assert code == 2
    assert "global concurrency limit 'talktime-no-such-limit' (requests_limit) does not exist" in err
    assert "prefect global-concurrency-limit create talktime-no-such-limit" in err
    assert not list((tmp_path / "out").glob("transcriptions/**/*.parquet"))


def test_the_requests_budget_holds_at_the_server(tmp_path: Path) -> None:
    """Request timestamps measured by the emulator: 4 slots, back at 4 per second, for 10 requests."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate

    with get_client(sync_client=True) as client:
        client.create_global_concurrency_limit(
            GlobalConcurrencyLimitCreate(name="talktime-test-budget", limit=4, slot_decay_per_second=4.0)
        )
    with EmulatorServer(EmulatorConfig(responses=RESPONSES)) as server:
        assert main(run_args(server.api_url, tmp_path, "--requests-limit", "talktime-test-budget")) == 0
        stamps = sorted(t for t, _ in server.app.request_log)
    # 10 ids, and one request before the batches that checks the credentials
    assert len(stamps) == 11 and statuses(tmp_path / "out") == {"succeeded": 10}
    # 4 at once, then 4 more each second: the 11th request is at least 1.5 s after the first
    # (unlimited, these 10 requests take a few milliseconds in all).
    assert stamps[-1] - stamps[0] >= 1.5 - 0.1


def test_the_budget_takes_slots_in_chunks_and_spends_one_per_request() -> None:
    import asyncio

    from flows.api.budget import RequestsBudget

    taken: list[int] = []

    async def acquire(slots: int) -> None:
        taken.append(slots)

    async def spend(requests: int) -> None:
        budget = RequestsBudget("x", 5, acquire)
        await asyncio.gather(*(budget.take() for _ in range(requests)))

    asyncio.run(spend(12))
    assert taken == [5, 5, 5]


# -- what a run shows in Prefect ------------------------------------------------------------------


def test_a_run_shows_named_tasks_batch_lines_progress_and_a_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        FlowRunFilter,
        FlowRunFilterId,
        LogFilter,
        LogFilterFlowRunId,
    )
    from prefect.logging.handlers import APILogHandler

    import flows.progress
    from flows.pipeline import run_flow

    updates: list[float] = []
    real_update = flows.progress.ArtifactWatcher._update

    def record(self: Any, summary: Any) -> None:
        updates.append(flows.progress.percent(summary))
        real_update(self, summary)

    monkeypatch.setattr(flows.progress.ArtifactWatcher, "_update", record)
    os.environ["TALKTIME_API_KEY"] = DEFAULT_API_KEY
    with EmulatorServer(EmulatorConfig(responses=RESPONSES)) as server:
        settings = RunSettings(api_url=server.api_url, ids_file=manifest(tmp_path), out=str(tmp_path / "out"),
                               batch_size=4, in_flight=1)  # fmt: skip
        state = run_flow(settings, return_state=True)
    assert state.is_completed()
    APILogHandler().flush()
    flow_run_id = flow_run_of(state)
    with get_client(sync_client=True) as client:
        tasks = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
        logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
    assert sorted(t.name for t in tasks) == ["fetch-1-of-3", "fetch-2-of-3", "fetch-3-of-3"]
    messages = [log.message for log in logs]
    for name, ids in (("fetch-1-of-3", 4), ("fetch-2-of-3", 4), ("fetch-3-of-3", 2)):
        line = next(m for m in messages if m.startswith(f"{name} committed: "))
        assert line.startswith(f"{name} committed: {ids} ids, {ids} requests, retries: none, ")
        assert line.endswith(" s") and "rows written" in line
    assert "this run: outcomes of 10 ids: succeeded 10" in messages
    assert not any("{" in m and "statuses" in m for m in messages)  # readable lines, not a dict repr
    assert updates == [40.0, 80.0, 100.0, 100.0]  # after each batch, then at the end
    progress = next(a for a in artifacts if a.type == "progress")
    assert progress.data == 100.0
    table = next(a for a in artifacts if a.type == "table" and a.key == "talktime-run-table")
    rows = json.loads(table.data) if isinstance(table.data, str) else table.data
    figures = {(r["section"], r["name"]): r["value"] for r in rows}
    assert figures[("outcomes (this run)", "succeeded")] == 10
    assert figures[("the whole output", "ids succeeded")] == 10
    assert figures[("rows written (including rows later replaced in this run)", "transcriptions")] == 10
    assert ("talk time (the whole output)", "doctor") in figures


def test_json_summary_and_quiet(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with EmulatorServer(EmulatorConfig(responses=RESPONSES)) as server:
        assert main([*run_args(server.api_url, tmp_path), "--json"]) == 0
        result = json.loads(capsys.readouterr().out)
        assert result["statuses"] == {"succeeded": 10} and result["rows"]["transcriptions"] == 10
        assert result["dataset"]["ids_by_status"] == {"succeeded": 10}
        assert main([*run_args(server.api_url, tmp_path), "--quiet"]) == 0
    assert capsys.readouterr().out == "talktime: outcomes of 0 ids: none\n"  # all final: nothing polled


# -- the command line itself ----------------------------------------------------------------------


def test_version_and_defaults_in_every_help(capsys: pytest.CaptureFixture[str]) -> None:
    from importlib.metadata import version

    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0 and capsys.readouterr().out == f"talktime {version('talktime')}\n"
    for command, option in [("run", "--batch-size"), ("ingest", "--batch-size"), ("emulator", "--port"),
                            ("webhook", "--port"), ("status", "--expire-after"), ("demo", "--out")]:  # fmt: skip
        with pytest.raises(SystemExit):
            main([command, "--help"])
        entry = re.search(rf"^  {option}\b.*?(?=^  -|\Z)", capsys.readouterr().out, re.S | re.M)
        assert entry is not None and "default" in entry.group(0), (command, option)


def test_the_progress_bar_only_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    import argparse
    import io

    import flows.progress
    from flows.cli.commands import configure_console

    for tty, quiet, expected in [(True, False, 1), (False, False, 0), (True, True, 0)]:
        monkeypatch.setattr(flows.progress, "_terminal", [])
        monkeypatch.delenv("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", raising=False)
        stream = io.StringIO()
        stream.isatty = lambda tty=tty: tty  # type: ignore[method-assign]
        monkeypatch.setattr("sys.stderr", stream)
        configure_console(argparse.Namespace(command="run", quiet=quiet, log_level=None))
        assert len(flows.progress.terminal_watchers()) == expected
        level = os.environ.get("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL")
        assert level == {(True, False): "WARNING", (False, False): None, (True, True): "ERROR"}[(tty, quiet)]


def test_the_progress_bar_shows_counts_retries_and_429s() -> None:
    import io

    from rich.console import Console

    from flows.progress import ProgressBar
    from flows.summary import RunSummary

    screen = io.StringIO()
    bar = ProgressBar("talktime run", Console(file=screen, force_terminal=True, width=160))
    bar.started("ids", 10)
    summary = RunSummary(total_units=10, units_done=4, batches=1)
    summary.retries.update({"rate_limited": 3, "server_error": 2})
    bar.advanced(summary)
    bar.finished(summary)
    shown = screen.getvalue()
    assert "4/10" in shown and "retries 5" in shown and "429s 3" in shown


def test_compact_reports_its_partitions_as_it_goes(tmp_path: Path) -> None:
    from datetime import UTC, datetime

    from flows.outcomes import Outcome
    from flows.storage.compact import compact
    from tests.helpers import commit_outcomes, item

    out = str(tmp_path / "out")
    for n in range(3):  # three batches of one partition: three files per table
        tid = f"00000000-0000-4000-8000-00000000000{n}"
        commit_outcomes(out, [Outcome(tid, "succeeded", datetime.now(UTC), items=[item("doctor", 0, 10)])])
    calls: list[tuple[int, int]] = []
    assert compact(out, progress=lambda done, total: calls.append((done, total))) == (12, 4)
    assert calls == [(0, 1), (1, 1)]


def test_while_the_run_only_waits_for_ongoing_ids_the_bar_shows_the_wait_not_an_eta() -> None:
    import io

    from rich.console import Console

    from flows.progress import ProgressBar
    from flows.runs import wait_watched
    from flows.summary import RunSummary

    screen = io.StringIO()
    bar = ProgressBar("talktime run", Console(file=screen, force_terminal=True, width=200))
    bar.started("ids", 10)
    summary = RunSummary(total_units=10, units_done=10, batches=3, waiting=3)
    now = [0.0]
    shown: list[str] = []

    def sleep(seconds: float) -> None:
        bar._progress.refresh()  # type: ignore[union-attr]
        shown.append(screen.getvalue().rsplit("\r", 1)[-1])
        now[0] += seconds

    wait_watched(2.5, summary, bar, clock=lambda: now[0], sleep=sleep)
    bar.finished(summary)
    assert len(shown) == 3 and summary.next_poll_s is None
    assert "waiting for 3 ongoing ids, next poll in 2 s" in shown[0]  # 2.5 s, rounded half to even
    assert "next poll in 0 s" in shown[2] and not [s for s in shown if "0:00:00" in s]
