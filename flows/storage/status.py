"""`talktime status`: what an output location holds, read without changing anything.

Ids by status (final and pending), how old the oldest pending id is and when pending ids expire,
data files (and their rows, from Parquet footers) per table, when the last batch was committed,
commit records an interrupted run left, who holds the writer's lease, and talk time by speaker
over the whole dataset. Never a transcript's text.

Read-only: it takes no lease and writes nothing. A missing ledger is rebuilt in memory from the
data files (as `load_ledger` does for every command) and the status says so; an unreadable one is
the usual StorageError pointing at `talktime verify --repair`. Reads are not one snapshot: a
commit landing meanwhile can make counts and talk time disagree by that one batch, and talk time,
summed over the files as a plain glob reads them (never the whole table in memory), can count the
rows a commit replaces twice while that commit is applied.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

import polars as pl
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from flows.errors import ConfigurationError, StorageError
from flows.settings import DEFAULT_EXPIRE_AFTER_S
from flows.storage.layout import COMMITS, INTERNAL
from flows.storage.lease import LEASE_PATH, LeaseRecord
from flows.storage.ledgerlog import collect, current_version, scan_ledger, stored_or_rebuilt
from flows.storage.store import Store
from flows.summary import TABLE_NAMES, RunSummary
from transforms.schemas import UTC_TIMESTAMP

DEFAULT_HORIZON_S = 3600.0
PREFIX = "talktime status: "
LedgerState = Literal["stored", "rebuilt", "none"]


@dataclass(frozen=True)
class OutputStatus:
    """What one output location holds, as of `now`."""

    out: str  # the location without credentials
    now: datetime
    ledger_state: LedgerState  # stored | rebuilt (in memory: the file is missing) | none (nothing written)
    ids_by_status: dict[str, int]  # every status present, final and pending
    pending: int  # ids whose status is not final (re-polled by the next run)
    pending_by_status: dict[str, int]
    oldest_pending: datetime | None  # first_seen_at of the oldest pending id
    expire_after: timedelta
    next_to_expire: datetime | None  # earliest first_seen_at + expire_after among pending ids
    overdue: int  # pending ids already past expire_after (the next run marks them expired)
    horizon: timedelta
    expiring_within: int  # pending ids that reach expire_after within `horizon` from now
    files_per_table: dict[str, int]
    rows_per_table: dict[str, int] | None  # from Parquet footers; None when not counted
    commit_records: int  # left by an interrupted run, or a commit being applied right now
    # The latest `last_polled_at`: the time the last batch was committed (compaction and repair commits
    # change no id's state and do not count); with a rebuilt ledger, its newest row's fetched_at.
    last_commit: datetime | None
    lease: str | None  # the live writer holding the lease, if any
    talk_by_speaker: pl.DataFrame | None  # speaker, talk_minutes, share; None when not read or no data
    notes: tuple[str, ...] = ()  # what an operator should know (a rebuilt ledger, unreadable files...)

    @property
    def ids(self) -> int:
        return sum(self.ids_by_status.values())


def output_status(
    out: str,
    *,
    now: datetime | None = None,
    expire_after_s: float = DEFAULT_EXPIRE_AFTER_S,
    horizon_s: float = DEFAULT_HORIZON_S,
    talk: bool = True,
    rows: bool | None = None,
) -> OutputStatus:
    """The status of the output at `out` (a directory or `s3://bucket/prefix`).

    `now` (naive: taken as UTC) is the time expiry and the lease's liveness are judged at.
    `rows`: count rows from every data file's footer (one small read per file); None counts them
    on local disk only, where that is cheap. `talk`: read `speaker_metrics` for talk time.
    ConfigurationError when there is no talktime output at `out`; StorageError when the storage
    cannot be read or the ledger is unreadable.
    """
    store = Store(out)
    when = _utc(now or datetime.now(UTC))
    try:
        _check_location(store)
        return _status(store, out, when, timedelta(seconds=expire_after_s), timedelta(seconds=horizon_s), talk, rows)
    except OSError as exc:
        raise StorageError(f"cannot read {store.location}: {exc}") from None


def _utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)


def _check_location(store: Store) -> None:
    """ConfigurationError unless `store` is an existing talktime output (a `_talktime` or a table folder)."""
    kind = store.fs.get_file_info(store.root).type
    if kind == pafs.FileType.NotFound:
        raise ConfigurationError(f"nothing at {store.location}: no talktime output there")
    if kind != pafs.FileType.Directory:
        raise ConfigurationError(f"{store.location} is a file, not a talktime output")
    marks = store.fs.get_file_info([store.path(name) for name in (INTERNAL, *TABLE_NAMES)])
    if all(info.type == pafs.FileType.NotFound for info in marks):
        raise ConfigurationError(f"{store.location} is not a talktime output (no {INTERNAL}/ and no table folders)")


def _status(
    store: Store, out: str, now: datetime, expire_after: timedelta, horizon: timedelta, talk: bool, rows: bool | None
) -> OutputStatus:
    notes: list[str] = []
    files = {table: store.list(table, ".parquet") for table in TABLE_NAMES}
    version = current_version(store)
    state: LedgerState = "stored"
    if version.complete and not version.empty:
        ledger = scan_ledger(store, version)
    else:
        rebuilt, found = stored_or_rebuilt(store, version)
        ledger, state = rebuilt.lazy(), "rebuilt" if found == "rebuilt" else "none"
    if state == "rebuilt":
        notes.append(
            f"the ledger is missing: rebuilt in memory from {len(files['transcriptions'])} "
            "transcriptions files (the next run or `talktime verify --repair` writes it)"
        )
    groups = _ledger_groups(ledger, now, expire_after, horizon)
    pending = groups.filter(~pl.col("final").fill_null(False))
    oldest, overdue, soon = pending.select(pl.col("oldest").min(), pl.col("overdue").sum(), pl.col("soon").sum()).row(0)
    row_counts = None
    if rows or (rows is None and store.local):
        row_counts, unreadable = _footer_rows(store, files)
        if unreadable:
            notes.append(f"{unreadable} data file(s) have no readable Parquet footer: run `talktime verify`")
    commit_records = len(store.list(COMMITS, ".json"))
    if commit_records:
        notes.append(
            f"{commit_records} commit record(s) in {INTERNAL}/commits: an interrupted run's (the next run or "
            "`talktime verify --repair` finishes them) or a commit being applied now"
        )
    lease, lease_note = _lease(store, now)
    notes += lease_note
    talk_frame, talk_note = _talk(store, files["speaker_metrics"]) if talk else (None, [])
    notes += talk_note
    return OutputStatus(
        out=store.location,
        now=now,
        ledger_state=state,
        ids_by_status=_counts(groups),
        pending=int(pending["n"].sum()),
        pending_by_status=_counts(pending),
        oldest_pending=oldest,
        expire_after=expire_after,
        next_to_expire=oldest + expire_after if oldest is not None else None,
        overdue=overdue,
        horizon=horizon,
        expiring_within=soon,
        files_per_table={table: len(paths) for table, paths in files.items()},
        rows_per_table=row_counts,
        commit_records=commit_records,
        last_commit=groups["last"].max(),  # type: ignore[arg-type]
        lease=lease,
        talk_by_speaker=talk_frame,
        notes=tuple(notes),
    )


def _ledger_groups(ledger: pl.LazyFrame, now: datetime, expire_after: timedelta, horizon: timedelta) -> pl.DataFrame:
    """One row per (status, final): ids, oldest first_seen_at, overdue and soon-expiring ids, latest
    poll; one streaming pass, so the ledger is never held whole."""
    expires = pl.col("first_seen_at") + expire_after
    now_lit = pl.lit(now, UTC_TIMESTAMP)
    return collect(
        ledger.group_by("status", "final").agg(
            pl.len().alias("n"),
            pl.col("first_seen_at").min().alias("oldest"),
            (expires < now_lit).sum().alias("overdue"),
            ((expires >= now_lit) & (expires < now_lit + horizon)).sum().alias("soon"),
            pl.col("last_polled_at").max().alias("last"),
        )
    )


def _counts(groups: pl.DataFrame) -> dict[str, int]:
    counts = groups.group_by("status").agg(pl.col("n").sum()).sort("status")
    return {str(status): int(n) for status, n in counts.iter_rows()}


def _footer_rows(store: Store, files: dict[str, list[str]]) -> tuple[dict[str, int], int]:
    """Rows per table from the files' Parquet footers (no data read), and how many footers are unreadable."""
    counts, unreadable = dict.fromkeys(files, 0), 0
    for table, paths in files.items():
        for path in paths:
            try:
                counts[table] += pq.read_metadata(store.path(path), filesystem=store.fs).num_rows
            except FileNotFoundError:
                continue  # replaced by a commit since the listing
            except pa.ArrowInvalid:  # not a Parquet file (storage failures are raised)
                unreadable += 1
    return counts, unreadable


