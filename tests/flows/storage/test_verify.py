"""`talktime verify`: the ledger against the data files (missing, extra, duplicated, unreadable) and `--repair`."""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import polars as pl
import pytest

import flows.storage.commit
from flows.batch import BatchSpec, stage_outcomes
from flows.cli import main
from flows.emulator.app import DEFAULT_API_KEY, EmulatorConfig
from flows.emulator.server import EmulatorServer, load_responses
from flows.outcomes import Outcome
from flows.secrets import API_KEY_ENV
from flows.storage.commit import INTERNAL, new_batch_id
from flows.storage.dataset import Dataset
from flows.storage.ledgerlog import load_ledger
from flows.storage.store import Store
from flows.storage.verify import repair
from tests.conftest import PRIMOCK
from tests.crash_driver import ingest
from tests.flows.storage.test_ledger_rebuild import every_row, manifest, poll, server
from tests.flows.storage.test_object_storage import s3_endpoint, s3_url
from tests.helpers import FETCHED_AT, drop_ledger, item, newest_ledger_file
from transforms.schemas import TABLES

__all__ = ["s3_endpoint", "server"]  # fixtures


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An output written by a run over eight consultations and a 404, three ids per batch (once a module)."""
    folder = tmp_path_factory.mktemp("written")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(API_KEY_ENV, DEFAULT_API_KEY)
        responses = dict(list(load_responses([PRIMOCK]).items())[:8])  # those of the `server` fixture
        with EmulatorServer(EmulatorConfig(responses=responses)) as server:
            poll(server, folder / "out", manifest(server), folder / "ids.txt")
    return folder / "out"


@pytest.fixture
def out(tmp_path: Path, written: Path) -> Path:
    """A copy of that output of this test's own."""
    shutil.copytree(written, tmp_path / "out")
    return tmp_path / "out"


def verify(out: Path | str, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, str]:
    code = main(["verify", "--out", str(out), *extra])
    return code, capsys.readouterr().out


def without_fetched_at(out: Path | str) -> dict[str, pl.DataFrame]:
    return {table: frame.drop("fetched_at", strict=False) for table, frame in every_row(out).items()}


def assert_rows_equal(a: dict[str, pl.DataFrame], b: dict[str, pl.DataFrame]) -> None:
    for table in TABLES:
        assert a[table].sort(pl.all()).equals(b[table].sort(pl.all())), table


def ids_in(path: Path) -> set[str]:
    return set(pl.read_parquet(path)["transcription_id"])


def a_file(out: Path, table: str) -> Path:
    """The data file of `table` holding the most rows (so that deleting it always loses something)."""
    return max(sorted((out / table).rglob("*.parquet")), key=lambda p: pl.read_parquet(p).height)


