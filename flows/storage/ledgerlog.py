"""The ledger as stored: a checkpoint and an append-only log, as Delta Lake's `_delta_log` keeps a table.

    _talktime/ledger/checkpoint-{seq}.parquet   every id's state as of log entry `seq`
    _talktime/ledger/log-{seq}.parquet          one entry per commit: the new state of each id the
                                                commit polled, then "moves" (status null; only
                                                batch_id and fetched_date set) of ids whose rows
                                                were rewritten into another file
    _talktime/ledger.parquet                    an output written before the log: checkpoint 0

A commit writes one entry the size of its batch, so its cost no longer grows with the output. An
id's state is its checkpoint row overlaid by its entries, in order (`overlay`). Files are never
rewritten: a fold writes `checkpoint-{seq}` (a whole-object write, from a streaming plan), then
deletes the checkpoint and entries it replaces. It runs when a writer opens or closes the output,
once the log holds more than a quarter of the checkpoint's rows (at least FOLD_MIN_ROWS) or more
than FOLD_MAX_ENTRIES entries; so each row is rewritten a bounded number of times on average, and
a reader lists and opens few files. A fold interrupted before its deletes leaves files the newer
checkpoint already holds: readers skip them, the next fold deletes them.

A `Version` is the ledger at one moment: which checkpoint, which entries. A run's batch tasks
read the ledger as of the version at the run's start (entries and checkpoints are immutable, and
no fold runs while a run's tasks do), each process building a compact index once (`prior_of`).
"""

from __future__ import annotations

import io
import json
import logging
import os
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from flows.errors import StorageError
from flows.storage.layout import ERASURES, LEDGER_DIR, LEGACY_LEDGER, checkpoint_path, ledger_file, log_path
from flows.storage.ledger import (
    LEDGER_SCHEMA,
    REBUILD_COLUMNS,
    UNREADABLE_LEDGER,
    forgotten_rows,
    ledger_from_data,
    overlay,
    read_data_files,
)
from flows.storage.store import Store

log = logging.getLogger(__name__)
FOLD_MIN_ROWS = 50_000
FOLD_MAX_ENTRIES = 256


@dataclass(frozen=True)
class Version:
    """The stored ledger at one moment: its checkpoint (path and seq) and the entries after it."""

    checkpoint: str | None
    checkpoint_seq: int
    entries: tuple[int, ...]
    stale: tuple[str, ...] = ()  # files a newer checkpoint holds (an interrupted fold's leftovers)

    @property
    def seq(self) -> int:
        """The last entry this version holds (0: none yet)."""
        return self.entries[-1] if self.entries else self.checkpoint_seq

    @property
    def empty(self) -> bool:
        return self.checkpoint is None and not self.entries

    @property
    def complete(self) -> bool:
        """Whether every entry since the checkpoint (or since the first) is there."""
        first = self.checkpoint_seq + 1
        return self.entries == tuple(range(first, first + len(self.entries)))

    def token(self) -> str:
        """This version as a short string (a batch task's snapshot)."""
        return f"{self.checkpoint or ''}|{self.checkpoint_seq}|{self.seq}"

    @classmethod
    def from_token(cls, token: str) -> Version:
        checkpoint, first, last = token.split("|")
        return cls(checkpoint or None, int(first), tuple(range(int(first) + 1, int(last) + 1)))


def current_version(store: Store) -> Version:
    """The ledger's files as listed now."""
    checkpoints: dict[int, str] = {}
    logs: dict[int, str] = {}
    for path in store.list(LEDGER_DIR, ".parquet"):
        kind = ledger_file(path)
        if kind is not None:
            (checkpoints if kind[0] == "checkpoint" else logs)[kind[1]] = path
    if store.exists(LEGACY_LEDGER):
        checkpoints.setdefault(0, LEGACY_LEDGER)
    if not checkpoints:
        return Version(None, 0, tuple(sorted(logs)))
    newest = max(checkpoints)
    stale = [p for s, p in checkpoints.items() if s != newest] + [p for s, p in logs.items() if s <= newest]
    if LEGACY_LEDGER not in stale and checkpoints[newest] != LEGACY_LEDGER and store.exists(LEGACY_LEDGER):
        stale.append(LEGACY_LEDGER)
    return Version(checkpoints[newest], newest, tuple(sorted(s for s in logs if s > newest)), tuple(sorted(stale)))