def _lease(store: Store, now: datetime) -> tuple[str | None, list[str]]:
    """Who holds the writer's lease if it is live (read only: never taken, never removed)."""
    try:
        data = store.read_bytes(LEASE_PATH)
    except FileNotFoundError:
        return None, []
    try:
        record = LeaseRecord.from_json(data)
    except (ValueError, KeyError, TypeError):
        return None, [
            f"the writer's lease {LEASE_PATH} is unreadable: writers refuse to start; "
            "remove it if no talktime writer is running"
        ]
    if record.is_live(now):
        return record.describe(), []
    return None, []


def _talk(store: Store, files: list[str]) -> tuple[pl.DataFrame | None, list[str]]:
    """Talk time by speaker over the speaker_metrics files, summed file by file (two columns read, one
    file's rows in memory at a time, whatever the output's size). Files are never rewritten, so this
    is the table but while a commit is applied (see the module's docstring)."""
    totals: list[pl.DataFrame] = []
    for path in files:
        try:
            rows = pl.DataFrame(store.read_parquet(path, ["speaker", "talk_time_ms"]))
            totals.append(rows.group_by("speaker").agg(pl.col("talk_time_ms").sum()))
        except FileNotFoundError:
            continue  # replaced by a commit since the listing: its rows are in the new file
        except (pa.ArrowException, pl.exceptions.PolarsError):  # not Parquet, or not speaker_metrics' columns
            return None, ["talk time not computed: a speaker_metrics file is unreadable; run `talktime verify`"]
    if not totals:
        return None, []
    return RunSummary(talk=totals).talk_table(), []


