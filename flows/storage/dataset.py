"""`Dataset`: one output location, its ledger, and the single writer's commits.

The flow opens the dataset (recovering what a crash left), plans from its ledger, and hands each
batch task a read-only snapshot of the ledger (`_talktime/runs/{run}/ledger.parquet`) so the
task can tell, on any machine, which ids are final and what status each had. Tasks stage their
files; the flow commits the staged batches here, one at a time, in order.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import UTC, datetime

import polars as pl

from flows.storage.commit import (
    INTERNAL,
    PARQUET_OPTIONS,
    Transaction,
    data_path,
    recover,
    staging_dir,
    to_arrow,
)
from flows.storage.lease import Lease, LeaseLostError, LeaseRecord
from flows.storage.ledger import LEDGER_PATH, load_ledger, superseded, updated_ledger
from flows.storage.store import Store
from transforms.schemas import TABLES

TERMINAL = ("succeeded", "failed")
SNAPSHOT_COLUMNS = ("transcription_id", "status", "final")


@dataclass(frozen=True)
class StagedFiles:
    """What a batch task staged: the batch, its partition, rows per table (empty: no files)."""

    batch_id: str
    fetched_date: str
    rows: dict[str, int]


class Dataset:
    """The four tables and the ledger under `out`; the only writer of both, once it holds the lease."""

    lease: Lease | None = None  # set by acquire_lease

    def __init__(self, out: str) -> None:
        self.out = out
        self.store = Store(out)

    @functools.cached_property
    def ledger(self) -> pl.DataFrame:
        """The ledger, read on first use (after `recover`, which reloads it, when a run opens the dataset)."""
        return load_ledger(self.store)

    def acquire_lease(self, run: str) -> LeaseRecord | None:
        """Become the output's one writer (LeaseHeldError if another live writer is) and keep the
        lease renewed in the background; the stale lease of a dead or expired writer taken over, if any."""
        lease = Lease(self.store, run)
        stale = lease.acquire()
        lease.keep_alive()
        self.lease = lease
        return stale

    def renew_lease(self) -> None:
        """Check, right before a commit, that this is still the one writer (LeaseLostError if not)."""
        if self.lease is None:
            raise LeaseLostError(f"{self.store.location}: this dataset was opened without the writer's lease")
        self.lease.renew()

    def release_lease(self) -> None:
        """Give the lease up (if still held: never another writer's)."""
        if self.lease is not None:
            self.lease.release()

    def recover(self) -> int:
        """Finish or drop what a crashed run left (under the lease, before any batch stages); batches finished."""
        if self.lease is None:
            raise LeaseLostError(f"{self.store.location}: recovery needs the writer's lease")
        finished = recover(self.store, self.lease)
        self.store.delete_dir(f"{INTERNAL}/runs")
        self.ledger = load_ledger(self.store)
        return finished

    def write_snapshot(self, run_id: str) -> str:
        """The ledger's (id, status, final) as of now, for this run's batch tasks; its path."""
        path = f"{INTERNAL}/runs/{run_id}/ledger.parquet"
        self.store.write_parquet(path, self.ledger.select(SNAPSHOT_COLUMNS).to_arrow(), compression="zstd")
        return path

    def drop_snapshot(self, run_id: str) -> None:
        self.store.delete_dir(f"{INTERNAL}/runs/{run_id}")

    def commit(self, staged: StagedFiles, polled: pl.DataFrame, *, run_batches: frozenset[str]) -> pl.DataFrame:
        """Commit one staged batch; returns the polled rows that counted.

        An id whose rows an earlier batch of the same run wrote with a terminal status keeps
        them against a later `ongoing` record (ingest reads the same id more than once).
        """
        polled = self._drop_regressions(staged, polled, run_batches)
        written = polled.filter("written")["transcription_id"]
        now = datetime.now(UTC)
        ledger = updated_ledger(self.ledger, polled, staged.batch_id, staged.fetched_date, now)
        transaction = Transaction(self.store, staged.batch_id)
        for table in staged.rows:
            transaction.adopt(f"{staging_dir(staged.batch_id)}/{table}.parquet",
                              data_path(table, staged.fetched_date, staged.batch_id))  # fmt: skip
        transaction.stage("ledger.parquet", ledger.to_arrow(), LEDGER_PATH, compression="zstd")
        transaction.supersede(superseded(self.ledger, written))
        transaction.commit()
        self.ledger = ledger
        return polled

    def _drop_regressions(self, staged: StagedFiles, polled: pl.DataFrame, run_batches: frozenset[str]) -> pl.DataFrame:
        earlier = self.ledger.filter(
            pl.col("batch_id").is_in(sorted(run_batches)) & pl.col("status").is_in(TERMINAL)
        ).select("transcription_id")
        regress = polled.join(earlier, on="transcription_id", how="semi").filter(pl.col("status") == "ongoing")
        if regress.is_empty():
            return polled
        ids = regress["transcription_id"].implode()
        for table in staged.rows:
            path = f"{staging_dir(staged.batch_id)}/{table}.parquet"
            kept = pl.DataFrame(self.store.read_parquet(path)).filter(~pl.col("transcription_id").is_in(ids))
            data = to_arrow(table, kept.cast(dict(TABLES[table])))  # type: ignore[arg-type]
            self.store.write_parquet(path, data, **PARQUET_OPTIONS)
        return polled.filter(~pl.col("transcription_id").is_in(ids))


@functools.lru_cache(maxsize=4)
def read_snapshot(out: str, path: str) -> pl.DataFrame:
    """A run's ledger snapshot (read once per process and run)."""
    return pl.DataFrame(Store(out).read_parquet(path))


def prior_statuses(out: str, snapshot: str, ids: pl.Series) -> pl.DataFrame:
    """(transcription_id, status, final) from the snapshot for these ids (absent: never seen)."""
    return read_snapshot(out, snapshot).filter(pl.col("transcription_id").is_in(ids.implode()))