def _read_bytes(store: Store, path: str) -> bytes:
    try:
        return store.read_bytes(path)
    except FileNotFoundError:
        raise StorageError(f"ledger file {path} disappeared while it was read; try again") from None
    except OSError as exc:
        raise StorageError(f"cannot read {path} from the output location: {exc}") from None


def _conform(frame: pl.LazyFrame) -> pl.LazyFrame:
    return frame.select(LEDGER_SCHEMA.names()).cast(dict(LEDGER_SCHEMA))  # type: ignore[arg-type]


def scan_checkpoint(store: Store, version: Version) -> pl.LazyFrame:
    """The checkpoint's rows, lazily (a local file is scanned in place; a remote one read once)."""
    if version.checkpoint is None:
        return pl.LazyFrame(schema=LEDGER_SCHEMA)
    source: str | io.BytesIO
    source = store.path(version.checkpoint) if store.local else io.BytesIO(_read_bytes(store, version.checkpoint))
    try:
        frame = _conform(pl.scan_parquet(source))
        frame.collect_schema()
        return frame
    except (pl.exceptions.PolarsError, OSError):
        raise StorageError(UNREADABLE_LEDGER) from None


def scan_checkpoint_with_halves(store: Store, version: Version) -> pl.LazyFrame:
    """The checkpoint's rows with `id_hi`, `id_lo`: read when it stores them (`with_halves`), else computed."""
    halves: dict[str, pl.DataType] = {"id_hi": pl.UInt64(), "id_lo": pl.UInt64()}
    if version.checkpoint is None:
        return pl.LazyFrame(schema=pl.Schema({**dict(LEDGER_SCHEMA), **halves}))
    source = store.path(version.checkpoint) if store.local else io.BytesIO(_read_bytes(store, version.checkpoint))
    try:
        stored = pl.scan_parquet(source)
        names = stored.collect_schema().names()
    except (pl.exceptions.PolarsError, OSError):
        raise StorageError(UNREADABLE_LEDGER) from None
    if "id_hi" not in names:
        return _conform(stored).with_columns(_halves())
    return stored.select(*LEDGER_SCHEMA.names(), *halves).cast(pl.Schema({**dict(LEDGER_SCHEMA), **halves}))


def read_entries(store: Store, version: Version) -> pl.DataFrame:
    """The log entries after the checkpoint, in order, as one frame (small: folds keep it so)."""
    frames = []
    for seq in version.entries:
        try:
            frames.append(_conform(pl.scan_parquet(io.BytesIO(_read_bytes(store, log_path(seq))))).collect())
        except (pl.exceptions.PolarsError, OSError):
            raise StorageError(UNREADABLE_LEDGER) from None
    return pl.concat(frames) if frames else pl.DataFrame(schema=LEDGER_SCHEMA)


def check_readable(store: Store) -> None:
    """UNREADABLE_LEDGER unless every file of the stored ledger has a readable Parquet footer (a
    quick check before a run starts; the footers only, whatever the ledger's size)."""
    version = current_version(store)
    paths = ([version.checkpoint] if version.checkpoint else []) + [log_path(seq) for seq in version.entries]
    for path in paths:
        try:
            with store.fs.open_input_file(store.path(path)) as handle:
                pq.ParquetFile(handle).schema_arrow.field("transcription_id")
        except FileNotFoundError:
            continue  # folded away since the listing
        except (OSError, KeyError, pa.ArrowException):
            raise StorageError(UNREADABLE_LEDGER) from None


