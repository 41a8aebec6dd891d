"""An output written by the release before the ledger log (commit f670d22: one `_talktime/ledger.parquet`
rewritten by every commit) is read and extended by this one without a manual step."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path

import polars as pl

from flows.cli import main
from flows.outcomes import Outcome
from flows.storage.ledgerlog import current_version, load_ledger
from flows.storage.status import output_status
from flows.storage.store import Store
from flows.storage.verify import verify
from tests.helpers import commit_outcomes, item

FIXTURE = Path(__file__).resolve().parents[2] / "fixtures" / "output-0.1.0-f670d22"
IDS = [f"00000000-0000-4000-8000-0000000000{n:02d}" for n in range(6)]
NEW = "00000000-0000-4000-8000-000000000099"
NOW = datetime(2026, 12, 4, 16, 0, tzinfo=UTC)
ITEMS = [item("doctor", 0, 1000, "Hello."), item("patient", 1500, 4000, "Hi.")]


def transcriptions(out: Path) -> pl.DataFrame:
    return pl.read_parquet(out / "transcriptions" / "**" / "*.parquet")


def test_an_output_of_the_previous_release_is_read_and_extended_without_a_manual_step(tmp_path: Path) -> None:
    out = tmp_path / "out"
    shutil.copytree(FIXTURE, out)
    assert not (out / "_talktime" / "ledger").exists()  # the old layout: one ledger file
    stored = load_ledger(Store(str(out)))
    assert dict(zip(stored["transcription_id"], stored["status"], strict=True)) == dict(
        zip(IDS, ["succeeded", "succeeded", "ongoing", "failed", "error", "succeeded"], strict=True)
    )
    assert output_status(str(out)).ids == 6 and verify(str(out)).consistent

    # The ongoing id succeeds (its rows leave a file the old release wrote), a new id arrives.
    commit_outcomes(str(out), [Outcome(IDS[2], "succeeded", NOW, api_version="2024-04-22", items=ITEMS),
                               Outcome(NEW, "succeeded", NOW, api_version="2024-04-22", items=ITEMS)])  # fmt: skip
    ledger = load_ledger(Store(str(out)))
    assert ledger.height == 7
    assert ledger.filter(pl.col("transcription_id") == IDS[2])["status"].to_list() == ["succeeded"]
    rows = transcriptions(out)
    assert sorted(rows["transcription_id"]) == sorted([*IDS, NEW])  # every id exactly once in a plain glob
    assert rows.filter(pl.col("transcription_id") == IDS[2])["status"].to_list() == ["succeeded"]
    assert verify(str(out)).consistent

    assert main(["compact", "--out", str(out)]) == 0
    assert sorted(transcriptions(out)["transcription_id"]) == sorted([*IDS, NEW])
    assert verify(str(out)).consistent
    compacted = load_ledger(Store(str(out)))
    assert compacted.drop("batch_id").equals(ledger.drop("batch_id"))  # a compaction only moves rows
    assert not current_version(Store(str(out))).empty
