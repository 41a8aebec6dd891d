"""Small builders shared by the tests."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl

from flows.outcomes import Outcome
from flows.transform import transform_outcomes

TID = "5b0c0a44-8a38-4a0e-9d52-6f1b0c6f7e01"
FETCHED_AT = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def item(speaker: Any, start: Any, end: Any, text: Any = "word", **extra: Any) -> dict[str, Any]:
    """A dialect-A item."""
    return {"speaker": speaker, "start_time_ms": start, "end_time_ms": end, "text": text, **extra}


def tables_for(items: list[Any], tid: str = TID) -> dict[str, pl.DataFrame]:
    """The four tables for one succeeded transcription with these raw items."""
    return transform_outcomes([Outcome(tid, "succeeded", FETCHED_AT, api_version="2024-04-22", items=items)])


def metrics_by_speaker(items: list[Any]) -> dict[str, dict[str, Any]]:
    """speaker -> that speaker's metrics row."""
    rows = tables_for(items)["speaker_metrics"].to_dicts()
    return {row["speaker"]: row for row in rows}


def commit_outcomes(out: str, outcomes: list[Outcome]) -> None:
    """Stage and commit these outcomes as one batch of a run of their own (as the flows do)."""
    from flows.batch import BatchSpec, stage_outcomes
    from flows.storage.dataset import Dataset

    with Dataset.writer(out, "tests") as (dataset, _):
        staged = stage_outcomes(out, BatchSpec.new(1, dataset.snapshot()), outcomes)
        dataset.commit(staged.files, staged.polled, run_batches=frozenset())


def ledger_files(out: str | Path) -> list[Path]:
    """The stored ledger's files (checkpoint and log entries, and an old release's ledger.parquet)."""
    root = Path(out) / "_talktime"
    return sorted((root / "ledger").glob("*.parquet")) + [p for p in [root / "ledger.parquet"] if p.exists()]


def newest_ledger_file(out: str | Path) -> Path:
    """The ledger file a reader opens last: the newest log entry, else the checkpoint."""
    files = ledger_files(out)
    logs = [p for p in files if p.name.startswith("log-")]
    return logs[-1] if logs else files[-1]


def drop_ledger(out: str | Path) -> None:
    """Delete the whole stored ledger, as an operator's mistake would."""
    for path in ledger_files(out):
        path.unlink()


def write_ledger(out: str | Path, ledger: pl.DataFrame) -> None:
    """Make `ledger` the whole stored ledger (as an output written before the ledger log holds it)."""
    drop_ledger(out)
    ledger.write_parquet(Path(out) / "_talktime" / "ledger.parquet")


def wait_until_healthy(process: Any, port: int, what: str, timeout_s: float = 30.0) -> None:
    """Wait until a receiver started as `process` answers 200 on /healthz at `port` (AssertionError
    naming `what` if it exits or does not answer in time)."""
    import time

    import httpx

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert process.poll() is None and time.monotonic() < deadline, f"{what} did not start"
        time.sleep(0.1)