def scan_ledger(store: Store, version: Version) -> pl.LazyFrame:
    """Every id's current state (LEDGER_SCHEMA), lazily: the checkpoint's rows of ids no entry
    touches, streamed, and the few touched ids overlaid in memory."""
    base = scan_checkpoint(store, version)
    entries = read_entries(store, version)
    if entries.is_empty():
        return base
    touched = entries.select("transcription_id").unique().lazy()
    try:
        prior = base.join(touched, on="transcription_id", how="semi").collect(engine="streaming")
    except (pl.exceptions.PolarsError, OSError):
        raise StorageError(UNREADABLE_LEDGER) from None
    untouched = base.join(touched, on="transcription_id", how="anti")
    return pl.concat([untouched, overlay(prior, entries).lazy()])


def collect(frame: pl.LazyFrame) -> pl.DataFrame:
    """A ledger plan collected with the streaming engine; an unreadable file is UNREADABLE_LEDGER."""
    try:
        return frame.collect(engine="streaming")
    except (pl.exceptions.PolarsError, OSError):
        raise StorageError(UNREADABLE_LEDGER) from None


def read_ledger(store: Store, version: Version | None = None) -> pl.DataFrame:
    """The whole ledger in memory, sorted by id (for tools over small and medium outputs)."""
    version = version or current_version(store)
    return collect(scan_ledger(store, version)).sort("transcription_id")


def load_ledger(store: Store) -> pl.DataFrame:
    """The ledger; rebuilt from the data files when it is missing (empty when nothing was written)."""
    return stored_or_rebuilt(store)[0]


def stored_or_rebuilt(store: Store, version: Version | None = None) -> tuple[pl.DataFrame, str]:
    """(the ledger, "stored" | "rebuilt" | "none"). A ledger with no file, or whose log lacks an entry
    (a checkpoint or entry deleted by hand), is rebuilt in memory from the data files, which say
    which ids they hold; StorageError when a data file needed for that cannot be read."""
    version = version or current_version(store)
    if version.complete and not version.empty:
        return read_ledger(store, version), "stored"
    found = read_data_files(store, "transcriptions", REBUILD_COLUMNS)
    if found.unreadable:
        raise StorageError(
            f"the ledger is missing and {len(found.unreadable)} data file(s) cannot be read "
            f"(e.g. {found.unreadable[0]}): run `talktime verify --out DIR --repair`"
        )
    ledger = with_erasures(store, ledger_from_data(found.rows))
    if found.files or not version.empty:
        log.warning("the ledger was missing: rebuilt from %d data files (%d ids)", found.files, ledger.height)
        return ledger, "rebuilt"
    return ledger, "none"


def with_erasures(store: Store, ledger: pl.DataFrame) -> pl.DataFrame:
    """A ledger rebuilt from the data files, with the ids of the erasure log marked forgotten again."""
    marks = []
    for path in store.list(ERASURES, ".json"):
        try:
            record = json.loads(_read_bytes(store, path))
            erased_at = datetime.fromisoformat(record["erased_at"])
            ids = [str(tid) for tid in record["ids"]]
        except (ValueError, KeyError, TypeError):
            raise StorageError(
                f"erasure log entry {path} is unreadable: restore it before rebuilding the ledger"
            ) from None
        marks.append(forgotten_rows(ledger, ids, erased_at))
    if not marks:
        return ledger
    erased = pl.concat(marks).unique("transcription_id", keep="last")
    kept = ledger.join(erased.select("transcription_id"), on="transcription_id", how="anti")
    return pl.concat([kept, erased]).sort("transcription_id")


def rows_of(store: Store, version: Version, ids: Sequence[str]) -> pl.DataFrame:
    """The current rows of these ids (absent: never seen)."""
    wanted = pl.Series(list(ids), dtype=pl.String).implode()
    return collect(scan_ledger(store, version).filter(pl.col("transcription_id").is_in(wanted)))


