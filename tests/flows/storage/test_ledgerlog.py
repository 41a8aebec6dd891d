"""The ledger's checkpoint and log: overlay, folds (and a fold cut short), the compact index."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from flows.outcomes import Outcome
from flows.storage import ledgerlog
from flows.storage.dataset import Dataset
from flows.storage.layout import checkpoint_path
from flows.storage.ledger import LEDGER_SCHEMA, overlay
from flows.storage.store import Store
from tests.helpers import commit_outcomes, item

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
IDS = [f"00000000-0000-4000-8000-{n:012d}" for n in range(12)]


def row(tid: str, status: str | None, batch: str, final: bool | None = True) -> dict[str, object]:
    state = status is not None
    return {"transcription_id": tid, "status": status, "final": final if state else None,
            "first_seen_at": NOW if state else None, "last_polled_at": NOW if state else None,
            "attempts": 1 if state else None, "batch_id": batch, "fetched_date": "2026-12-04"}  # fmt: skip


def test_entries_overlay_the_checkpoint_in_order_and_a_move_changes_only_the_location() -> None:
    base = pl.DataFrame([row("a", "ongoing", "b1", False), row("b", "succeeded", "b1")], schema=LEDGER_SCHEMA)
    entries = pl.DataFrame(
        [row("a", "succeeded", "b2"), row("b", None, "m1"), row("c", None, "m1"), row("a", None, "m2")],
        schema=LEDGER_SCHEMA,
    )
    got = overlay(base, entries).sort("transcription_id")
    assert got.select("transcription_id", "status", "final", "batch_id").rows() == [
        ("a", "succeeded", True, "m2"),  # its new state, then moved with the rows it kept
        ("b", "succeeded", True, "m1"),  # only moved
    ]  # a move of an id the ledger never held ("c") is dropped


def outcomes(ids: list[str], status: str = "succeeded") -> list[Outcome]:
    items = [item("doctor", 0, 10)] if status == "succeeded" else None
    return [Outcome(tid, status, NOW, api_version="2024-04-22", items=items) for tid in ids]


def test_a_fold_writes_one_checkpoint_equal_to_checkpoint_and_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = str(tmp_path)
    for start in range(0, 12, 3):
        commit_outcomes(out, outcomes(IDS[start : start + 3], "ongoing"))
    commit_outcomes(out, outcomes(IDS[:6]))
    store = Store(out)
    before = ledgerlog.read_ledger(store)
    version = ledgerlog.current_version(store)
    assert version.checkpoint is None and version.entries == (1, 2, 3, 4, 5)
    monkeypatch.setattr(ledgerlog, "FOLD_MIN_ROWS", 5)
    assert ledgerlog.fold_due(store, version)
    with Dataset.writer(out, "tests"):  # a writer opening the output folds it
        pass
    folded = ledgerlog.current_version(store)
    assert (folded.checkpoint, folded.entries, folded.stale) == (checkpoint_path(5), (), ())
    assert sorted(p.name for p in (tmp_path / "_talktime" / "ledger").iterdir()) == ["checkpoint-000000000005.parquet"]
    assert_frame_equal(ledgerlog.read_ledger(store), before)
    commit_outcomes(out, outcomes(IDS[6:9]))  # and the log grows on from there
    assert ledgerlog.current_version(store).entries == (6,)
    assert ledgerlog.read_ledger(store).filter(pl.col("status") == "succeeded").height == 9


def test_a_fold_cut_short_before_its_deletes_leaves_files_readers_skip(tmp_path: Path) -> None:
    out = str(tmp_path)
    commit_outcomes(out, outcomes(IDS[:3], "ongoing"))
    commit_outcomes(out, outcomes(IDS[:2]))
    store = Store(out)
    version = ledgerlog.current_version(store)
    before = ledgerlog.read_ledger(store, version)
    ledgerlog.write_checkpoint(store, ledgerlog.scan_ledger(store, version), version.seq)  # killed here
    cut = ledgerlog.current_version(store)
    assert cut.entries == () and len(cut.stale) == 2
    assert_frame_equal(ledgerlog.read_ledger(store, cut), before)
    with Dataset.writer(out, "tests"):  # the next writer deletes them
        pass
    assert ledgerlog.current_version(store).stale == ()


UPPER = "ABCDEF00-0000-4000-8000-000000000001"  # stored lower-case by talktime; looked up as it is


def test_the_index_finds_uuids_and_other_ids_and_nothing_else(tmp_path: Path) -> None:
    ledger = pl.DataFrame(
        [row(IDS[0], "succeeded", "b"), row(UPPER, "ongoing", "b", False), row("not-a-uuid", "error", "b")],
        schema=LEDGER_SCHEMA,
    )
    entries = pl.DataFrame([row(IDS[3], "succeeded", "b2"), row(IDS[0], None, "m")], schema=LEDGER_SCHEMA)
    index = ledgerlog.PriorIndex(ledgerlog.with_halves(ledger.lazy()), entries)
    asked = pl.Series([IDS[0], UPPER, "not-a-uuid", IDS[2], IDS[0][:-1] + "f", IDS[3]])
    got = index.lookup(asked).sort("transcription_id")
    assert got.rows() == sorted([(IDS[0], "succeeded", True), (UPPER, "ongoing", False),
                                 ("not-a-uuid", "error", True), (IDS[3], "succeeded", True)])  # fmt: skip
    assert index.uuids.height == 1 and index.others.height == 2  # halves of lower-case UUIDs only