def test_a_clean_output_is_consistent(out: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, report = verify(out, capsys)
    assert code == 0 and "consistent" in report
    assert f"ledger: ok ({len(load_ledger(Store(str(out))))} ids)" in report


def test_json_names_each_finding(out: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    lost = a_file(out, "transcript_items")
    lost_ids = ids_in(lost)
    lost.unlink()
    code, report = verify(out, capsys, "--json")
    result = json.loads(report)
    assert code == 1 and result["consistent"] is False and result["ledger"] == "ok"
    missing = [f for f in result["findings"] if f["problem"] == "missing" and f["table"] == "transcript_items"]
    assert missing and missing[0]["count"] == len(lost_ids) and missing[0]["unit"] == "ids"


def test_an_empty_location_is_consistent_and_a_missing_one_is_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert verify(tmp_path, capsys)[0] == 0
    assert main(["verify", "--out", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "does not exist" in err and "Traceback" not in err


@pytest.mark.parametrize("table", ["transcriptions", "speaker_metrics", "transcript_items"])
def test_a_deleted_data_file_is_missing_ids_and_the_next_run_after_repair_fetches_exactly_them(
    out: Path, server: EmulatorServer, capsys: pytest.CaptureFixture[str], table: str
) -> None:
    expected = without_fetched_at(out)
    lost = a_file(out, table)
    lost_ids = ids_in(lost)
    lost.unlink()
    code, report = verify(out, capsys)
    assert code == 1
    assert f"missing     {table:<17} {len(lost_ids)} ids" in report
    assert verify(out, capsys, "--repair")[0] == 0
    assert lost_ids.isdisjoint(load_ledger(Store(str(out)))["transcription_id"])
    before = Counter(server.app.requests)
    poll(server, out, manifest(server), out.parent / "ids.txt")
    fetched = {tid for tid, n in server.app.requests.items() if n > before[tid]} & set(manifest(server))
    assert fetched == lost_ids
    assert verify(out, capsys) == (0, "talktime verify: ledger: ok (9 ids)\ntalktime verify: consistent\n")
    assert_rows_equal(without_fetched_at(out), expected)


def test_a_file_copied_under_another_batch_is_extra_rows_that_repair_removes(
    out: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    expected = every_row(out)
    copied = {}
    newer = new_batch_id()
    for table in ("transcriptions", "speaker_metrics"):
        source = a_file(out, table)
        copied[table] = pl.read_parquet(source).height
        shutil.copy(source, source.with_name(f"part-{newer}.parquet"))
    code, report = verify(out, capsys)
    assert code == 1
    for table, rows in copied.items():
        assert f"extra       {table:<17} {rows} rows" in report
    code, report = verify(out, capsys, "--repair")
    assert code == 0 and f"{sum(copied.values())} rows removed from 2 files" in report
    assert_rows_equal(every_row(out), expected)


def test_rows_repeated_in_their_current_file_are_duplicated_and_repair_keeps_one(
    out: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    expected = every_row(out)
    doubled = a_file(out, "speaker_metrics")
    rows = pl.read_parquet(doubled)
    pl.concat([rows, rows.head(3)]).write_parquet(doubled)
    code, report = verify(out, capsys)
    assert code == 1 and "duplicated  speaker_metrics   3 rows" in report
    assert verify(out, capsys, "--repair")[0] == 0
    assert_rows_equal(every_row(out), expected)


def test_a_deleted_ledger_is_reported_and_repair_writes_the_rebuilt_one(
    out: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ledger = load_ledger(Store(str(out)))
    drop_ledger(out)
    code, report = verify(out, capsys)
    files = len(list((out / "transcriptions").rglob("*.parquet")))
    assert code == 1 and f"ledger: missing, rebuilt from {files} data files (9 ids)" in report
    assert verify(out, capsys, "--repair")[0] == 0
    rebuilt = load_ledger(Store(str(out)))
    columns = ["transcription_id", "status", "final", "batch_id", "fetched_date"]
    assert rebuilt.select(columns).equals(ledger.select(columns))


def test_a_truncated_ledger_is_reported_and_repair_rebuilds_it(out: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ledger = newest_ledger_file(out)
    ledger.write_bytes(ledger.read_bytes()[:100])
    code, report = verify(out, capsys)
    assert code == 1 and "ledger: unreadable (truncated or corrupt), rebuilt from" in report
    assert verify(out, capsys, "--repair")[0] == 0
    assert load_ledger(Store(str(out))).height == 9


def test_an_unreadable_data_file_is_quarantined_and_its_ids_fetched_again(
    out: Path, server: EmulatorServer, capsys: pytest.CaptureFixture[str]
) -> None:
    expected = without_fetched_at(out)
    broken = a_file(out, "transcript_items")
    lost_ids = ids_in(out / "transcriptions" / broken.relative_to(out / "transcript_items"))  # the whole batch
    content = broken.read_bytes()
    broken.write_bytes(content[: len(content) // 2])
    relative = broken.relative_to(out).as_posix()
    code, report = verify(out, capsys)
    assert code == 1 and f"unreadable  transcript_items  1 files   e.g. {relative}" in report
    assert f"missing     transcript_items  {len(lost_ids)} ids" in report
    assert verify(out, capsys, "--repair")[0] == 0
    assert (out / INTERNAL / "quarantine" / relative).read_bytes() == content[: len(content) // 2]
    before = Counter(server.app.requests)
    poll(server, out, manifest(server), out.parent / "ids.txt")
    assert {tid for tid, n in server.app.requests.items() if n > before[tid]} & set(manifest(server)) == lost_ids
    assert_rows_equal(without_fetched_at(out), expected)


def test_the_report_names_ids_never_transcript_text(
    out: Path, server: EmulatorServer, capsys: pytest.CaptureFixture[str]
) -> None:
    items = pl.read_parquet(f"{out}/transcript_items/**/*.parquet")
    texts = [t for t in items["text"].drop_nulls() if len(t) > 20]
    newer = a_file(out, "transcript_items").with_name(f"part-{new_batch_id()}.parquet")
    shutil.copy(a_file(out, "transcript_items"), newer)
    code, report = verify(out, capsys, "--repair")
    assert code == 0 and "extra       transcript_items" in report
    assert texts and not [t for t in texts if t in report]


def test_a_repair_interrupted_after_its_commit_point_is_finished_by_the_next_one(
    out: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    expected = every_row(out)
    doubled = a_file(out, "transcriptions")
    pl.concat([pl.read_parquet(doubled)] * 2).write_parquet(doubled)
    drop_ledger(out)

    def crash(*_: object) -> None:
        raise RuntimeError("killed")

    monkeypatch.setattr(flows.storage.commit, "apply_commit", crash)  # dies right after the commit point
    with pytest.raises(RuntimeError, match="killed"):
        repair(str(out))
    monkeypatch.undo()
    assert list((out / INTERNAL / "commits").glob("*.json"))  # committed, not applied
    code, report = verify(out, capsys)
    assert code == 1 and "pending: 1 commit record" in report
    assert verify(out, capsys, "--repair")[0] == 0
    assert verify(out, capsys)[0] == 0
    assert_rows_equal(every_row(out), expected)


def test_verify_and_repair_on_s3(s3_endpoint: str, inputs: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    url = s3_url(s3_endpoint)
    ingest(url, 4, inputs)
    store = Store(url)
    expected = every_row(url)
    assert verify(url, capsys)[0] == 0
    source = store.list("speaker_metrics", ".parquet")[0]
    rows = pl.DataFrame(store.read_parquet(source)).height
    store.fs.copy_file(store.path(source), store.path(source.rsplit("/", 1)[0] + f"/part-{new_batch_id()}.parquet"))
    store.delete_dir("_talktime/ledger")
    code, report = verify(url, capsys)
    assert code == 1 and f"extra       speaker_metrics   {rows} rows" in report and "ledger: missing" in report
    assert verify(url, capsys, "--repair")[0] == 0
    assert verify(url, capsys)[0] == 0 and store.list("_talktime/ledger", ".parquet")
    assert_rows_equal(every_row(url), expected)


def commit_on(out: str, date: str, outcomes: list[Outcome]) -> None:
    """Commit outcomes as one batch into the partition of `date`."""
    with Dataset.writer(out, "tests") as (dataset, _):
        staged = stage_outcomes(out, BatchSpec(1, new_batch_id(), date, dataset.snapshot()), outcomes)
        dataset.commit(staged.files, staged.polled, run_batches=frozenset())


def test_verify_checks_one_partition_or_a_date_range(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    ids = [f"00000000-0000-4000-8000-00000000000{n}" for n in range(3)]
    for n, date in enumerate(["2026-01-01", "2026-01-02", "2026-01-03"]):
        commit_on(str(out), date, [Outcome(ids[n], "succeeded", FETCHED_AT, api_version="2024-04-22",
                                           items=[item("doctor", 0, 10)])])  # fmt: skip
    for path in (out / "transcriptions" / "fetched_date=2026-01-02").glob("*.parquet"):
        path.unlink()  # the second day's transcription rows are lost
    assert verify(out, capsys)[0] == 1
    assert verify(out, capsys, "--partition", "2026-01-01")[0] == 0
    code, report = verify(out, capsys, "--partition", "2026-01-02")
    assert code == 1 and f"missing     transcriptions    1 ids     e.g. {ids[1]}" in report
    assert verify(out, capsys, "--since", "2026-01-02")[0] == 1
    assert verify(out, capsys, "--since", "2026-01-03")[0] == 0
    assert verify(out, capsys, "--until", "2026-01-01")[0] == 0
    assert verify(out, capsys, "--since", "2026-01-01", "--until", "2026-01-02")[0] == 1
    for mistake in (["--partition", "2026-13-01"], ["--repair", "--since", "2026-01-01"]):
        assert main(["verify", "--out", str(out), *mistake]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("talktime: error: --")


@pytest.mark.parametrize(("delay_s", "shown"), [(0.0, True), (3600.0, False)], ids=["slow", "quick"])
def test_the_progress_bar_appears_only_once_the_work_took_longer_than_its_delay(
    monkeypatch: pytest.MonkeyPatch, delay_s: float, shown: bool
) -> None:
    import io

    from flows.cli.verify import _DelayedBar

    stream = io.StringIO()
    monkeypatch.setattr("sys.stderr", stream)
    bar = _DelayedBar("talktime verify: files read", delay_s=delay_s)
    bar.total = 4
    for _ in range(4):
        bar(1)
    bar.close()
    assert ("talktime verify: files read" in stream.getvalue()) is shown
