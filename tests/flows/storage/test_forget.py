"""`talktime forget`: every row of the ids erased in one crash-safe commit, the ids never written
again unless a run names `--refetch forgotten`, an erasure log by id only, checked by verify."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest

from flows import runs
from flows.batch import fetch_batch
from flows.cli import main
from flows.emulator.server import EmulatorServer
from flows.outcomes import Outcome
from flows.storage.dataset import Dataset
from flows.storage.forget import forget
from flows.storage.ledgerlog import load_ledger
from flows.storage.store import Store
from flows.storage.verify import verify
from tests.crash_hook import CRASH_ENV, MUTATING, Step, one_point_per_kind, record_calls, step_kind
from tests.flows.storage.test_ledger_rebuild import poll, server
from tests.flows.storage.test_object_storage import s3_endpoint, s3_url
from tests.flows.storage.test_storage import ROOT
from tests.helpers import commit_outcomes, drop_ledger, item
from transforms.schemas import TABLES

__all__ = ["s3_endpoint", "server"]  # fixtures, used by name
IDS = [f"00000000-0000-4000-8000-{n:012d}" for n in range(8)]
NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
MARKER = "MARKER the patient reported chest pain MARKER"
GONE = IDS[1:4]


def succeeded(tid: str) -> Outcome:
    items = [item("doctor", 0, 1000, MARKER), item("patient", 1000, 3000, "fine"), item("nurse", 0, 5, MARKER)]
    return Outcome(tid, "succeeded", NOW, api_version="2024-04-22", items=items)


def write_output(out: str) -> None:
    commit_outcomes(out, [succeeded(tid) for tid in IDS[:4]])
    commit_outcomes(out, [succeeded(tid) for tid in IDS[4:6]] + [Outcome(IDS[6], "ongoing", NOW)])


def rows_of(out: str, ids: list[str]) -> dict[str, int]:
    """Rows of these ids per table, as a plain glob reads them."""
    store = Store(out)
    found = {}
    for table in TABLES:
        frames = [pl.DataFrame(store.read_parquet(p)) for p in store.list(table, ".parquet")]
        rows = (
            pl.concat(frames)
            if frames
            else pl.DataFrame({"transcription_id": []}, schema={"transcription_id": pl.String})
        )
        found[table] = rows.filter(pl.col("transcription_id").is_in(ids)).height
    return found


@pytest.mark.parametrize("where", ["local", "s3"])
def test_forget_erases_every_row_marks_the_ids_and_logs_ids_only(
    where: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    out = str(tmp_path / "out") if where == "local" else s3_url(request.getfixturevalue("s3_endpoint"))
    write_output(out)
    kept_before = rows_of(out, [IDS[0], *IDS[4:7]])
    done = forget(out, [*GONE, IDS[7]])  # IDS[7] was never written
    assert (done.ids, done.held) == (4, 3)
    assert done.rows_removed == {"transcriptions": 3, "speaker_metrics": 6, "transcript_items": 6, "rejected_items": 3}
    assert rows_of(out, [*GONE, IDS[7]]) == dict.fromkeys(TABLES, 0)
    assert rows_of(out, [IDS[0], *IDS[4:7]]) == kept_before
    ledger = load_ledger(Store(out))
    gone = ledger.filter(pl.col("transcription_id").is_in([*GONE, IDS[7]]))
    assert gone["status"].to_list() == ["forgotten"] * 4 and gone["final"].all() and gone["batch_id"].is_null().all()
    store = Store(out)
    (entry,) = store.list("_talktime/erasures", ".json")
    record = json.loads(store.read_bytes(entry))
    assert record["ids"] == [*GONE, IDS[7]] and record["rows_removed"] == done.rows_removed
    assert MARKER not in store.read_bytes(entry).decode()
    assert not store.list("_talktime/staging") and not store.list("_talktime/commits")
    assert verify(out).consistent


def test_a_forgotten_id_is_never_written_again_unless_refetch_names_it(tmp_path: Path) -> None:
    out = str(tmp_path / "out")
    write_output(out)
    forget(out, GONE)
    commit_outcomes(out, [succeeded(GONE[0])])  # an ingest or a webhook delivery of it: final, skipped
    assert rows_of(out, GONE) == dict.fromkeys(TABLES, 0)
    with Dataset.writer(out, "tests") as (dataset, _):  # a run's plan: forgotten ids are final
        from flows.storage.ledger import plan_run

        plan = plan_run(dataset.plan_rows(GONE), GONE, NOW, NOW - NOW.replace(year=2025), ("succeeded",))
        assert plan.to_fetch == [] and plan.already_final == 3
        plan = plan_run(dataset.plan_rows(GONE), GONE, NOW, NOW - NOW.replace(year=2025), ("forgotten",))
        assert plan.to_fetch == GONE and plan.refetched == GONE
    assert verify(out).consistent


def test_verify_finds_rows_of_a_forgotten_id_and_a_rebuilt_ledger_keeps_the_erasure(tmp_path: Path) -> None:
    out = tmp_path / "out"
    write_output(str(out))
    saved = {p: p.read_bytes() for p in (out / "transcriptions").rglob("*.parquet")}
    forget(str(out), GONE)
    for path, content in saved.items():  # an old copy of a file comes back (a restore from a backup)
        path.write_bytes(content)
    found = verify(str(out))
    assert [(f.problem, f.table, f.count) for f in found.findings if f.problem == "unerased"] == [
        ("unerased", "transcriptions", 3)
    ]
    drop_ledger(out)
    rebuilt = load_ledger(Store(str(out)))
    assert rebuilt.filter(pl.col("transcription_id").is_in(GONE))["status"].to_list() == ["forgotten"] * 3
    assert main(["verify", "--out", str(out), "--repair"]) == 0
    assert rows_of(str(out), GONE) == dict.fromkeys(TABLES, 0)


def test_the_cli_forgets_in_one_line_and_refuses_mistakes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    write_output(str(out))
    (tmp_path / "ids.txt").write_text("\n".join(GONE) + "\n")
    assert main(["forget", "--out", str(out), "--ids", str(tmp_path / "ids.txt")]) == 0
    printed = capsys.readouterr().out
    assert (
        printed.startswith("talktime forget: 3 ids forgotten (3 held rows: 18 rows removed;") and MARKER not in printed
    )
    assert main(["forget", "--out", str(tmp_path / "nothing"), "--ids", str(tmp_path / "ids.txt")]) == 2
    assert main(["forget", "--out", str(out), "--ids", str(tmp_path / "missing.txt")]) == 2
    assert capsys.readouterr().err.count("\n") == 2


def forget_steps(base: Path, copy: Path, patch: pytest.MonkeyPatch) -> list[Step]:
    """The mutating storage steps of one forget of GONE in `base` (kill point N = before step N),
    recorded in this process; the driver process takes as many."""
    shutil.copytree(base, copy)
    with patch.context() as recording:
        steps = record_calls(recording, MUTATING)
        forget(str(copy), GONE)
    shutil.rmtree(copy)
    shutil.copytree(base, copy)
    done = subprocess.run([sys.executable, "-m", "tests.flows.storage.forget_driver", str(copy), *GONE],
                          cwd=ROOT, capture_output=True, check=True, timeout=120)  # fmt: skip
    assert int(done.stdout.decode().split()[-1]) == len(steps)
    return steps


def kill_forget(base: Path, killed: Path, point: int) -> subprocess.CompletedProcess[bytes]:
    shutil.copytree(base, killed)
    env = os.environ | {CRASH_ENV: str(point)}
    return subprocess.run([sys.executable, "-m", "tests.flows.storage.forget_driver", str(killed), *GONE],
                          cwd=ROOT, env=env, capture_output=True, timeout=120, check=False)  # fmt: skip


@pytest.mark.parametrize(
    "every_step",
    [False, pytest.param(True, marks=pytest.mark.slow)],
    ids=["first-step-of-each-kind", "every-step"],
)
def test_forget_killed_at_each_step_leaves_all_or_none_of_an_id_s_rows(
    every_step: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """By default killed before the first step of each kind (each method on each area: lease, staging,
    the commit record, data, erasures, ledger), which includes both sides of the commit record;
    under `slow`, before every step."""
    base = tmp_path / "base"
    write_output(str(base))
    before = rows_of(str(base), GONE)
    steps = forget_steps(base, tmp_path / "counted", monkeypatch)
    points = range(1, len(steps) + 1) if every_step else one_point_per_kind(steps)
    commit_record = next(n for n, step in enumerate(steps, 1) if step_kind(step)[1] == "commits")
    assert {commit_record, commit_record + 1} <= set(points)
    with ThreadPoolExecutor(2) as pool:  # one forget process per core at a time
        runs = list(pool.map(lambda n: kill_forget(base, tmp_path / f"killed-{n}", n), points))
    outcomes = set()
    for point, run in zip(points, runs, strict=True):
        killed = tmp_path / f"killed-{point}"
        assert run.returncode == -9, run.stderr.decode()[-2000:]
        with Dataset.writer(str(killed), "next writer"):  # the next writer recovers first
            pass
        after = rows_of(str(killed), GONE)
        assert after in (before, dict.fromkeys(TABLES, 0)), (point, after)
        erased = after == dict.fromkeys(TABLES, 0)
        outcomes.add(erased)
        statuses = load_ledger(Store(str(killed))).filter(pl.col("transcription_id").is_in(GONE))["status"]
        assert (statuses == "forgotten").all() is erased, point
        assert verify(str(killed)).consistent, point
    assert outcomes == {False, True}  # killed both before and after the commit point


def test_a_run_never_polls_a_forgotten_id_unless_refetch_names_it(tmp_path: Path, server: EmulatorServer) -> None:
    from flows.settings import RunSettings

    out, ids_file = tmp_path / "out", tmp_path / "ids.txt"
    ids = list(server.app.config.responses)[:4]
    poll(server, out, ids, ids_file)
    forget(str(out), ids[:2])
    before = dict(server.app.requests)
    summary = poll(server, out, ids, ids_file)  # the same manifest again, as the hourly deployment does
    assert dict(server.app.requests) == before and summary.already_final == 4
    assert rows_of(str(out), ids[:2]) == dict.fromkeys(TABLES, 0)
    ids_file.write_text("\n".join(ids) + "\n")
    settings = RunSettings(api_url=server.api_url, ids_file=str(ids_file), out=str(out), batch_size=3,
                           max_wait_s=0, refetch=("forgotten",))  # fmt: skip
    with ThreadPoolExecutor(max_workers=2) as pool:
        runs.poll(settings, lambda spec: pool.submit(fetch_batch, settings, spec), logging.getLogger("test"))
    assert rows_of(str(out), ids[:2])["transcriptions"] == 2  # named explicitly: fetched and written again
    assert verify(str(out)).consistent
