"""`Dataset`: one output location, its ledger, and the single writer's commits.

The one door every writer opens (`run`, `ingest`, `compact`, `verify --repair`): `Dataset.writer`
takes the lease, finishes or drops what a crashed writer left, and brings the stored ledger into
shape (rebuilt from the data when it is missing, folded when its log has grown); it releases the
lease at the end, also after a failure.

What a writer holds in memory is bounded by its work, not by the output's history: the rows of
ids that are not final yet (they can change), the rows of ids it committed itself, and, for a
`--refetch`, the rows of the ids it polls again. Batch tasks look up the ids they read in the
ledger as of the run's start (`ledger_version`, `prior_statuses`); a commit appends one log
entry (`flows.storage.ledgerlog`) and moves the rows it replaces into new files.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import polars as pl

from flows.storage import ledgerlog
from flows.storage.commit import PARQUET_OPTIONS, Transaction, recover, to_arrow
from flows.storage.layout import RUNS, data_path, log_path, staging_dir
from flows.storage.lease import Lease, LeaseLostError, LeaseRecord
from flows.storage.ledger import LEDGER_SCHEMA, superseded, updated_ledger
from flows.storage.store import Store
from transforms.schemas import TABLES

TERMINAL = ("succeeded", "failed")


class RowsAtHand:
    """Ledger rows kept by id (a dict: looking up, replacing or moving a batch's ids costs the batch,
    not the number of rows held, which grows with a long run)."""

    def __init__(self, rows: pl.DataFrame | None = None) -> None:
        self._rows: dict[str, tuple[object, ...]] = {}
        if rows is not None:
            self.upsert(rows)

    def __len__(self) -> int:
        return len(self._rows)

    def upsert(self, rows: pl.DataFrame) -> None:
        """Add these rows (LEDGER_SCHEMA), replacing those of the same ids."""
        for values in rows.select(LEDGER_SCHEMA.names()).iter_rows():
            self._rows[values[0]] = values

    def rows(self, ids: pl.Series | Sequence[str]) -> pl.DataFrame:
        """The rows held of these ids (LEDGER_SCHEMA)."""
        found = [self._rows[tid] for tid in dict.fromkeys(ids) if tid in self._rows]
        return pl.DataFrame(found, schema=LEDGER_SCHEMA, orient="row")

    def move(self, moves: pl.DataFrame) -> None:
        """Rows held follow their ids into new files (MOVE_SCHEMA)."""
        at = LEDGER_SCHEMA.names().index("batch_id")
        for tid, file_id, date in moves.select("transcription_id", "batch_id", "fetched_date").iter_rows():
            if tid in self._rows:
                values = self._rows[tid]
                self._rows[tid] = (*values[:at], file_id, date, *values[at + 2 :])


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
        self.version: ledgerlog.Version | None = None  # the stored ledger as of the last open or commit
        self.known = RowsAtHand()  # rows at hand (see the module's docstring)
        self.written_dates: set[str] = set()  # partitions this writer added files to

    @classmethod
    @contextlib.contextmanager
    def writer(cls, out: str, run: str, *, repairing: bool = False) -> Iterator[tuple[Dataset, LeaseRecord | None]]:
        """The dataset opened as its one writer (lease, recovery, ledger in shape); released at the end.
        `repairing`: the ledger is left as it is, even unreadable (`verify --repair` replaces it)."""
        dataset = cls(out)
        stale = dataset.acquire_lease(run)
        try:
            dataset.recover(settle=not repairing)
            yield dataset, stale
        finally:
            dataset.release_lease()

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

    @property
    def ledger(self) -> pl.DataFrame:
        """The whole ledger, read now (for tools and tests; a run never needs it whole)."""
        return ledgerlog.load_ledger(self.store)

    def recover(self, *, settle: bool = True) -> int:
        """Finish or drop what a crashed writer left, then put the stored ledger in shape (rebuilt
        from the data files if missing, folded if its log has grown); batches finished."""
        if self.lease is None:
            raise LeaseLostError(f"{self.store.location}: recovery needs the writer's lease")
        finished = recover(self.store, self.lease)
        self.store.delete_dir(RUNS)
        if settle:
            self._settle_ledger()
        else:
            self.version = ledgerlog.current_version(self.store)
        return finished

    def _settle_ledger(self) -> None:
        ledgerlog.check_readable(self.store)
        version = ledgerlog.current_version(self.store)
        if not version.complete or version.empty:
            ledger, state = ledgerlog.stored_or_rebuilt(self.store, version)
            if state == "rebuilt":
                ledgerlog.replace_all(self.store, ledger, version.seq)
        elif ledgerlog.fold_due(self.store, version):
            ledgerlog.fold(self.store, version)
        else:
            ledgerlog.drop_stale(self.store, version)
        self.version = ledgerlog.current_version(self.store)
        self.known = RowsAtHand(ledgerlog.pending_rows(self.store, self.version))

    def fold_if_due(self) -> None:
        """Fold the ledger's log if it has grown (a writer's end: no batch task reads the ledger now)."""
        version = ledgerlog.current_version(self.store)
        if version.complete and not version.empty and ledgerlog.fold_due(self.store, version):
            ledgerlog.fold(self.store, version)
            self.version = ledgerlog.current_version(self.store)

    def snapshot(self) -> str:
        """The ledger version this run's batch tasks read (`prior_statuses`)."""
        assert self.version is not None, "open the dataset as its writer first"
        return self.version.token()

    def fetch_rows(self, ids: Sequence[str]) -> None:
        """Bring the rows of these (final) ids to hand: a `--refetch` replaces them."""
        if ids and self.version is not None:
            found = ledgerlog.rows_of(self.store, self.version, ids)
            self.known.upsert(found)

    def plan_rows(self, ids: Sequence[str]) -> pl.DataFrame:
        """(transcription_id, status, final, first_seen_at) of these ids as of the run's start: what
        planning a run needs (`first_seen_at` is at hand for every id that is not final)."""
        states = prior_statuses(self.out, self.snapshot(), pl.Series(list(ids), dtype=pl.String))
        seen = self.known.rows(list(ids)).select("transcription_id", "first_seen_at")
        return states.join(seen, on="transcription_id", how="left")

    def commit(self, staged: StagedFiles, polled: pl.DataFrame, *, run_batches: frozenset[str]) -> pl.DataFrame:
        """Commit one staged batch; returns the polled rows that counted.

        An id whose rows an earlier batch of the same run wrote with a terminal status keeps
        them against a later `ongoing` record (ingest reads the same id more than once).
        """
        assert self.version is not None, "open the dataset as its writer first"
        polled = self._drop_regressions(staged, polled, run_batches)
        written = polled.filter("written")["transcription_id"]
        prior = self.known.rows(polled["transcription_id"])
        delta = updated_ledger(prior, polled, staged.batch_id, staged.fetched_date, datetime.now(UTC))
        transaction = Transaction(self.store, staged.batch_id)
        for table in staged.rows:
            transaction.adopt(f"{staging_dir(staged.batch_id)}/{table}.parquet",
                              data_path(table, staged.fetched_date, staged.batch_id))  # fmt: skip
        moves = transaction.supersede(superseded(prior, written))  # new files placed before the entry
        self.known.upsert(delta)
        self._commit(transaction, pl.concat([delta, _as_entries(moves)]), moves)
        if staged.rows:
            self.written_dates.add(staged.fetched_date)
        return polled

    def forget_rows(self, transaction: Transaction, entry: pl.DataFrame, moves: pl.DataFrame) -> None:
        """Commit a `talktime forget`: `entry` marks the ids forgotten, `moves` the rows it kept."""
        self.renew_lease()
        self.known.upsert(entry)
        self._commit(transaction, pl.concat([entry, _as_entries(moves)]), moves)

    def commit_moves(self, transaction: Transaction, moves: pl.DataFrame) -> None:
        """Commit a transaction that only moved rows into new files (a compaction): the moves are its
        ledger entry. The lease is checked right before the commit record."""
        self.renew_lease()
        self._commit(transaction, _as_entries(moves), moves)

    def _commit(self, transaction: Transaction, entry: pl.DataFrame, moves: pl.DataFrame) -> None:
        """Stage the ledger entry (placed after every data file the transaction adds), commit, and
        keep the version and the rows at hand in step."""
        assert self.version is not None, "open the dataset as its writer first"
        seq = self.version.seq + 1
        transaction.stage(f"ledger-{seq}.parquet", entry.to_arrow(), log_path(seq), compression="zstd")
        transaction.commit()
        self.version = ledgerlog.Version(self.version.checkpoint, self.version.checkpoint_seq,
                                         (*self.version.entries, seq))  # fmt: skip
        self.known.move(moves)

    def _drop_regressions(self, staged: StagedFiles, polled: pl.DataFrame, run_batches: frozenset[str]) -> pl.DataFrame:
        earlier = (
            self.known.rows(polled["transcription_id"])
            .filter(pl.col("batch_id").is_in(sorted(run_batches)) & pl.col("status").is_in(TERMINAL))
            .select("transcription_id")
        )
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


def _as_entries(moves: pl.DataFrame) -> pl.DataFrame:
    """Moves as ledger log rows: only batch_id and fetched_date set."""
    return (
        moves.with_columns(pl.lit(None, pl.String).alias(c) for c in LEDGER_SCHEMA.names() if c not in moves.columns)
        .select(LEDGER_SCHEMA.names())
        .cast(LEDGER_SCHEMA)
    )


def prior_statuses(out: str, snapshot: str, ids: pl.Series) -> pl.DataFrame:
    """(transcription_id, status, final) from the ledger version `snapshot` for these ids (absent: never seen)."""
    return ledgerlog.prior_of(out, snapshot, ids)
