"""`--text keep|drop|hash` through `talktime run`, `ingest` and the webhook, on local disk and S3;
the policy recorded at an output's first write and refused when a later run asks for another;
`ingest --delete-after-commit` (issue 20, items 1 and 2)."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from flows import runs
from flows.batch import read_batch
from flows.cli import main
from flows.emulator.app import DEFAULT_API_KEY, EmulatorConfig
from flows.emulator.server import EmulatorServer
from flows.settings import IngestSettings
from flows.storage.layout import POLICY
from flows.storage.reader import read_table
from flows.storage.store import Store
from flows.textpolicy import TEXT_KEY_ENV
from tests.conftest import FLOW_TEST_MARKS
from tests.crash_driver import ingest_without_prefect
from tests.flows.storage.test_object_storage import s3_endpoint, s3_url
from tests.flows.text_inputs import (
    MARKED_ID,
    MARKER,
    TEXT_KEY,
    deliver,
    files_holding,
    responses,
    write_responses,
)
from transforms.schemas import TRANSCRIPTION_METRICS
from transforms.text import key_id, text_hmac

pytestmark = FLOW_TEST_MARKS
__all__ = ["s3_endpoint"]

POLICIES = ("keep", "drop", "hash")
RESPONSES = responses()
METRIC_COLUMNS = ["transcription_id", "status", *TRANSCRIPTION_METRICS.names()]


@pytest.fixture
def text_key(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv(TEXT_KEY_ENV, TEXT_KEY)
    monkeypatch.setenv("TALKTIME_API_KEY", DEFAULT_API_KEY)
    return TEXT_KEY


def place(where: str, request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[str], str]:
    """A function giving a fresh output location: a folder, or an S3 prefix on moto's real server."""
    if where == "local":
        return lambda name: str(tmp_path / name)
    endpoint = request.getfixturevalue("s3_endpoint")
    return lambda name: s3_url(endpoint)


# Every policy on local disk; on S3 by default `hash` (the policy whose record carries a key id),
# the other two under `slow`: the store under a policy is the same code on both.
POLICY_PLACES = [
    *(pytest.param(policy, "local", id=f"local-{policy}") for policy in POLICIES),
    pytest.param("hash", "s3", id="s3-hash"),
    *(pytest.param(policy, "s3", id=f"s3-{policy}", marks=pytest.mark.slow) for policy in ("keep", "drop")),
]


def metrics(out: str) -> dict[str, pl.DataFrame]:
    transcriptions = read_table(out, "transcriptions").select(METRIC_COLUMNS).sort("transcription_id")
    speakers = read_table(out, "speaker_metrics").sort("transcription_id", "speaker")
    return {"transcriptions": transcriptions, "speaker_metrics": speakers}


def ids_file(tmp_path: Path) -> str:
    path = tmp_path / "ids.txt"
    path.write_text("\n".join(RESPONSES) + "\n")
    return str(path)


@pytest.fixture(scope="module")
def baseline(tmp_path_factory: pytest.TempPathFactory) -> dict[str, pl.DataFrame]:
    """The metric tables of an ingest that keeps the text: what every policy must give."""
    folder = tmp_path_factory.mktemp("baseline")
    out = str(folder / "out")
    assert main(["ingest", "--input", str(write_responses(folder / "in", RESPONSES)), "--out", out, "--quiet"]) == 0
    return metrics(out)


def assert_text_as_the_policy_says(out: str, policy: str) -> None:
    items = read_table(out, "transcript_items").filter(pl.col("transcription_id") == MARKED_ID).sort("item_index")
    texts = items["text"].to_list()
    if policy == "keep":
        assert (
            texts[1] == MARKER
            and files_holding(out)
            and all(path.startswith(("transcript_items/", "rejected_items/")) for path in files_holding(out))
        )
    elif policy == "drop":
        assert texts == [None, None, None] and files_holding(out) == []
    else:
        assert texts[1] == text_hmac(TEXT_KEY.encode(), MARKER) and files_holding(out) == []
        assert texts[2] == text_hmac(TEXT_KEY.encode(), f"{MARKER}?")
    recorded = json.loads(Store(out).read_bytes(POLICY))
    assert recorded["text_policy"] == policy
    assert recorded.get("key_id") == (key_id(TEXT_KEY.encode()) if policy == "hash" else None)
    assert TEXT_KEY not in json.dumps(recorded)


