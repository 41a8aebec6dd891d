"""`talktime compact` killed (SIGKILL) at each of its storage steps, and the window in which a plain
glob can see a partition's rows twice."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from flows import runs
from flows.api.service import close_fetchers
from flows.batch import fetch_batch
from flows.emulator.app import DEFAULT_API_KEY, EmulatorConfig
from flows.emulator.server import EmulatorServer, load_responses
from flows.settings import RunSettings
from flows.storage.commit import read_every_file
from flows.storage.compact import compact
from flows.storage.layout import LEDGER_DIR
from flows.storage.reader import read_table
from flows.storage.store import Store
from tests.conftest import PRIMOCK, SAMPLES
from tests.crash_driver import ingest, ingest_without_prefect
from tests.crash_hook import CRASH_ENV, MUTATING, one_point_per_kind, record_calls
from tests.flows.storage.test_object_storage import s3_endpoint, s3_url
from tests.flows.storage.test_storage import ROOT, nothing_pending, snapshot
from transforms.schemas import TABLES

__all__ = ["s3_endpoint"]  # a fixture, used by name
LEASE_OPS = ("create_if_absent", "replace_if_match", "delete_if_match")
Call = tuple[str, tuple[Any, ...]]  # a `Store` call: (method name, positional arguments)


@pytest.fixture(scope="module")
def small_files(tmp_path_factory: pytest.TempPathFactory, inputs: list[str]) -> tuple[Path, dict[str, pl.DataFrame]]:
    """An output of many small files (a batch of 2 records each) and its rows."""
    out = tmp_path_factory.mktemp("small") / "out"
    ingest(str(out), 2, inputs)
    assert len(Store(str(out)).list("transcriptions")) > 2
    return out, snapshot(out)


def is_data(path: str) -> bool:
    return not path.startswith("_talktime/")


def lands_data(call: Call) -> bool:
    return call[0] in ("move", "place") and is_data(call[1][1])


def removes_data(call: Call) -> bool:
    name, args = call
    return (name == "delete" and is_data(args[0])) or (name == "delete_many" and any(map(is_data, args[0])))


@pytest.mark.parametrize("where", ["local", "s3"])
def test_between_its_first_merged_file_and_its_last_small_file_compaction_does_nothing_else(
    where: str, request: pytest.FixtureRequest, tmp_path: Path, inputs: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The window a plain glob sees duplicates in: merged files and the ledger land, then the small
    files go, with no existence check, staging clean-up or other request in between."""
    out = str(tmp_path / "out") if where == "local" else s3_url(request.getfixturevalue("s3_endpoint"))
    ingest(out, 2, inputs)
    reads = ("exists", "list", "read_bytes", "read_parquet")
    calls = record_calls(monkeypatch, (*MUTATING, *reads))
    compact(out)
    first = next(i for i, call in enumerate(calls) if lands_data(call))
    last = max(i for i, call in enumerate(calls) if removes_data(call))
    window = calls[first : last + 1]
    merged_or_ledger = [c for c in window if c[0] == "place" and (is_data(c[1][1]) or c[1][1].startswith(LEDGER_DIR))]
    assert [c for c in window if c not in merged_or_ledger and not removes_data(c)] == []
    assert len(merged_or_ledger) == 1 + len({c[1][1].split("/")[0] for c in merged_or_ledger if is_data(c[1][1])})
    assert sum(c[0] == "delete_many" for c in window) == 1  # every small file in one step (one request on S3)