def status_lines(status: OutputStatus) -> list[str]:
    """The status as text lines for the console and logs (counts, times, speakers; never transcript text)."""
    ledger = {"stored": "", "rebuilt": ", ledger rebuilt from the data files", "none": ", nothing written yet"}
    by_status = f" ({_pairs(status.ids_by_status)})" if status.ids_by_status else ""
    lines = [
        f"{PREFIX}{status.out} (as of {_time(status.now)})",
        f"  ids: {status.ids}{by_status}{ledger[status.ledger_state]}",
    ]
    if not status.pending:
        lines.append("  pending: none")
    else:
        oldest = status.oldest_pending
        since = f", oldest first seen {_time(oldest)} ({_span(status.now - oldest)} ago)" if oldest else ""
        lines.append(f"  pending: {status.pending} ({_pairs(status.pending_by_status)}){since}")
    if status.next_to_expire is not None:
        due = status.next_to_expire - status.now
        when = f"in {_span(due)}" if due >= timedelta(0) else f"{_span(-due)} ago"
        overdue = f"; {status.overdue} overdue (the next run expires them)" if status.overdue else ""
        lines.append(
            f"  expiry ({_span(status.expire_after)} after first seen): next {_time(status.next_to_expire)} "
            f"({when}); {status.expiring_within} within {_span(status.horizon)}{overdue}"
        )
    lines.append(f"  files: {_pairs(status.files_per_table, sort=False)}")
    if status.rows_per_table is not None:
        lines.append(f"  rows: {_pairs(status.rows_per_table, sort=False)}")
    if status.last_commit is not None:
        lines.append(f"  last commit: {_time(status.last_commit)} ({_span(status.now - status.last_commit)} ago)")
    lines.append(f"  writer: {status.lease} (holds the lease)" if status.lease else "  writer: none")
    if status.talk_by_speaker is not None:
        lines.append("  talk time by speaker:")
        lines += [
            f"    {speaker:<12} {minutes:>10.1f} min {share:>7.1%}"
            for speaker, minutes, share in status.talk_by_speaker.select("speaker", "talk_minutes", "share").iter_rows()
        ]
    lines += [f"  note: {note}" for note in status.notes]
    return lines


def status_dict(status: OutputStatus) -> dict[str, object]:
    """The status as JSON-serialisable values (ISO 8601 times, durations in seconds)."""
    return {
        "out": status.out,
        "as_of": status.now.isoformat(),
        "ledger": status.ledger_state,
        "ids": status.ids,
        "ids_by_status": status.ids_by_status,
        "pending": status.pending,
        "pending_by_status": status.pending_by_status,
        "oldest_pending": _iso(status.oldest_pending),
        "expire_after_s": status.expire_after.total_seconds(),
        "next_to_expire": _iso(status.next_to_expire),
        "overdue": status.overdue,
        "horizon_s": status.horizon.total_seconds(),
        "expiring_within": status.expiring_within,
        "files_per_table": status.files_per_table,
        "rows_per_table": status.rows_per_table,
        "commit_records": status.commit_records,
        "last_commit": _iso(status.last_commit),
        "lease": status.lease,
        "talk_by_speaker": None if status.talk_by_speaker is None else status.talk_by_speaker.to_dicts(),
        "notes": list(status.notes),
    }


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def _time(moment: datetime | None) -> str:
    return "-" if moment is None else moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _span(delta: timedelta) -> str:
    """A duration for people: `3d 4h`, `26h 05m`, `24h`, `4m 10s`, `12s` (days from 48 hours on)."""
    seconds = max(int(delta.total_seconds()), 0)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours >= 48:
        return f"{hours // 24}d {hours % 24}h"
    if hours:
        return f"{hours}h {minutes:02d}m" if minutes else f"{hours}h"
    return f"{minutes}m {secs:02d}s" if minutes else f"{secs}s"


def _pairs(counts: dict[str, int], *, sort: bool = True) -> str:
    items = sorted(counts.items()) if sort else list(counts.items())
    return ", ".join(f"{name} {n}" for name, n in items)
