"""The webhook path as docs/operating.md documents it (issue 18): the exact command block lands an event that
`talktime ingest` turns into rows; an event ingest could not use is refused; an ingest that skipped
every record is no silent success."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from flows.cli import main
from flows.storage.reader import read_table
from tests.conftest import FLOW_TEST_MARKS
from tests.flows.webhook.test_abuse import free_port
from tests.flows.webhook.test_webhook import event
from tests.helpers import wait_until_healthy
from tests.test_docs import ROOT, code_blocks, section

pytestmark = FLOW_TEST_MARKS

# The documented curl example as it was: `data` without a transcript, landed, then skipped by ingest.
WITHOUT_TRANSCRIPT = {
    "id": "5f0c4a3e-1b2d-4c6e-8a9b-000000000001",
    "created_at": "2026-11-23T12:00:00Z",
    "type": "transcribe_async.succeeded",
    "data": {"id": "c3ca0dc5-6b63-5852-9680-8ae0f6194e04", "status": "succeeded"},
}


def readme_block() -> list[str]:
    """The lines of the shell block of the "Webhooks" section of docs/operating.md."""
    text = section((ROOT / "docs" / "operating.md").read_text(encoding="utf-8"), "## Webhooks")
    (block,) = [content for info, content in code_blocks(text) if info == "sh"]
    return block.splitlines()


@pytest.fixture
def readme_receiver(tmp_path: Path) -> Iterator[tuple[list[str], dict[str, str]]]:
    """The documented lines, on a free port and in tmp_path, with its receiver started by its own line."""
    port, block = free_port(), readme_block()
    found = re.search(r"--port (\d+)", block[1])
    assert found, block[1]
    lines = [
        re.sub(rf"\b{found.group(1)}\b", str(port), line)
        .replace("/tmp/landing", str(tmp_path / "landing"))
        .replace("/tmp/talktime-webhook-out", str(tmp_path / "out"))
        for line in block
    ]
    export, serve = lines[0], lines[1]
    assert export.startswith("export TALKTIME_WEBHOOK_SECRET=") and serve.endswith(" &"), lines
    receiver = subprocess.Popen(["bash", "-c", f"{export}; exec {serve.removesuffix(' &')}"], cwd=ROOT,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        wait_until_healthy(receiver, port, "the documented receiver")
        yield lines, {"PATH": os.environ["PATH"]}
    finally:
        receiver.terminate()
        receiver.wait(timeout=10)


def test_the_readme_command_block_lands_an_event_that_ingest_turns_into_rows(
    readme_receiver: tuple[list[str], dict[str, str]], tmp_path: Path
) -> None:
    lines, env = readme_receiver
    export, _, post, ingest = lines
    answer = subprocess.run(["bash", "-c", f"{export}; {post}"], cwd=ROOT, env=env, capture_output=True, timeout=60)
    assert json.loads(answer.stdout) == {"status": "landed"}, answer.stderr.decode()[-500:]
    argv = shlex.split(ingest)
    assert argv[0] == ".venv/bin/talktime"
    assert main([*argv[1:], "-q"]) == 0
    transcriptions = read_table(str(tmp_path / "out"), "transcriptions")
    assert transcriptions.select("transcription_id", "status").rows() == [
        ("c3ca0dc5-6b63-5852-9680-8ae0f6194e04", "succeeded")
    ]
    assert read_table(str(tmp_path / "out"), "transcript_items").height == 2


def test_an_ingest_that_skipped_every_record_exits_1_with_a_clear_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    landing = tmp_path / "landing"
    landing.mkdir()
    (landing / "events-old.ndjson").write_text(json.dumps(WITHOUT_TRANSCRIPT) + "\n")
    (landing / "events-junk.ndjson").write_text("not json\n")
    assert main(["ingest", "--input", str(landing), "--out", str(tmp_path / "out"), "-q"]) == 1
    err = capsys.readouterr().err
    assert "talktime: the run failed: every one of the 2 input records was skipped" in err
    assert "Traceback" not in err


def test_an_ingest_with_one_usable_record_among_skipped_ones_succeeds(tmp_path: Path) -> None:
    landing = tmp_path / "landing"
    landing.mkdir()
    (landing / "events-old.ndjson").write_text(json.dumps(WITHOUT_TRANSCRIPT) + "\n")
    (landing / "events-good.ndjson").write_bytes(event() + b"\n")
    assert main(["ingest", "--input", str(landing), "--out", str(tmp_path / "out"), "-q"]) == 0