@pytest.mark.parametrize(("policy", "where"), POLICY_PLACES)
def test_each_policy_through_run_ingest_and_the_webhook_gives_the_same_metrics(
    policy: str,
    where: str,
    request: pytest.FixtureRequest,
    text_key: str,
    baseline: dict[str, pl.DataFrame],
    tmp_path: Path,
) -> None:
    new_out = place(where, request, tmp_path)
    quiet = ["--quiet", "--text", policy]
    with EmulatorServer(EmulatorConfig(responses=RESPONSES)) as server:
        run_out = new_out("run")
        assert main(["run", "--api-url", server.api_url, "--ids", ids_file(tmp_path), "--out", run_out, *quiet]) == 0
    ingest_out = new_out("ingest")
    inputs = write_responses(tmp_path / "saved", RESPONSES)
    assert main(["ingest", "--input", str(inputs), "--out", ingest_out, *quiet]) == 0
    landing, hook_out = tmp_path / "landing", new_out("hook")
    deliver(landing, RESPONSES, policy, TEXT_KEY.encode() if policy == "hash" else None)
    if policy != "keep":  # the landing holds no text, only its shape (and its hash)
        assert not [p for p in landing.iterdir() if MARKER in p.read_text()]
    assert main(["ingest", "--input", str(landing), "--out", hook_out, "--delete-after-commit", *quiet]) == 0
    assert list(landing.glob("*.ndjson")) == []  # every landed event is committed, so deleted
    for out in (run_out, ingest_out, hook_out):
        for table, expected in baseline.items():
            assert_frame_equal(metrics(out)[table], expected)
        assert_text_as_the_policy_says(out, policy)


