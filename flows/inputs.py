"""The pipeline's inputs: id manifests, and saved API responses or webhook events cut into slices.

Ingest never holds all its input at once: `plan_slices` cuts the files into batches of at most
`batch_size` records (byte ranges of NDJSON files, whole .json files) without decoding anything,
and each batch task reads its own slice (`read_slice`).
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from io import BufferedReader
from pathlib import Path
from typing import Any

import polars as pl

from flows.errors import ConfigurationError
from flows.outcomes import Outcome

RECORD_SUFFIXES = (".json", ".ndjson", ".jsonl")
EVENT_PREFIX = "transcribe_async."


def read_ids(path: str | Path) -> list[str]:
    """Ids from a text file (one per line), or a CSV / Parquet file with an `id` column.

    Text is UTF-8 (a byte-order mark is dropped); each id is stripped of surrounding whitespace
    and blank ones are skipped. Nothing else is altered: validation happens before any request.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigurationError(f"ids file not found: {path}")
    if path.suffix == ".parquet":
        try:
            return _ids_of(pl.read_parquet(path), path)
        except (pl.exceptions.PolarsError, OSError) as exc:
            raise ConfigurationError(f"ids file {path} is not a readable Parquet file ({type(exc).__name__})") from None
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigurationError(f"ids file {path} is not UTF-8 text (invalid byte at offset {exc.start})") from None
    if path.suffix == ".csv":
        try:
            return _ids_of(pl.read_csv(io.BytesIO(text.encode()), schema_overrides={"id": pl.String}), path)
        except pl.exceptions.PolarsError as exc:
            raise ConfigurationError(f"ids file {path} is not a readable CSV file ({type(exc).__name__})") from None
    return [stripped for line in text.splitlines() if (stripped := line.strip())]


def _ids_of(frame: pl.DataFrame, path: Path) -> list[str]:
    if "id" not in frame.columns:
        raise ConfigurationError(f"{path} has no `id` column")
    ids = frame.get_column("id").cast(pl.String).str.strip_chars()
    return [i for i in ids.to_list() if i]


def _files_under(paths: Sequence[str | Path]) -> list[Path]:
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            files += sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in RECORD_SUFFIXES)
        elif path.is_file():
            files.append(path)
        else:
            raise ConfigurationError(f"input not found: {path}")
    return files


def unwrap_event(value: Any) -> Any:
    """The API object inside a webhook event (`data`), or the value itself if it is no event."""
    if isinstance(value, dict) and isinstance(value.get("type"), str) and value["type"].startswith(EVENT_PREFIX):
        return value.get("data")
    return value


@dataclass(frozen=True)
class Segment:
    """A byte range of one input file: lines `first_line`... of an NDJSON file, or a whole .json file."""

    path: str
    start: int = 0
    end: int = -1  # -1: to the end of the file
    first_line: int = 0  # 0 for a .json file (one JSON value)


@dataclass(frozen=True)
class RawRecord:
    """One input record's bytes, and where it came from (`file:line`)."""

    source: str
    data: bytes


SCAN_CHUNK = 1 << 24


def _line_ranges(
    handle: BufferedReader, room: tuple[int, int], batch_size: int, max_bytes: int
) -> Iterator[tuple[int, int, int, bool]]:
    """(start, end, lines, full) of consecutive ranges: the first of at most room[0] lines and
    room[1] bytes, then of `batch_size` lines and `max_bytes` bytes; `full`: the range fills its
    batch (the last one of the file may not). A line that would overfill a range goes to the next
    (an empty full range when the first room has no space for the first line); a line larger than
    `max_bytes` is a range of its own."""
    start = offset = counted = last_end = 0
    need, need_bytes = room

    def overfills(end: int) -> bool:
        return end - start > need_bytes and (counted > 0 or need_bytes < max_bytes)

    while chunk := handle.read(SCAN_CHUNK):
        pos = 0
        while (found := chunk.find(b"\n", pos)) >= 0:
            end = offset + found + 1
            if overfills(end):
                yield start, last_end, counted, True  # this line goes to the next range
                start, counted, need, need_bytes = last_end, 0, batch_size, max_bytes
            pos, counted, last_end = found + 1, counted + 1, end
            if counted >= need or end - start >= need_bytes:
                yield start, end, counted, True
                start, counted, need, need_bytes = end, 0, batch_size, max_bytes
        offset += len(chunk)
    if offset > start:  # lines the loop did not close the range after, the last one maybe without newline
        if offset > last_end and overfills(offset):
            yield start, last_end, counted, True
            start, counted, need, need_bytes = last_end, 0, batch_size, max_bytes
        lines = counted + (offset > max(last_end, start))
        yield start, offset, lines, lines >= need or offset - start >= need_bytes