def pending_rows(store: Store, version: Version) -> pl.DataFrame:
    """The rows of every id that is not final (what a writer keeps at hand: they can change)."""
    return collect(scan_ledger(store, version).filter(~pl.col("final").fill_null(False)))


def _footer_rows(store: Store, path: str) -> int:
    try:
        with store.fs.open_input_file(store.path(path)) as handle:
            return int(pq.ParquetFile(handle).metadata.num_rows)
    except (OSError, pa.ArrowException):
        raise StorageError(UNREADABLE_LEDGER) from None


def log_rows(version: Version, store: Store) -> int:
    """Rows in the entries after the checkpoint (read from the footers only)."""
    return sum(_footer_rows(store, log_path(seq)) for seq in version.entries)


def checkpoint_rows(version: Version, store: Store) -> int:
    return 0 if version.checkpoint is None else _footer_rows(store, version.checkpoint)


def fold_due(store: Store, version: Version) -> bool:
    """Whether the log has grown enough to fold (see the module's docstring)."""
    if len(version.entries) > FOLD_MAX_ENTRIES:
        return True
    if not version.entries:
        return False
    return log_rows(version, store) > max(FOLD_MIN_ROWS, checkpoint_rows(version, store) // 4)


def write_checkpoint(store: Store, frame: pl.LazyFrame, seq: int) -> None:
    """Write `frame` as checkpoint `seq`, with its ids' halves (streamed to a local file, then placed whole)."""
    frame = with_halves(frame)
    target = checkpoint_path(seq)
    with tempfile.TemporaryDirectory(prefix="talktime-ledger-", dir=_scratch(store)) as scratch:
        local = os.path.join(scratch, "checkpoint.parquet")
        try:
            frame.sink_parquet(local, compression="zstd", row_group_size=256 * 1024)
        except (pl.exceptions.PolarsError, OSError):
            raise StorageError(UNREADABLE_LEDGER) from None
        store.put_file(local, target)


def _scratch(store: Store) -> str | None:
    """A scratch folder on the output's own disk (so placing the file is a rename), or the system's."""
    if not store.local:
        return None
    folder = store.path(f"{LEDGER_DIR}")
    os.makedirs(folder, exist_ok=True)
    return folder


def fold(store: Store, version: Version) -> Version:
    """Write a checkpoint holding every entry of `version`, then delete what it replaces."""
    write_checkpoint(store, scan_ledger(store, version).sort("transcription_id"), version.seq)
    folded = Version(checkpoint_path(version.seq), version.seq, ())
    drop_stale(store, current_version(store))
    return folded


def replace_all(store: Store, ledger: pl.LazyFrame | pl.DataFrame, seq: int) -> None:
    """Make `ledger` the whole stored ledger as checkpoint `seq` (after a rebuild or a repair), then
    delete every older file. `seq` must be at least every entry's: the caller holds the lease."""
    write_checkpoint(store, _conform(ledger.lazy()), seq)
    drop_stale(store, current_version(store))


def drop_stale(store: Store, version: Version) -> None:
    """Delete the files a newer checkpoint holds."""
    store.delete_many(list(version.stale))


# A batch task's view: each id's (status, final) as of its run's start, from a compact index
# (two u64 halves of a UUID and a categorical status: about 18 bytes an id, 180 MB at 10 million ids).

PRIOR_SCHEMA = pl.Schema({"transcription_id": pl.String(), "status": pl.String(), "final": pl.Boolean()})
_UUID = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"


def _halves(column: str = "transcription_id") -> list[pl.Expr]:
    """The two u64 halves of a lower-case UUID (null for anything else)."""
    is_uuid = pl.col(column).str.contains(_UUID)
    text = pl.col(column).str.replace_all("-", "", literal=True)
    half = {
        start: text.str.slice(start, 16).str.to_integer(base=16, dtype=pl.UInt64, strict=False) for start in (0, 16)
    }
    return [pl.when(is_uuid).then(half[0]).alias("id_hi"), pl.when(is_uuid).then(half[16]).alias("id_lo")]


def with_halves(ledger: pl.LazyFrame) -> pl.LazyFrame:
    """The ledger with `id_hi`, `id_lo` (a checkpoint stores them: the index reads them instead of
    parsing ten million strings)."""
    return _conform(ledger).with_columns(_halves())


class PriorIndex:
    """(status, final) by id for a whole ledger version, compact enough for 10 million ids: the
    checkpoint's ids as two u64 halves sorted by the first (binary search), the few ids that are
    not UUIDs as strings, and the log's newer states on top."""

    def __init__(self, checkpoint: pl.LazyFrame, entries: pl.DataFrame) -> None:
        """`checkpoint`: `scan_checkpoint_with_halves`; `entries`: the log after it (`read_entries`)."""
        states = checkpoint.select("transcription_id", "id_hi", "id_lo", "status", "final")
        self.uuids = collect(
            states.filter(pl.col("id_hi").is_not_null()).select(
                pl.col("id_hi").alias("hi"), pl.col("id_lo").alias("lo"), pl.col("status").cast(pl.Categorical), "final"
            )
        ).sort("hi")
        self.others = collect(states.filter(pl.col("id_hi").is_null()).select("transcription_id", "status", "final"))
        full = entries.filter(pl.col("status").is_not_null())  # moves change no state
        self.newer = full.unique("transcription_id", keep="last").select("transcription_id", "status", "final")

    def lookup(self, ids: pl.Series) -> pl.DataFrame:
        """(transcription_id, status, final) of those of `ids` the ledger holds."""
        wanted = pl.DataFrame({"transcription_id": ids.cast(pl.String)}).unique()
        newer = self.newer.join(wanted, on="transcription_id", how="semi")
        rest = wanted.join(newer, on="transcription_id", how="anti").with_columns(_halves())
        found = self._search(rest.filter(pl.col("id_hi").is_not_null()))
        others = self.others.join(rest.filter(pl.col("id_hi").is_null()), on="transcription_id", how="semi")
        return pl.concat([newer, found, others]).cast(PRIOR_SCHEMA)

    def _search(self, keys: pl.DataFrame) -> pl.DataFrame:
        """Binary search on the sorted first half; the rows whose halves both match."""
        if keys.is_empty() or self.uuids.is_empty():
            return pl.DataFrame(schema=PRIOR_SCHEMA)
        hi = self.uuids["hi"]
        start = hi.search_sorted(keys["id_hi"], side="left")
        end = hi.search_sorted(keys["id_hi"], side="right")
        spans = keys.with_columns(start=start, end=end).filter(pl.col("end") > pl.col("start"))
        rows = spans.select(
            "transcription_id", "id_lo", pl.int_ranges("start", "end", dtype=pl.UInt32).alias("at")
        ).explode("at")
        at = self.uuids[rows["at"]]
        matched = rows.with_columns(
            at["lo"].alias("lo_found"), at["status"].cast(pl.String).alias("status"), at["final"].alias("final")
        ).filter(pl.col("id_lo") == pl.col("lo_found"))
        return matched.select(PRIOR_SCHEMA.names())


_indexes: dict[tuple[str, str], PriorIndex] = {}
_index_lock = threading.Lock()


def prior_of(out: str, snapshot: str, ids: pl.Series) -> pl.DataFrame:
    """(transcription_id, status, final) of `ids` as of the ledger version `snapshot` (absent: never
    seen). The first call in a process builds the version's index; later calls reuse it."""
    key = (out, snapshot)
    with _index_lock:
        index = _indexes.get(key)
        if index is None:
            store = Store(out)
            version = Version.from_token(snapshot)
            index = PriorIndex(scan_checkpoint_with_halves(store, version), read_entries(store, version))
            _indexes.clear()  # one run's version at a time per process
            _indexes[key] = index
    return index.lookup(ids)
