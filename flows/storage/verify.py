"""`talktime verify`: the ledger checked against the data files, and `--repair`.

Problems, counted per table (ids and file paths are shown, never a row's content):
- missing: ids the ledger holds whose current rows are gone: no `transcriptions` row in the
  batch the ledger names, fewer rows in another table than that row counts (`speaker_count`,
  `item_count`, `rejected_item_count`), or a file of that batch that cannot be read;
- extra: rows whose (id, batch, date) the ledger does not name (replaced rows left behind, a
  copied file, rows of an unknown batch or of an id the ledger does not hold);
- duplicated: rows repeating another's key (`TABLE_KEYS`) in the id's current batch;
- unerased: rows of an id `talktime forget` erased (the ledger marks it `forgotten`);
- unreadable: data files that are not Parquet files with their table's key columns;
- the ledger itself missing (with data present) or unreadable (it is then rebuilt from the data
  files, as `load_ledger` does, and the data checked against the rebuilt one), and commit
  records left by an interrupted run.

`repair` is a writer: under the output's lease it first finishes interrupted commits, then makes
one commit through `Transaction` (so a
crash during a repair is finished by the next run or repair, as a batch's would be): the ledger
without the missing ids (the next `talktime run` fetches them again), every affected file
rewritten with only its current, first-of-key rows (deleted when none is left), and unreadable
files moved to `_talktime/quarantine/` (kept for inspection, out of every table's glob).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from flows.errors import ConfigurationError, StorageError
from flows.storage.commit import PARQUET_OPTIONS, Transaction, new_batch_id, rewritable, to_arrow
from flows.storage.dataset import Dataset
from flows.storage.layout import COMMITS, QUARANTINE, checkpoint_path, data_path, file_location, new_file_id
from flows.storage.ledger import (
    FORGOTTEN,
    REBUILD_COLUMNS,
    UNREADABLE,
    DataFiles,
    Progress,
    ledger_from_data,
    read_data_files,
    read_stored,
)
from flows.storage.ledgerlog import collect, current_version, scan_ledger, with_erasures
from flows.storage.store import Store
from transforms.schemas import TABLES, conform_table

TABLE_KEYS: dict[str, tuple[str, ...]] = {
    "transcriptions": ("transcription_id",),
    "speaker_metrics": ("transcription_id", "speaker"),
    "transcript_items": ("transcription_id", "item_index"),
    "rejected_items": ("transcription_id", "item_index"),
}
COUNTED_BY = {
    "speaker_metrics": "speaker_count",
    "transcript_items": "item_count",
    "rejected_items": "rejected_item_count",
}
LOCATION_KEY = ["transcription_id", "batch_id", "fetched_date"]
EXAMPLES = 3
PREFIX = "talktime verify: "


@dataclass(frozen=True)
class Finding:
    """One kind of problem in one table."""

    problem: str  # missing | extra | duplicated | unreadable | unerased
    table: str
    count: int
    unit: str  # ids | rows | files
    examples: tuple[str, ...]


@dataclass
class Check:
    """What `check` found: the ledger as stored (or rebuilt), the data files' keys, the problems."""

    ledger: pl.DataFrame
    ledger_state: str  # ok | missing | unreadable | none (nothing written yet)
    files: int  # transcriptions files (what a rebuilt ledger was rebuilt from)
    pending_commits: int
    data: dict[str, DataFiles]
    findings: list[Finding] = field(default_factory=list)
    missing_ids: set[str] = field(default_factory=set)

    @property
    def problems(self) -> int:
        return len(self.findings) + (self.ledger_state in ("missing", "unreadable")) + bool(self.pending_commits)

    @property
    def consistent(self) -> bool:
        return self.problems == 0

    def add(self, problem: str, table: str, values: pl.Series, unit: str) -> None:
        if values.len():
            examples = tuple(values.unique(maintain_order=True).head(EXAMPLES).to_list())
            self.findings.append(Finding(problem, table, values.len(), unit, examples))
        if problem == "missing":
            self.missing_ids.update(values.to_list())