def _ranges_of(
    path: Path, room: tuple[int, int], batch_size: int, max_bytes: int
) -> Iterator[tuple[int, int, int, bool]]:
    if path.suffix == ".json":
        size = path.stat().st_size
        closed = size > room[1] and room[1] < max_bytes
        if closed:
            yield 0, 0, 0, True  # close the batch before this file
        lines_room, bytes_room = (batch_size, max_bytes) if closed else room
        yield 0, -1, 1, lines_room <= 1 or size >= bytes_room
        return
    with path.open("rb") as handle:
        yield from _line_ranges(handle, room, batch_size, max_bytes)


def plan_slices(
    paths: Sequence[str | Path], batch_size: int, max_bytes: int = 1 << 62
) -> Iterator[tuple[Segment, ...]]:
    """The inputs as batches of at most `batch_size` records and at most `max_bytes` bytes (a record
    larger than that is a batch of its own), in read order (nothing decoded)."""
    if batch_size < 1 or max_bytes < 1:
        raise ValueError("batch size and bytes must be at least 1")
    batch: list[Segment] = []
    filled = filled_bytes = 0
    for path in _files_under(paths):
        line = 1
        room = (batch_size - filled, max_bytes - filled_bytes)
        for start, end, lines, full in _ranges_of(path, room, batch_size, max_bytes):
            if lines:
                batch.append(Segment(str(path), start, end, 0 if end == -1 else line))
                line, filled = line + lines, filled + lines
                filled_bytes += (path.stat().st_size if end == -1 else end) - start
            if full and batch:
                yield tuple(batch)
                batch, filled, filled_bytes = [], 0, 0
    if batch:
        yield tuple(batch)


_ID_NEAR_START = re.compile(
    rb'"id"\s*:\s*"([0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12})"'
)
RECORD_TOO_LARGE = "record_too_large"
ID_HEAD_BYTES = 4096


@dataclass(frozen=True)
class Oversized:
    """A batch's records split by size (see `split_oversized`)."""

    records: list[RawRecord]
    errors: list[Outcome]  # `error` outcomes (RECORD_TOO_LARGE) of larger records whose id was found
    skipped: list[str]  # `file:line: why` of larger records that name no id


def split_oversized(records: Iterable[RawRecord], limit: int, now: datetime) -> Oversized:
    """The records of at most `limit` bytes; each larger one becomes an `error` outcome
    (RECORD_TOO_LARGE) when its id is among its first bytes, else a named skip. A larger record is
    never decoded: its bytes are read once, its decoded form would be many times larger."""
    kept: list[RawRecord] = []
    errors: list[Outcome] = []
    skipped: list[str] = []
    for record in records:
        if len(record.data) <= limit:
            kept.append(record)
            continue
        why = (
            f"a record of {len(record.data) / 2**20:.1f} MiB is over ingest's record limit of "
            f"{limit / 2**20:.1f} MiB (raise --memory-budget-mb to read it): not decoded"
        )
        found = id_near_start(record.data)
        if found is None:
            skipped.append(f"{record.source}: {why}")
        else:
            errors.append(Outcome.error(found, RECORD_TOO_LARGE, why, now))
    return Oversized(kept, errors, skipped)


def id_near_start(data: bytes) -> str | None:
    """The transcription id (lower-case) among a record's first ID_HEAD_BYTES, without decoding it: the
    record's own `id`, or for a webhook event its `data`'s; None when none is there."""
    head = data[:ID_HEAD_BYTES]
    data_at = head.find(b'"data"')  # a webhook event: the transcription is its `data`, not its own id
    found = _ID_NEAR_START.search(head, data_at if data_at >= 0 else 0)
    return None if found is None else found.group(1).decode().lower()


def segments_bytes(segments: Sequence[Segment]) -> int:
    """The size of a slice in bytes (what ingest's progress counts)."""
    return sum((Path(s.path).stat().st_size if s.end == -1 else s.end) - s.start for s in segments)


def read_slice(segments: Sequence[Segment]) -> Iterator[RawRecord]:
    """The records of a slice, in order; blank lines are skipped."""
    for segment in segments:
        with open(segment.path, "rb") as handle:
            handle.seek(segment.start)
            data = handle.read() if segment.end == -1 else handle.read(segment.end - segment.start)
        if segment.first_line == 0:
            yield RawRecord(segment.path, data)
            continue
        for number, line in enumerate(data.split(b"\n"), start=segment.first_line):
            if line.strip():
                yield RawRecord(f"{segment.path}:{number}", line)
