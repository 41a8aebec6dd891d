"""The pipeline's inputs: id manifests, and saved API responses or webhook events cut into slices.

Ingest never holds all its input at once: `plan_slices` cuts the files into batches of at most
`batch_size` records (byte ranges of NDJSON files, whole .json files) without decoding anything,
and each batch task reads its own slice (`read_slice`).
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from io import BufferedReader
from pathlib import Path
from typing import Any

import polars as pl

from flows.errors import ConfigurationError

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


def _line_ranges(handle: BufferedReader, room: int, batch_size: int) -> Iterator[tuple[int, int, int]]:
    """(start, end, lines) of consecutive ranges: the first of `room` lines at most, then `batch_size`."""
    start = offset = counted = 0
    need = room
    while chunk := handle.read(SCAN_CHUNK):
        pos = 0
        while counted + chunk.count(b"\n", pos) >= need:
            for _ in range(need - counted):
                pos = chunk.index(b"\n", pos) + 1
            yield start, offset + pos, need
            start, counted, need = offset + pos, 0, batch_size
        counted += chunk.count(b"\n", pos)
        offset += len(chunk)
    if offset > start:
        yield start, offset, counted + 1


def _ranges_of(path: Path, room: int, batch_size: int) -> Iterator[tuple[int, int, int]]:
    if path.suffix == ".json":
        yield 0, -1, 1
        return
    with path.open("rb") as handle:
        yield from _line_ranges(handle, room, batch_size)


def plan_slices(paths: Sequence[str | Path], batch_size: int) -> Iterator[tuple[Segment, ...]]:
    """The inputs as batches of at most `batch_size` records, in read order (nothing decoded)."""
    if batch_size < 1:
        raise ValueError("batch size must be at least 1")
    batch: list[Segment] = []
    filled = 0
    for path in _files_under(paths):
        line = 1
        for start, end, lines in _ranges_of(path, batch_size - filled, batch_size):
            batch.append(Segment(str(path), start, end, 0 if end == -1 else line))
            line, filled = line + lines, filled + lines
            if filled >= batch_size:
                yield tuple(batch)
                batch, filled = [], 0
    if batch:
        yield tuple(batch)


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
