"""The ledger's rules, on tiny literal frames."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import polars as pl
import pytest

from flows.outcomes import Outcome
from flows.storage.ledger import LEDGER_SCHEMA, is_final, plan_run, polled_frame, superseded, updated_ledger

NOW = datetime(2026, 11, 23, 12, tzinfo=UTC)
A, B, C, D = (f"00000000-0000-4000-8000-00000000000{n}" for n in range(4))


def outcome(tid: str, status: str, code: str | None = None) -> Outcome:
    return Outcome(tid, status, NOW, error_code=code)


def changed(ledger: pl.DataFrame, outcomes: list[Outcome]) -> list[Outcome]:
    """The outcomes whose status differs from the ledger's (or whose id is new), as the batch task decides."""
    ids = [o.transcription_id for o in outcomes]
    known = ledger.filter(pl.col("transcription_id").is_in(ids)).select("transcription_id", "status")
    status = dict(known.iter_rows())
    return [o for o in outcomes if status.get(o.transcription_id) != o.status]


def update(ledger, polled: list[Outcome], written: list[Outcome], batch: str, at: datetime = NOW):
    frame = polled_frame(polled, {o.transcription_id for o in written})
    return updated_ledger(ledger, frame, batch, "2026-11-23", at)


def ledger_after(*batches: list[Outcome], at: datetime = NOW):
    ledger = pl.DataFrame(schema=LEDGER_SCHEMA)
    for n, polled in enumerate(batches):
        ledger = update(ledger, polled, changed(ledger, polled), f"b{n}", at)
    return ledger


@pytest.mark.parametrize(
    ("status", "code", "final"),
    [("succeeded", None, True), ("failed", "422", True), ("not_found", None, True), ("expired", "expired", True),
     ("ongoing", None, False), ("error", "retries_exhausted", False), ("error", "invalid_id", True)],
)  # fmt: skip
def test_which_outcomes_are_final(status: str, code: str | None, final: bool) -> None:
    assert is_final(outcome(A, status, code)) is final


def test_plan_skips_final_expires_old_pending_and_fetches_the_rest() -> None:
    ledger = ledger_after([outcome(A, "succeeded"), outcome(B, "ongoing")], at=NOW - timedelta(hours=30))
    ledger = update(ledger, [outcome(C, "error", "retries_exhausted")], [], "b9")
    plan = plan_run(ledger, [A, B, C, D], NOW, timedelta(hours=24))
    assert plan.already_final == 1
    assert [o.transcription_id for o in plan.expired] == [B] and plan.expired[0].status == "expired"
    assert plan.to_fetch == [C, D]


def test_only_changed_statuses_are_written_and_attempts_count_polls() -> None:
    ledger = ledger_after([outcome(A, "ongoing"), outcome(B, "ongoing")])
    again = [outcome(A, "ongoing"), outcome(B, "succeeded")]
    assert [o.transcription_id for o in changed(ledger, again)] == [B]
    written = pl.Series([o.transcription_id for o in changed(ledger, again)])
    assert superseded(ledger, written) == {("b0", "2026-11-23"): {B}}
    after = update(ledger, again, changed(ledger, again), "b1")
    rows = {r["transcription_id"]: r for r in after.to_dicts()}
    assert (rows[A]["attempts"], rows[A]["batch_id"], rows[A]["final"]) == (2, "b0", False)
    assert (rows[B]["attempts"], rows[B]["batch_id"], rows[B]["final"]) == (2, "b1", True)
