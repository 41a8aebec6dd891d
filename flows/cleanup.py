"""`ingest --delete-after-commit`: delete each input file once every record of it is committed.

A file's records may span batches (inputs are cut into slices, `flows.inputs.plan_slices`), and
batches commit in submission order, so a file can go once the batch holding its last slice is
committed: every earlier batch is committed by then. Deleting after the commit returns is what
makes it crash-safe: a crash before the deletion leaves a file whose records are committed, and
ingesting it again changes nothing (its ids are final, or its rows are the same); a crash never
deletes a file whose records are not committed.

A file is kept (and named in one log line) when one of its records was unreadable (skipped: it is
in no table, and the operator may want it), or when it changed after it was planned (it grew: the
new records were not read). Only local input files exist to delete: ingest reads local paths.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from flows.batch import StagedBatch
from flows.inputs import Segment
from flows.storage.store import fsync_directory


class InputCleanup:
    """Deletes input files as the batches holding their last records are committed (`committed`)."""

    def __init__(self, slices: Sequence[Sequence[Segment]], log: logging.Logger | logging.LoggerAdapter[Any]) -> None:
        self.log = log
        self.last: dict[int, list[str]] = {}  # batch number (1-based, submission order) -> files it ends
        self.sizes: dict[str, int] = {}  # NDJSON file -> its size when cut into slices (the last slice's end)
        self.stats: dict[str, tuple[int, int]] = {}  # .json file -> (size, mtime_ns) now
        ends: dict[str, int] = {}
        for number, segments in enumerate(slices, start=1):
            for segment in segments:
                ends[segment.path] = number
                if segment.end != -1:
                    self.sizes[segment.path] = max(segment.end, self.sizes.get(segment.path, 0))
        for path, number in ends.items():
            self.last.setdefault(number, []).append(path)
            if path not in self.sizes:
                with contextlib.suppress(OSError):
                    stat = os.stat(path)
                    self.stats[path] = (stat.st_size, stat.st_mtime_ns)
        self.skipped: list[str] = []  # `file:line: why` of unreadable records, in committed batches
        self.deleted = 0

    def committed(self, staged: StagedBatch) -> None:
        """Batch `staged.number` is committed: delete the files whose last records it held."""
        self.skipped += staged.skipped
        kept, deleted = [], 0
        for path in self.last.pop(staged.number, []):
            if self._unreadable_in(path) or not self._unchanged(path):
                kept.append(path)
                continue
            with contextlib.suppress(FileNotFoundError):
                Path(path).unlink()
                fsync_directory(Path(path).parent)
                deleted += 1
        self.deleted += deleted
        if deleted:
            self.log.info("deleted %d input file(s) whose every record is committed", deleted)
        if kept:
            self.log.warning(
                "kept %d input file(s) after their commit (an unreadable record, or changed since read): %s",
                len(kept),
                "; ".join(kept[:20]),
            )

    def _unreadable_in(self, path: str) -> bool:
        return any(skipped.startswith(f"{path}:") for skipped in self.skipped)

    def _unchanged(self, path: str) -> bool:
        try:
            stat = os.stat(path)
        except OSError:
            return False
        if path in self.sizes:
            return stat.st_size == self.sizes[path]
        return self.stats.get(path) == (stat.st_size, stat.st_mtime_ns)


class NoCleanup:
    """Without --delete-after-commit: input files stay."""

    deleted = 0

    def committed(self, staged: StagedBatch) -> None:
        """Nothing to do."""


def input_cleanup(
    enabled: bool, slices: Sequence[Sequence[Segment]], log: logging.Logger | logging.LoggerAdapter[Any]
) -> InputCleanup | NoCleanup:
    """What deletes the inputs after their commits (`ingest --delete-after-commit`), or nothing."""
    return InputCleanup(slices, log) if enabled else NoCleanup()
