"""Reading the pipeline's inputs: id manifests and saved API responses or webhook events."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from flows.errors import ConfigurationError

RECORD_SUFFIXES = (".json", ".ndjson", ".jsonl")


def read_ids(path: str | Path) -> list[str]:
    """Ids from a text file (one per line), or a CSV / Parquet file with an `id` column.

    Blank lines are skipped; nothing else is altered (validation happens before any request).
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigurationError(f"ids file not found: {path}")
    if path.suffix in (".csv", ".parquet"):
        frame = (
            pl.read_csv(path, schema_overrides={"id": pl.String}) if path.suffix == ".csv" else pl.read_parquet(path)
        )
        if "id" not in frame.columns:
            raise ConfigurationError(f"{path} has no `id` column")
        return [i for i in frame.get_column("id").cast(pl.String).to_list() if i]
    text = path.read_text(encoding="utf-8")
    return [line.rstrip("\r") for line in text.split("\n") if line.strip()]


@dataclass(frozen=True)
class Record:
    """One JSON value read from an input file; `error` says why it could not be decoded."""

    source: str
    value: Any = None
    error: str | None = None


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


def iter_records(paths: Sequence[str | Path]) -> Iterator[Record]:
    """Every JSON value in .json files (one value) and .ndjson/.jsonl files (one per line)."""
    for path in _files_under(paths):
        if path.suffix == ".json":
            yield _decode(str(path), path.read_bytes())
            continue
        with path.open("rb") as lines:
            for number, line in enumerate(lines, start=1):
                if line.strip():
                    yield _decode(f"{path}:{number}", line)


def _decode(source: str, data: bytes) -> Record:
    try:
        return Record(source, json.loads(data))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        return Record(source, error=f"not JSON ({type(exc).__name__})")


def unwrap_event(value: Any) -> Any:
    """The API object inside a webhook event (`data`), or the value itself if it is no event."""
    if isinstance(value, dict) and isinstance(value.get("type"), str) and value["type"].startswith("transcribe_async."):
        return value.get("data")
    return value