@pytest.mark.parametrize(
    "every_step",
    [False, pytest.param(True, marks=pytest.mark.slow)],
    ids=["first-step-of-each-kind", "every-step"],
)
def test_a_compaction_killed_at_each_step_reads_exact_and_the_next_writer_recovers_first(
    every_step: bool,
    tmp_path: Path,
    small_files: tuple[Path, dict[str, pl.DataFrame]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Killed from the commit record on (the apply step): by default before the first step of each kind
    (each method on each area: the commit record, data, ledger, staging, lease), under `slow` before
    every step."""
    base, expected = small_files
    steps = compaction_steps(base, tmp_path / "counted", monkeypatch)
    committed_at = next(i for i, (name, args) in enumerate(steps, 1) if args and "_talktime/commits/" in str(args[0]))
    points = range(committed_at, len(steps) + 1) if every_step else one_point_per_kind(steps, first=committed_at)
    for point in points:
        shutil.copytree(base, tmp_path / f"killed-{point}")
    with ThreadPoolExecutor(2) as pool:  # one compaction process per core at a time
        list(pool.map(lambda point: kill_compaction(tmp_path / f"killed-{point}", point), points))
    doubled = []
    with EmulatorServer(EmulatorConfig(responses=load_responses([PRIMOCK]))) as server:
        for point in points:
            killed = tmp_path / f"killed-{point}"
            for table in TABLES:  # the ledger-consistent reader is exact at every point
                exact = read_table(str(killed), table).drop("fetched_at", strict=False).sort(pl.all())
                assert exact.equals(expected[table]), (point, table)
            if not read_every_file(Store(str(killed)), "transcriptions")["transcription_id"].is_unique().all():
                doubled.append(f"{point}:{steps[point - 1][0]}")
            for command in NEXT_COMMANDS:
                out = tmp_path / f"{command}-{point}"
                shutil.copytree(killed, out)
                check_recovers_first(out, command, expected, server, monkeypatch)
    print("kill points where a plain glob sees a transcription twice:", doubled)
    assert doubled  # the window exists (this test kills inside it) ...
    assert all(name in ("place", "delete_many") for name in (d.split(":")[1] for d in doubled))  # ... and is only that


def compaction_steps(base: Path, copy: Path, monkeypatch: pytest.MonkeyPatch) -> list[Call]:
    """The mutating storage steps of one compaction of `base` (kill point N = before step N)."""
    shutil.copytree(base, copy)
    with monkeypatch.context() as patch:
        steps = record_calls(patch, MUTATING)
        compact(str(copy))
    return steps


def kill_compaction(out: Path, point: int) -> None:
    command = [sys.executable, "-m", "tests.flows.storage.compact_driver", str(out)]
    env = os.environ | {CRASH_ENV: str(point)}
    killed = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, timeout=120, check=False)
    assert killed.returncode == -9, killed.stderr.decode()[-2000:]


def check_recovers_first(
    out: Path, command: str, expected: dict[str, pl.DataFrame], server: EmulatorServer, patch: pytest.MonkeyPatch
) -> None:
    """Run `command` on `out`: every recovery step comes before its first step that is neither the
    lease nor recovery, and by then nothing is pending and a plain glob is exact again."""
    store = Store(str(out))
    leftover = [json.loads(store.read_bytes(p)) for p in store.list("_talktime/commits", ".json")]
    recovery = {"_talktime/staging", "_talktime/runs"}
    for record in leftover:
        recovery |= {path for move in record["moves"] for path in move} | set(record["deletes"])
        recovery |= {f"_talktime/commits/{record['batch_id']}.json", f"_talktime/staging/{record['batch_id']}"}

    def paths(call: Call) -> set[str]:
        name, args = call
        return set(args[0] if name == "delete_many" else args[:2] if name in ("move", "place") else args[:1])

    def is_recovery(call: Call) -> bool:
        return call[0] not in LEASE_OPS and bool(paths(call)) and paths(call) <= recovery

    def is_other(call: Call) -> bool:
        return call[0] not in LEASE_OPS and bool(paths(call)) and not paths(call) <= recovery

    state_at_first_other: list[bool] = []

    def before(call: Call) -> None:
        if is_other(call) and not state_at_first_other:
            state_at_first_other.append(recovered(out, expected))

    with patch.context() as recording:
        calls = record_calls(recording, MUTATING, before)
        NEXT_COMMANDS[command](out, server, patch)
    first_other = next((i for i, call in enumerate(calls) if is_other(call)), len(calls))
    assert all(i < first_other for i, call in enumerate(calls) if is_recovery(call)), (command, calls[:12])
    if first_other == len(calls):  # nothing to do but recover (the compaction, or a run of a final id)
        state_at_first_other.append(recovered(out, expected))
    assert state_at_first_other == [True], command
    assert nothing_pending(out)
    assert read_every_file(Store(str(out)), "transcriptions")["transcription_id"].is_unique().all()


def recovered(out: Path, expected: dict[str, pl.DataFrame]) -> bool:
    """No commit record left and a plain glob reads exactly the rows from before the compaction."""
    return not Store(str(out)).list("_talktime/commits") and all(
        snapshot(out)[table].equals(expected[table]) for table in TABLES
    )


def next_ingest(out: Path, server: EmulatorServer, patch: pytest.MonkeyPatch) -> None:
    ingest_without_prefect(str(out), 4, [str(SAMPLES / "responses" / "demo_extra.ndjson")])


def next_compact(out: Path, server: EmulatorServer, patch: pytest.MonkeyPatch) -> None:
    compact(str(out))


def next_run(out: Path, server: EmulatorServer, patch: pytest.MonkeyPatch) -> None:
    ids = out.parent / f"{out.name}-ids.txt"
    ids.write_text(sorted(load_responses([PRIMOCK]))[-1] + "\n")  # one id not ingested before
    patch.setenv("TALKTIME_API_KEY", DEFAULT_API_KEY)
    settings = RunSettings(api_url=server.api_url, ids_file=str(ids), out=str(out), max_wait_s=0, in_flight=1)
    with ThreadPoolExecutor(1) as pool:
        try:
            runs.poll(settings, lambda spec: pool.submit(fetch_batch, settings, spec), logging.getLogger())
        finally:
            close_fetchers()


NEXT_COMMANDS: dict[str, Callable[[Path, EmulatorServer, pytest.MonkeyPatch], None]] = {
    "ingest": next_ingest,
    "compact": next_compact,
    "run": next_run,
}


@pytest.fixture(autouse=True)
def _no_crash_injection(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(CRASH_ENV, raising=False)
