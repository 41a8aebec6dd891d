"""`talktime compact`: merge each partition's small files."""

from __future__ import annotations

import argparse
import json
import sys

from flows.cli.common import AddCommand


def add_parser(add: AddCommand, job: argparse.ArgumentParser) -> None:
    """`talktime compact`'s options."""
    comp = add("compact", "merge each partition's small files (readers see the same rows)", (job,))
    comp.add_argument("--out", required=True, help="output location (directory or s3://bucket/prefix)")


def cmd_compact(args: argparse.Namespace) -> int:
    from flows.storage.compact import compact
    from flows.storage.verify import open_store

    open_store(str(args.out))  # nothing there: say so, rather than "0 files -> 0"
    bar = None if args.quiet or not sys.stderr.isatty() else _PartitionBar()
    try:
        before, after = compact(str(args.out), progress=bar)
    finally:
        if bar is not None:
            bar.close()
    if getattr(args, "json", False):
        print(json.dumps({"out": str(args.out), "files_before": before, "files_after": after}))
    else:
        print(f"talktime compact: {before} data files -> {after}")
    return 0


class _PartitionBar:
    """`compact`'s progress bar on a terminal: partitions merged of partitions to merge."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self._progress = Progress(
            TextColumn("talktime compact: partitions"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
            console=Console(file=sys.stderr),
        )  # fmt: skip
        self._task = self._progress.add_task("compact", total=None)
        self._progress.start()

    def __call__(self, done: int, total: int) -> None:
        self._progress.update(self._task, completed=done, total=total)

    def close(self) -> None:
        self._progress.stop()