@dataclass(frozen=True)
class Repair:
    """What `repair` found, changed, and found afterwards."""

    before: Check
    after: Check
    ledger_written: bool = False
    dropped_ids: int = 0
    rows_removed: int = 0
    files_changed: int = 0
    quarantined: int = 0


def open_store(out: str) -> Store:
    """The output location; ConfigurationError when it does not exist."""
    store = Store(out)
    if store.fs.get_file_info(store.root).type == pafs.FileType.NotFound:
        where = out if store.local else "the --out location"
        raise ConfigurationError(f"{where} does not exist")
    return store


def verify(out: str, *, dates: tuple[str, str] | None = None, progress: Progress | None = None) -> Check:
    """Check an output location without changing it (only the partitions within `dates`, when given)."""
    return check(open_store(out), dates=dates, progress=progress)


def count_files(out: str, dates: tuple[str, str] | None = None) -> int:
    """The data files `verify` reads (for a progress bar)."""
    store = open_store(out)
    paths = [p for table in TABLES for p in store.list(table, ".parquet")]
    return sum(1 for p in paths if dates is None or dates[0] <= (file_location(p)[1] or "") <= dates[1])


def check(store: Store, *, dates: tuple[str, str] | None = None, progress: Progress | None = None) -> Check:
    """Compare the ledger with every data file (reads ids and keys, never text); with `dates`, only the
    partitions from dates[0] to dates[1] (ISO, inclusive) and the ids the ledger places there."""
    data = {table: read_data_files(store, table, _columns(table), dates, progress) for table in TABLES}
    ledger, state = _ledger(store, data, dates)
    pending = len(store.list(COMMITS, ".json"))
    found = Check(ledger, state, data["transcriptions"].files, pending, data)
    forgotten = ledger.filter(pl.col("status") == FORGOTTEN).select("transcription_id")
    held = ledger.filter(pl.col("status") != FORGOTTEN)
    for table, files in data.items():
        at_current = _current(files.rows, ledger)
        extra = files.rows.join(ledger, on=LOCATION_KEY, how="anti").join(forgotten, on="transcription_id", how="anti")
        duplicated = at_current.filter(~pl.struct(TABLE_KEYS[table]).is_first_distinct())
        unerased = files.rows.join(forgotten, on="transcription_id", how="semi")
        found.add("missing", table, _missing(held, table, at_current, data), "ids")
        found.add("unerased", table, unerased["transcription_id"], "rows")
        found.add("extra", table, extra["transcription_id"], "rows")
        found.add("duplicated", table, duplicated["transcription_id"], "rows")
        found.add("unreadable", table, pl.Series(files.unreadable, dtype=pl.String), "files")
    return found


def _columns(table: str) -> tuple[str, ...]:
    return (*REBUILD_COLUMNS, *COUNTED_BY.values()) if table == "transcriptions" else TABLE_KEYS[table]


def _current(rows: pl.DataFrame, ledger: pl.DataFrame) -> pl.DataFrame:
    """The rows in the batch the ledger names for their id, in file order."""
    return rows.join(ledger.select(LOCATION_KEY), on=LOCATION_KEY, how="semi").sort("path", "row")


def _ledger(store: Store, data: dict[str, DataFiles], dates: tuple[str, str] | None) -> tuple[pl.DataFrame, str]:
    """The ledger (only its ids placed within `dates`, read in one streaming pass, when given)."""
    version = current_version(store)
    within = pl.lit(True) if dates is None else pl.col("fetched_date").is_between(pl.lit(dates[0]), pl.lit(dates[1]))
    if version.complete and not version.empty:
        try:
            return collect(scan_ledger(store, version).filter(within)).sort("transcription_id"), "ok"
        except StorageError:
            state = "unreadable"
    else:
        state = "missing" if any(files.files for files in data.values()) or not version.empty else "none"
    return with_erasures(store, ledger_from_data(data["transcriptions"].rows)).filter(within), state


