"""Where everything lives under an output location: every path, and the one parser of data paths.

    {table}/fetched_date=YYYY-MM-DD/part-{file_id}.parquet   data (Hive-style; what analysts glob)
    _talktime/ledger/checkpoint-{seq:012d}.parquet            the ledger's checkpoint: every id as of entry seq
    _talktime/ledger/log-{seq:012d}.parquet                   the ledger's log: one entry per commit
    _talktime/ledger.parquet                                  the ledger of outputs written before the log
                                                              existed: read as the checkpoint of entry 0
    _talktime/staging/{batch}/                                files staged by a batch before its commit
    _talktime/commits/{batch}.json                            commit records (the commit points)
    _talktime/lease.json                                      the one writer's lease
    _talktime/quarantine/                                     unreadable files set aside by a repair
    _talktime/erasures/{commit}.json                          the erasure log of `talktime forget` (ids only)
    _talktime/policy.json                                     the output's text policy, recorded by its first writer

A data file's `file_id` is the batch that wrote it, or, for a file whose rows moved (a supersede
or a compaction rewrote them), a fresh id of the same form: ids sort by creation time, so an
id's newest file is the one holding its current rows. Files are never rewritten under the same
name. Nothing under `_talktime/` matches a table's glob.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime

INTERNAL = "_talktime"
PARTITION = "fetched_date"
LEDGER_DIR = f"{INTERNAL}/ledger"
LEGACY_LEDGER = f"{INTERNAL}/ledger.parquet"
COMMITS = f"{INTERNAL}/commits"
STAGING = f"{INTERNAL}/staging"
RUNS = f"{INTERNAL}/runs"  # written by releases before the ledger log: removed on recovery
QUARANTINE = f"{INTERNAL}/quarantine"
ERASURES = f"{INTERNAL}/erasures"
POLICY = f"{INTERNAL}/policy.json"

_FILE_ID = re.compile(r"/part-([^/]+)\.parquet$")
_DATE = re.compile(rf"/{PARTITION}=([^/]+)/")
_LEDGER_FILE = re.compile(r"/(checkpoint|log)-(\d{12})\.parquet$")


def new_file_id() -> str:
    """A unique batch or file id that sorts by creation time."""
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ") + "-" + uuid.uuid4().hex[:8]


def data_path(table: str, fetched_date: str, file_id: str) -> str:
    return f"{table}/{PARTITION}={fetched_date}/part-{file_id}.parquet"


def partition_dir(table: str, fetched_date: str) -> str:
    return f"{table}/{PARTITION}={fetched_date}"


def file_location(path: str) -> tuple[str | None, str | None]:
    """(file_id, fetched_date) that a data file's path names (None where it does not follow the layout)."""
    file_id, date = _FILE_ID.search(f"/{path}"), _DATE.search(f"/{path}")
    return (file_id.group(1) if file_id else None), (date.group(1) if date else None)


def staging_dir(batch_id: str) -> str:
    return f"{STAGING}/{batch_id}"


def commit_path(batch_id: str) -> str:
    return f"{COMMITS}/{batch_id}.json"


def erasure_path(commit: str) -> str:
    return f"{ERASURES}/{commit}.json"


def log_path(seq: int) -> str:
    return f"{LEDGER_DIR}/log-{seq:012d}.parquet"


def checkpoint_path(seq: int) -> str:
    return f"{LEDGER_DIR}/checkpoint-{seq:012d}.parquet"


def ledger_file(path: str) -> tuple[str, int] | None:
    """("checkpoint" | "log", seq) for a file of the ledger's folder (None for anything else)."""
    found = _LEDGER_FILE.search(f"/{path}")
    return (found.group(1), int(found.group(2))) if found else None
