"""`talktime status`: what an output holds, checked against the ledger and the files read directly."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest

from flows.errors import ConfigurationError, StorageError
from flows.outcomes import Outcome
from flows.storage.lease import Lease
from flows.storage.ledger import LEDGER_SCHEMA, UNREADABLE_LEDGER
from flows.storage.ledgerlog import load_ledger
from flows.storage.status import OutputStatus, output_status, status_dict, status_lines
from flows.storage.store import Store
from flows.summary import TABLE_NAMES
from tests.flows.storage.test_object_storage import s3_endpoint, s3_url
from tests.helpers import commit_outcomes, drop_ledger, item, newest_ledger_file, write_ledger
from transforms.schemas import UTC_TIMESTAMP

__all__ = ["s3_endpoint"]  # a fixture, used by name

IDS = [f"00000000-0000-4000-8000-0000000000{n:02d}" for n in range(10)]
SECRET = "the patient's own words"
T0 = datetime(2026, 11, 23, 12, tzinfo=UTC)


def succeeded(tid: str, doctor_s: int, patient_s: int) -> Outcome:
    items = [
        item("doctor", 0, doctor_s * 1000, SECRET),
        item("patient", doctor_s * 1000, (doctor_s + patient_s) * 1000),
    ]
    return Outcome(tid, "succeeded", datetime.now(UTC), api_version="2024-04-22", items=items)


def write_output(out: str) -> None:
    """Three batches: succeeded ids, then pending and final non-succeeded ones, then two ongoing ids
    that succeed (their earlier rows replaced) and a final error."""
    now = datetime.now(UTC)
    commit_outcomes(out, [succeeded(IDS[n], 30 + n, 90 - n) for n in range(4)])
    commit_outcomes(
        out,
        [
            Outcome(IDS[4], "ongoing", now),
            Outcome(IDS[5], "ongoing", now),
            Outcome(IDS[6], "ongoing", now),
            Outcome.error(IDS[7], "retries_exhausted", "no answer", now),
            Outcome(IDS[8], "failed", now, error_code="422"),
        ],
    )
    commit_outcomes(
        out, [succeeded(IDS[4], 200, 10), succeeded(IDS[5], 5, 300), Outcome.error(IDS[9], "invalid_id", "?", now)]
    )


@pytest.fixture
def out(tmp_path: Path) -> Path:
    write_output(str(tmp_path / "out"))
    return tmp_path / "out"


def files_state(root: Path) -> dict[str, tuple[int, bytes]]:
    return {str(p.relative_to(root)): (p.stat().st_mtime_ns, p.read_bytes()) for p in root.rglob("*") if p.is_file()}


def expected_talk(out: Path) -> pl.DataFrame:
    """Talk time by speaker computed straight from the speaker_metrics files (a plain glob, between commits)."""
    metrics = pl.read_parquet(out / "speaker_metrics" / "**" / "*.parquet")
    totals = metrics.group_by("speaker").agg(pl.col("talk_time_ms").sum())
    return totals.select(
        "speaker",
        (pl.col("talk_time_ms") / 60_000).round(1).alias("talk_minutes"),
        (pl.col("talk_time_ms") / pl.col("talk_time_ms").sum()).round(3).alias("share"),
    ).sort("speaker")


def counts(frame: pl.DataFrame) -> dict[str, int]:
    return dict(frame.group_by("status").len().iter_rows())


def test_counts_files_rows_and_talk_match_the_ledger_and_the_files_and_nothing_changes(out: Path) -> None:
    before = files_state(out)
    status = output_status(str(out))
    assert files_state(out) == before  # read-only: not one file added, changed or removed
    ledger = load_ledger(Store(str(out)))
    pending = ledger.filter(~pl.col("final"))
    assert status.ids_by_status == counts(ledger) == {"succeeded": 6, "ongoing": 1, "error": 2, "failed": 1}
    assert status.pending == pending.height == 2
    assert status.pending_by_status == counts(pending) == {"ongoing": 1, "error": 1}
    assert status.ids == ledger.height == 10
    assert status.oldest_pending == pending["first_seen_at"].min()
    assert status.last_commit == ledger["last_polled_at"].max()
    for table in TABLE_NAMES:
        paths = sorted((out / table).rglob("*.parquet"))
        assert status.files_per_table[table] == len(paths), table
        assert status.rows_per_table is not None
        assert status.rows_per_table[table] == sum(pl.read_parquet(p).height for p in paths), table
    assert status.files_per_table["transcriptions"] == 3
    assert status.rows_per_table == {"transcriptions": 10, "speaker_metrics": 12, "transcript_items": 12,
                                     "rejected_items": 0}  # fmt: skip
    assert status.talk_by_speaker is not None
    assert status.talk_by_speaker.equals(expected_talk(out))
    assert (status.ledger_state, status.commit_records, status.lease, status.notes) == ("stored", 0, None, ())
    assert status.out == str(out)


def test_pending_oldest_and_expiry_are_judged_at_the_given_time(out: Path) -> None:
    first_seen = {IDS[6]: T0 - timedelta(hours=30), IDS[7]: T0 - timedelta(hours=23, minutes=30)}
    ledger = load_ledger(Store(str(out)))
    override = pl.DataFrame(
        {"transcription_id": list(first_seen), "seen": list(first_seen.values())},
        schema_overrides={"seen": UTC_TIMESTAMP},
    )
    ledger = ledger.join(override, on="transcription_id", how="left").select(
        pl.col(LEDGER_SCHEMA.names()).exclude("first_seen_at"),
        pl.coalesce("seen", "first_seen_at").alias("first_seen_at"),
    )
    more = pl.DataFrame(  # a third pending id, first seen two hours ago
        [[IDS[0].replace("00000000", "ffffffff"), "error", False, T0 - timedelta(hours=2), T0, 1, None, None]],
        schema=LEDGER_SCHEMA,
        orient="row",
    )
    rewritten = pl.concat([ledger.select(LEDGER_SCHEMA.names()), more])
    write_ledger(out, rewritten)
    status = output_status(str(out), now=T0, talk=False)
    assert status.pending == 3
    assert status.oldest_pending == T0 - timedelta(hours=30)
    assert status.next_to_expire == T0 - timedelta(hours=6)
    assert (status.overdue, status.expiring_within) == (1, 1)  # 30 h old; the one due in 30 minutes
    later = output_status(str(out), now=T0 + timedelta(hours=21, minutes=30), expire_after_s=24 * 3600, talk=False)
    assert (later.overdue, later.expiring_within) == (2, 1)
    wide = output_status(str(out), now=T0, expire_after_s=48 * 3600, horizon_s=20 * 3600, talk=False)
    assert wide.next_to_expire == T0 + timedelta(hours=18)
    assert (wide.overdue, wide.expiring_within) == (0, 1)
    naive = output_status(str(out), now=T0.replace(tzinfo=None), talk=False)
    assert (naive.now, naive.overdue, naive.expiring_within) == (T0, 1, 1)
    text = "\n".join(status_lines(status))
    assert "pending: 3 (error 2, ongoing 1), oldest first seen 2026-11-22 06:00:00 UTC (30h ago)" in text
    assert "expiry (24h after first seen): next 2026-11-23 06:00:00 UTC (6h ago); 1 within 1h; 1 overdue" in text


def test_lines_and_dict_are_readable_serialisable_and_never_quote_transcript_text(out: Path) -> None:
    status = output_status(str(out))
    lines = status_lines(status)
    text = "\n".join(lines)
    assert lines[0].startswith(f"talktime status: {out} (as of ")
    assert "ids: 10 (error 2, failed 1, ongoing 1, succeeded 6)" in text
    # batch 2 (no metrics, items or rejected items) lost its rows of ids 4 and 5 to batch 3: its emptied
    # files were deleted, its transcriptions rows of ids 6-8 moved to a new file
    assert "files: transcriptions 3, speaker_metrics 2, transcript_items 2, rejected_items 2" in text
    assert "writer: none" in text and "talk time by speaker:" in text
    assert re.search(r"^    doctor +\d+\.\d min +\d+\.\d%$", text, re.MULTILINE)
    as_json = json.loads(json.dumps(status_dict(status)))
    assert as_json["ids_by_status"] == status.ids_by_status
    assert as_json["last_commit"] == status.last_commit.isoformat()  # type: ignore[union-attr]
    assert as_json["talk_by_speaker"] == status.talk_by_speaker.to_dicts()  # type: ignore[union-attr]
    for rendered in (text, json.dumps(as_json)):
        assert SECRET not in rendered and "no answer" not in rendered


def test_a_missing_ledger_is_rebuilt_in_memory_and_said_so(out: Path) -> None:
    stored = output_status(str(out))
    drop_ledger(out)
    before = files_state(out)
    status = output_status(str(out))
    assert files_state(out) == before  # not written back
    assert status.ledger_state == "rebuilt"
    assert status.ids_by_status == stored.ids_by_status and status.pending == stored.pending
    assert status.talk_by_speaker is not None and status.talk_by_speaker.equals(expected_talk(out))
    assert any("rebuilt in memory from 3 transcriptions files" in note for note in status.notes)
    assert "ledger rebuilt from the data files" in status_lines(status)[1]


def test_an_unreadable_ledger_is_the_storage_error_naming_the_repair(out: Path) -> None:
    ledger = newest_ledger_file(out)
    ledger.write_bytes(ledger.read_bytes()[:-20])
    with pytest.raises(StorageError, match=re.escape(UNREADABLE_LEDGER)):
        output_status(str(out))


def test_a_live_lease_is_shown_and_left_alone_an_expired_one_is_not(out: Path) -> None:
    lease = Lease(Store(str(out)), "nightly run")
    lease.acquire()
    try:
        held = (out / "_talktime" / "lease.json").read_bytes()
        status = output_status(str(out))
        assert lease.record is not None and status.lease == lease.record.describe()
        assert f"  writer: {lease.record.describe()} (holds the lease)" in status_lines(status)
        assert "run nightly run" in status.lease
        assert (out / "_talktime" / "lease.json").read_bytes() == held
        assert output_status(str(out), now=lease.record.expires_at + timedelta(seconds=1)).lease is None
    finally:
        lease.release()
    assert output_status(str(out)).lease is None


def test_commit_records_left_behind_are_counted(out: Path) -> None:
    (out / "_talktime" / "commits").mkdir(parents=True, exist_ok=True)
    (out / "_talktime" / "commits" / "20261123T120000000000Z-0badf00d.json").write_text("{}")
    status = output_status(str(out), talk=False)
    assert status.commit_records == 1
    assert any("1 commit record(s)" in note for note in status.notes)


def test_no_output_there_is_one_clean_configuration_error(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(ConfigurationError) as nothing:
        output_status(str(missing))
    assert str(nothing.value) == f"nothing at {missing}: no talktime output there"
    a_file = tmp_path / "ids.txt"
    a_file.write_text(IDS[0])
    with pytest.raises(ConfigurationError, match=f"^{re.escape(str(a_file))} is a file, not a talktime output$"):
        output_status(str(a_file))
    other = tmp_path / "photos"
    other.mkdir()
    with pytest.raises(ConfigurationError, match=f"^{re.escape(str(other))} is not a talktime output"):
        output_status(str(other))
    (other / "holiday.jpg").write_bytes(b"\xff\xd8")
    with pytest.raises(ConfigurationError, match="is not a talktime output"):
        output_status(str(other))
    assert not missing.exists() and sorted(p.name for p in other.iterdir()) == ["holiday.jpg"]


def test_an_output_with_nothing_written_yet(tmp_path: Path) -> None:
    (tmp_path / "_talktime").mkdir()
    status = output_status(str(tmp_path))
    assert (status.ledger_state, status.ids, status.pending, status.talk_by_speaker) == ("none", 0, 0, None)
    assert (status.oldest_pending, status.next_to_expire, status.last_commit) == (None, None, None)
    assert status.files_per_table == dict.fromkeys(TABLE_NAMES, 0)
    assert status_lines(status)[1:3] == ["  ids: 0, nothing written yet", "  pending: none"]


def test_a_hundred_thousand_ids_are_counted_exactly(tmp_path: Path) -> None:
    n = 100_000
    ledger = pl.DataFrame(
        {
            "transcription_id": [f"00000000-0000-4000-8000-{i:012d}" for i in range(n)],
            "status": ["succeeded", "ongoing", "error", "failed"] * (n // 4),
            "final": [True, False, False, True] * (n // 4),
            "first_seen_at": pl.datetime_range(T0 - timedelta(hours=30), T0, interval="1s", eager=True).head(n),
            "last_polled_at": [T0] * n,
            "attempts": [1] * n,
            "batch_id": ["b"] * n,
            "fetched_date": ["2026-11-23"] * n,
        },
    ).cast(dict(LEDGER_SCHEMA))  # type: ignore[arg-type]
    (tmp_path / "_talktime").mkdir()
    write_ledger(tmp_path, ledger)
    status = output_status(str(tmp_path), now=T0)
    assert status.pending == n // 2 and status.ids_by_status["ongoing"] == n // 4
    pending = ledger.filter(~pl.col("final"))
    due = pending["first_seen_at"] + timedelta(hours=24)
    assert status.overdue == (due < T0).sum()
    assert status.expiring_within == ((due >= T0) & (due < T0 + timedelta(hours=1))).sum()


def test_an_output_on_s3(s3_endpoint: str) -> None:
    url = s3_url(s3_endpoint)
    write_output(url)
    status: OutputStatus = output_status(url)
    assert status.out.startswith("s3://talktime-test/") and "?" not in status.out
    assert status.ids_by_status == {"succeeded": 6, "ongoing": 1, "error": 2, "failed": 1}
    assert status.files_per_table == {"transcriptions": 3, "speaker_metrics": 2, "transcript_items": 2,
                                      "rejected_items": 2}  # fmt: skip
    assert status.rows_per_table is None  # a request per file: not counted on object storage by default
    assert output_status(url, rows=True, talk=False).rows_per_table == {
        "transcriptions": 10, "speaker_metrics": 12, "transcript_items": 12, "rejected_items": 0}  # fmt: skip
    assert status.talk_by_speaker is not None and status.talk_by_speaker.height == 2
    lease = Lease(Store(url), "s3 writer")
    lease.acquire()
    try:
        assert "run s3 writer" in (output_status(url, talk=False).lease or "")
    finally:
        lease.release()
    empty = s3_url(s3_endpoint)
    with pytest.raises(ConfigurationError, match=r"^nothing at s3://talktime-test/\w+: no talktime output there$"):
        output_status(empty)


def test_an_unreadable_data_file_or_lease_is_a_note_not_a_failure(out: Path) -> None:
    damaged = max((out / "speaker_metrics").rglob("*.parquet"), key=lambda p: pl.read_parquet(p).height)
    damaged.write_bytes(damaged.read_bytes()[:100])
    (out / "_talktime" / "lease.json").write_text("{not json")
    status = output_status(str(out))
    assert status.talk_by_speaker is None and status.lease is None
    assert status.ids == 10 and status.files_per_table["speaker_metrics"] == 2
    notes = "\n".join(status.notes)
    assert "1 data file(s) have no readable Parquet footer" in notes
    assert "talk time not computed: a speaker_metrics file is unreadable" in notes
    assert "lease.json is unreadable: writers refuse to start" in notes