def _missing(ledger: pl.DataFrame, table: str, at_current: pl.DataFrame, data: dict[str, DataFiles]) -> pl.Series:
    """Ledger ids whose current rows in `table` are gone or in a file that cannot be read."""
    places = [file_location(path) for path in data[table].unreadable]
    unreadable = pl.DataFrame(places, schema={"batch_id": pl.String, "fetched_date": pl.String}, orient="row")
    in_unreadable = ledger.join(unreadable, on=["batch_id", "fetched_date"], how="semi")["transcription_id"]
    if table == "transcriptions":
        gone = ledger.join(at_current, on=LOCATION_KEY, how="anti")["transcription_id"]
    else:
        gone = _fewer_than_counted(table, at_current, _current(data["transcriptions"].rows, ledger))
    return pl.concat([in_unreadable, gone]).unique(maintain_order=True)


def _fewer_than_counted(table: str, at_current: pl.DataFrame, transcriptions: pl.DataFrame) -> pl.Series:
    """Ids with fewer distinct rows in `table` than their current transcriptions row counts."""
    counted = COUNTED_BY[table]
    expected = transcriptions.group_by("transcription_id").agg(pl.col(counted).first())
    found = at_current.group_by("transcription_id").agg(pl.struct(TABLE_KEYS[table]).n_unique().alias("found"))
    counts = expected.join(found, on="transcription_id", how="left").sort("transcription_id")
    return counts.filter(pl.col("found").fill_null(0) < pl.col(counted).fill_null(0))["transcription_id"]


def repair(out: str, *, run: str = "talktime verify --repair") -> Repair:
    """Finish interrupted commits, then fix what `check` finds in one commit (see the module's docstring).

    A writer like `run` and `compact`: it holds the output's lease throughout (LeaseHeldError while
    another writer holds it) and renews it right before its commit record.
    """
    open_store(out)
    with Dataset.writer(out, run, repairing=True) as (dataset, _):
        before = check(dataset.store)
        if before.consistent:
            return Repair(before, before)
        return _repair(dataset, before)


def _repair(dataset: Dataset, before: Check) -> Repair:
    store = dataset.store
    ledger = before.ledger.filter(~pl.col("transcription_id").is_in(sorted(before.missing_ids)))
    transaction = Transaction(store, new_batch_id())
    removed = changed = 0
    rewrites: dict[tuple[str, str], str] = {}  # (file id, date) of a changed file -> the new file id
    for table, files in before.data.items():
        for path, total, kept in _kept_rows(table, files.rows, ledger).iter_rows():
            if len(kept) < total:
                removed, changed = removed + total - len(kept), changed + 1
                where = file_location(path)
                if None not in where:
                    rewrites.setdefault(where, new_file_id())  # type: ignore[arg-type]
    kept_at = {
        table: {path: kept for path, _, kept in _kept_rows(table, files.rows, ledger).iter_rows()}
        for table, files in before.data.items()
    }
    for (file_id, date), new_id in sorted(rewrites.items()):  # a file's four tables move together
        for table in TABLES:
            path = data_path(table, date, file_id)
            if path in kept_at[table]:
                _rewrite(store, transaction, table, path, kept_at[table][path], data_path(table, date, new_id))
    moved = pl.DataFrame(
        [(b, d, n) for (b, d), n in rewrites.items()],
        schema={"batch_id": pl.String, "fetched_date": pl.String, "new_id": pl.String},
        orient="row",
    )
    ledger = (
        ledger.join(moved, on=["batch_id", "fetched_date"], how="left")
        .with_columns(pl.coalesce("new_id", "batch_id").alias("batch_id"))
        .drop("new_id")
    )
    unreadable = [path for files in before.data.values() for path in files.unreadable]
    for path in unreadable:  # copied into staging, placed in quarantine, then deleted: like any rewrite
        _quarantine(store, transaction, path)
    assert dataset.version is not None
    seq = dataset.version.seq + 1  # the whole ledger as a new checkpoint, placed after the data files
    transaction.stage(f"ledger-checkpoint-{seq}.parquet", ledger.to_arrow(), checkpoint_path(seq), compression="zstd")
    dataset.renew_lease()  # still the one writer, right before the commit record
    transaction.commit()
    dataset.fold_if_due()
    dropped = before.ledger.height - ledger.height
    return Repair(before, check(store), True, dropped, removed, changed, len(unreadable))


