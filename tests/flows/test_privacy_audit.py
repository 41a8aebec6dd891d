"""Where talktime writes, and whether transcript text gets there (issue 20, item 4).

A marker sentence is planted in a valid item and in rejected items of the input. `talktime run`
(against the emulator), `ingest` (of saved responses, and of a webhook landing, both with
--delete-after-commit), `status`, `verify` and `report` then run; every place they write is searched
for the marker: the output (data, ledger, staging, commits, quarantine, the policy file), the
inputs and the landing, the report, what the commands printed (stdout, stderr), the log records,
Prefect's home and database files, Prefect's logs, flow and task run states and artifacts read back
from its API, and the temporary folder. Under `keep` the marker is found in the item tables only;
under `drop`, nowhere.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from flows.cli import main
from flows.emulator.app import DEFAULT_API_KEY, EmulatorConfig
from flows.emulator.server import EmulatorServer
from tests.conftest import FLOW_TEST_MARKS
from tests.flows.text_inputs import MARKER, deliver, local_files_holding, responses, write_responses

pytestmark = FLOW_TEST_MARKS
RESPONSES = responses(2)
ITEM_TABLES = ("transcript_items", "rejected_items")


def prefect_records() -> Iterator[tuple[str, str]]:
    """(what, text) of everything Prefect's API holds: logs, flow and task run states and parameters,
    artifacts."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        offset = 0
        while logs := client.read_logs(limit=200, offset=offset):
            offset += len(logs)
            yield from (("log", log.message) for log in logs)
        for flow_run in client.read_flow_runs(limit=200):
            state = flow_run.state
            yield "flow run", f"{flow_run.name} {flow_run.parameters} {state and state.message} {state and state.data}"
        for task_run in client.read_task_runs(limit=200):
            state = task_run.state
            yield "task run", f"{task_run.name} {state and state.message} {state and state.data}"
        for artifact in client.read_artifacts(limit=200):
            yield "artifact", f"{artifact.key} {artifact.description} {json.dumps(artifact.data, default=str)}"


def prefect_files() -> list[Path]:
    """Prefect's home and the folder of its database (logs, states, parameters, results)."""
    from prefect.settings import PREFECT_SERVER_DATABASE_CONNECTION_URL

    database = Path(str(PREFECT_SERVER_DATABASE_CONNECTION_URL.value()).split(":///", 1)[1]).parent
    return [Path(os.environ["PREFECT_HOME"]), database]


def new_temporary_files(since: float, skip: Path) -> Iterator[Path]:
    """Files in the temporary folder changed since `since`, outside `skip` (pytest's own folders)."""
    for root, dirs, files in os.walk(tempfile.gettempdir()):
        dirs[:] = [d for d in dirs if Path(root, d) != skip and os.access(Path(root, d), os.R_OK | os.X_OK)]
        for name in files:
            path = Path(root, name)
            try:
                if path.is_file() and path.stat().st_mtime >= since and os.access(path, os.R_OK):
                    yield path
            except OSError:
                continue


@pytest.mark.parametrize("policy", ["keep", "drop"])
def test_the_marker_is_only_in_the_item_tables_under_keep_and_nowhere_under_drop(
    policy: str,
    tmp_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("TALKTIME_API_KEY", DEFAULT_API_KEY)
    started = time.time() - 1
    (tmp_path / "ids.txt").write_text("\n".join(RESPONSES) + "\n")
    outs = {name: tmp_path / name for name in ("run", "ingest", "hook")}
    text = ["--text", policy]
    with EmulatorServer(EmulatorConfig(responses=RESPONSES)) as server:
        assert main(["run", "--api-url", server.api_url, "--ids", str(tmp_path / "ids.txt"),
                     "--out", str(outs["run"]), "--json", *text]) == 0  # fmt: skip
    saved = write_responses(tmp_path / "saved", RESPONSES)
    assert main(["ingest", "--input", str(saved), "--out", str(outs["ingest"]), "--delete-after-commit", *text]) == 0
    deliver(tmp_path / "landing", RESPONSES, policy)
    landed = tmp_path / "landing"
    assert main(["ingest", "--input", str(landed), "--out", str(outs["hook"]), "--delete-after-commit", *text]) == 0
    for name, out in outs.items():
        assert main(["status", "--out", str(out)]) == 0
        assert main(["status", "--out", str(out), "--json"]) == 0
        assert main(["verify", "--out", str(out)]) == 0
        assert main(["verify", "--out", str(out), "--json"]) == 0
        assert main(["report", "--out", str(out), "--html", str(tmp_path / f"report-{name}.html")]) == 0
    printed = capsys.readouterr()

    found = [str(p.relative_to(tmp_path)) for p in local_files_holding(tmp_path)]
    if policy == "keep":  # the item tables of each output, nothing else (inputs and landing were deleted)
        assert {path.split("/")[1] for path in found} == set(ITEM_TABLES)
        assert {path.split("/")[0] for path in found} == set(outs)
    else:
        assert found == []
    assert list(saved.iterdir()) == [] and list(landed.glob("*.ndjson")) == []
    assert sorted((tmp_path / "run" / "_talktime").rglob("staging/*")) == []
    assert "succeeded" in printed.out  # the capture works
    assert MARKER not in printed.out + printed.err + caplog.text
    assert not [what for what, text in prefect_records() if MARKER in text]
    assert not [p for root in prefect_files() for p in local_files_holding(root)]
    pytest_root = tmp_path_factory.getbasetemp().parent
    assert not [p for p in new_temporary_files(started, pytest_root) if MARKER.encode() in p.read_bytes()]