def test_the_policy_is_recorded_and_another_is_refused_before_prefect_starts(
    tmp_path: Path, text_key: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    out = str(tmp_path / "out")
    inputs = str(write_responses(tmp_path / "in", RESPONSES))
    assert main(["ingest", "--input", inputs, "--out", out, "--text", "drop", "--quiet"]) == 0
    capsys.readouterr()
    import flows.pipeline

    monkeypatch.setattr(flows.pipeline, "ingest_flow", lambda *a, **k: pytest.fail("a flow was started"))
    for asked in ("keep", "hash"):
        assert main(["ingest", "--input", inputs, "--out", out, "--text", asked]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "Traceback" not in err
        assert err.startswith("talktime: error: ") and "'drop'" in err and f"'{asked}'" in err


def test_on_s3_the_run_refuses_another_policy_with_one_line(
    s3_endpoint: str, tmp_path: Path, text_key: str, capsys: pytest.CaptureFixture[str]
) -> None:
    out = s3_url(s3_endpoint)
    inputs = str(write_responses(tmp_path / "in", RESPONSES))
    assert main(["ingest", "--input", inputs, "--out", out, "--text", "hash", "--quiet"]) == 0
    before = Store(out).list("transcriptions")
    capsys.readouterr()
    assert main(["ingest", "--input", inputs, "--out", out, "--text", "drop"]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert [line for line in lines if "talktime: error:" in line] == [lines[-1]]
    assert "'hash'" in lines[-1] and "'drop'" in lines[-1] and "Traceback" not in "\n".join(lines)
    assert Store(out).list("transcriptions") == before


def test_hash_with_another_key_is_refused(tmp_path: Path, text_key: str, monkeypatch: pytest.MonkeyPatch) -> None:
    out = str(tmp_path / "out")
    inputs = str(write_responses(tmp_path / "in", RESPONSES))
    assert main(["ingest", "--input", inputs, "--out", out, "--text", "hash", "--quiet"]) == 0
    monkeypatch.setenv(TEXT_KEY_ENV, "another-key-of-32-characters-002")
    assert main(["ingest", "--input", inputs, "--out", out, "--text", "hash", "--quiet"]) == 2


def test_hash_without_a_key_is_one_line_and_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv(TEXT_KEY_ENV, raising=False)
    inputs = str(write_responses(tmp_path / "in", RESPONSES))
    assert main(["ingest", "--input", inputs, "--out", str(tmp_path / "out"), "--text", "hash"]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert lines[-1].startswith("talktime: error: --text hash needs a key: set TALKTIME_TEXT_HMAC_KEY")
    assert not list((tmp_path / "out").glob("transcript_items/**/*.parquet"))


def test_an_output_written_before_policies_counts_as_keep(tmp_path: Path, text_key: str) -> None:
    out = tmp_path / "out"
    inputs = str(write_responses(tmp_path / "in", RESPONSES))
    assert main(["ingest", "--input", inputs, "--out", str(out), "--quiet"]) == 0
    (out / POLICY).unlink()  # as a release before policies wrote it
    assert main(["ingest", "--input", inputs, "--out", str(out), "--text", "drop", "--quiet"]) == 2
    assert main(["ingest", "--input", inputs, "--out", str(out), "--quiet"]) == 0
    assert json.loads((out / POLICY).read_text())["text_policy"] == "keep"


# -- ingest --delete-after-commit ------------------------------------------------------------------


def ingest_here(out: str, inputs: list[str], batch_size: int = 1) -> runs.RunSummary:
    """The ingest flow's body without Prefect, deleting its inputs after their commits."""
    return ingest_without_prefect(out, batch_size, inputs, in_flight=2, delete_after_commit=True)


def committed_ids(out: str) -> set[str]:
    store = Store(out)
    if not store.exists("transcriptions"):
        return set()
    return set(read_table(out, "transcriptions")["transcription_id"])


def spanning_input(folder: Path) -> tuple[Path, dict[str, set[str]]]:
    """Two NDJSON files of 3 records each (so, at batch size 2, a batch holds records of both), and a
    .json file; each file's ids."""
    folder.mkdir()
    bodies = list(RESPONSES.values())
    files = {folder / "a.ndjson": bodies[:3], folder / "b.ndjson": bodies[1:4], folder / "c.json": bodies[3:4]}
    for path, records in files.items():
        text = json.dumps(records[0]) if path.suffix == ".json" else "".join(json.dumps(r) + "\n" for r in records)
        path.write_text(text)
    return folder, {str(path): {r["id"] for r in records} for path, records in files.items()}


@pytest.mark.parametrize("crash_before_commit", [1, 2, 3, 4])
def test_a_file_is_deleted_only_after_every_record_of_it_is_committed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, crash_before_commit: int
) -> None:
    folder, ids_of = spanning_input(tmp_path / "in")
    out = str(tmp_path / "out")
    real_commit = runs.Run.commit
    calls = []

    def commit_then_check(self: runs.Run, staged: runs.StagedBatch, summary: runs.RunSummary) -> None:
        calls.append(staged.number)
        if len(calls) == crash_before_commit:
            raise KeyboardInterrupt  # the process dies before this batch's commit
        for path, ids in ids_of.items():  # before this commit: every file already gone is wholly committed
            assert Path(path).exists() or ids <= committed_ids(out)
        real_commit(self, staged, summary)

    monkeypatch.setattr(runs.Run, "commit", commit_then_check)
    with pytest.raises(KeyboardInterrupt):
        ingest_here(out, [str(folder)], batch_size=2)
    gone = [path for path in ids_of if not Path(path).exists()]
    assert all(ids_of[path] <= committed_ids(out) for path in gone)
    assert len(gone) < len(ids_of)
    monkeypatch.setattr(runs.Run, "commit", real_commit)
    ingest_here(out, [str(p) for p in ids_of if Path(p).exists()], batch_size=2)  # again: the rest
    assert sorted(folder.iterdir()) == [] and committed_ids(out) == set(RESPONSES)


def test_a_sigkilled_ingest_never_deletes_an_uncommitted_file(tmp_path: Path) -> None:
    """Killed at its n-th storage write (tests.crash_driver's hook), for several n: every deleted file's
    ids are committed; a second ingest of what is left finishes the job."""
    script = (  # ingest_here's ingest, without importing this module (pytest, the CLI) in the killed process
        "import sys\n"
        "from tests import crash_driver\n"
        "crash_driver.install_counter(int(sys.argv[3]))\n"
        "crash_driver.ingest_without_prefect(sys.argv[1], 2, [sys.argv[2]], delete_after_commit=True)\n"
    )
    for point in (4, 9, 14):
        folder, ids_of = spanning_input(tmp_path / f"in-{point}")
        out = str(tmp_path / f"out-{point}")
        done = subprocess.run([sys.executable, "-c", script, out, str(folder), str(point)], check=False,
                              cwd=Path(__file__).parents[2], env={**os.environ}, capture_output=True)  # fmt: skip
        assert done.returncode == -9, done.stderr[-2000:]
        gone = [path for path in ids_of if not Path(path).exists()]
        assert all(ids_of[path] <= committed_ids(out) for path in gone), point
        ingest_here(out, [str(folder)], batch_size=2)
        assert list(folder.iterdir()) == [] and committed_ids(out) == set(RESPONSES)


def test_a_file_with_an_unreadable_record_or_that_grew_is_kept(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    bodies = list(RESPONSES.values())
    (folder / "bad.ndjson").write_text(json.dumps(bodies[0]) + "\nnot json\n")
    (folder / "good.ndjson").write_text(json.dumps(bodies[1]) + "\n")
    out = str(tmp_path / "out")
    ingest_here(out, [str(folder)])
    assert sorted(p.name for p in folder.iterdir()) == ["bad.ndjson"]
    from flows.cleanup import InputCleanup
    from flows.inputs import plan_slices

    grown = folder / "grown.ndjson"
    grown.write_text(json.dumps(bodies[2]) + "\n")
    cleanup = InputCleanup(list(plan_slices([str(grown)], 10)), logging.getLogger())
    with grown.open("a") as handle:
        handle.write(json.dumps(bodies[3]) + "\n")  # appended after it was read
    staged = runs.StagedBatch(1, None, pl.DataFrame(), pl.DataFrame())  # type: ignore[arg-type]
    cleanup.committed(staged)
    assert grown.exists() and cleanup.deleted == 0


def test_without_the_option_inputs_stay(tmp_path: Path) -> None:
    folder, ids_of = spanning_input(tmp_path / "in")
    settings = IngestSettings(inputs=[str(folder)], out=str(tmp_path / "out"), batch_size=2)
    with ThreadPoolExecutor(max_workers=2) as pool:
        runs.ingest(settings, lambda spec: pool.submit(read_batch, settings, spec), logging.getLogger())
    assert all(Path(path).exists() for path in ids_of)