def _kept_rows(table: str, rows: pl.DataFrame, ledger: pl.DataFrame) -> pl.DataFrame:
    """(path, rows in the file, positions of the rows to keep) for every readable file of the table."""
    kept = _current(rows, ledger).filter(pl.struct(TABLE_KEYS[table]).is_first_distinct())
    kept = kept.group_by("path").agg(pl.col("row").alias("kept"))
    totals = rows.group_by("path").agg(pl.len().alias("total"))
    joined = totals.join(kept, on="path", how="left").with_columns(
        pl.col("kept").fill_null(pl.lit([], pl.List(pl.UInt32)))
    )
    return joined.select("path", "total", "kept").sort("path")


def _rewrite(store: Store, transaction: Transaction, table: str, path: str, kept: list[int], to: str) -> None:
    """Stage the file's rows at these positions under a new name, `to` (none when no row is kept),
    and the old file's deletion: a file is never rewritten in place."""
    transaction.delete(path)
    if not kept:
        return
    content = read_stored(store, path)
    try:
        frame = rewritable(pq.read_table(pa.BufferReader(content)), path).with_row_index("row")
        rows = conform_table(frame.filter(pl.col("row").is_in(kept)).drop("row"), table)
    except UNREADABLE:
        raise StorageError(f"{path} cannot be rewritten: it does not hold {table}'s columns") from None
    data = to_arrow(table, rows)
    transaction.stage(f"repair/{to}", data, to, **PARQUET_OPTIONS)


def _quarantine(store: Store, transaction: Transaction, path: str) -> None:
    staged = f"{transaction.staging}/quarantine/{path}"
    try:
        store.write_bytes(staged, read_stored(store, path))
    except OSError as exc:
        raise StorageError(f"cannot write to the output location: {exc}") from None
    transaction.adopt(staged, f"{QUARANTINE}/{path}")
    transaction.delete(path)


def describe(found: Check) -> list[str]:
    """The report: the ledger's state, interrupted commits, one line per problem and table, a verdict."""
    lines = [f"{PREFIX}ledger: {_ledger_state(found)}"]
    if found.pending_commits:
        lines.append(
            f"{PREFIX}pending: {found.pending_commits} commit record(s) of an interrupted run "
            "(the next run or --repair finishes them)"
        )
    lines += [
        f"  {f.problem:<11} {f.table:<17} {f.count} {f.unit:<5}   e.g. {', '.join(f.examples)}" for f in found.findings
    ]
    if found.consistent:
        return [*lines, f"{PREFIX}consistent"]
    return [
        *lines,
        f"{PREFIX}{found.problems} problem(s) found: `talktime verify --out DIR --repair` fixes them "
        "(missing ids are fetched again by the next run)",
    ]


def describe_repair(done: Repair) -> list[str]:
    """The report before the repair, what was changed, and the verdict after it."""
    if done.before.consistent:
        return describe(done.before)
    ledger = "written" if done.ledger_written else "unchanged"
    changes = (
        f"{PREFIX}repaired: ledger {ledger} ({done.after.ledger.height} ids), "
        f"{done.dropped_ids} ids dropped (the next run fetches them again), "
        f"{done.rows_removed} rows removed from {done.files_changed} files, "
        f"{done.quarantined} unreadable files moved to {QUARANTINE}/"
    )
    after = describe(done.after) if not done.after.consistent else [f"{PREFIX}consistent"]
    return [*describe(done.before)[:-1], changes, *after]


def _ledger_state(found: Check) -> str:
    rebuilt = f"rebuilt from {found.files} data files ({found.ledger.height} ids)"
    return {
        "ok": f"ok ({found.ledger.height} ids)",
        "missing": f"missing, {rebuilt}",
        "unreadable": f"unreadable (truncated or corrupt), {rebuilt}",
        "none": "none (nothing written yet)",
    }[found.ledger_state]
