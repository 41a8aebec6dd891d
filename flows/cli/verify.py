"""`talktime verify`: check the ledger against the data files; --repair fixes them."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from typing import TYPE_CHECKING, Any

from flows.cli.common import AddCommand
from flows.errors import ConfigurationError

if TYPE_CHECKING:
    from flows.storage.verify import Check


def add_parser(add: AddCommand, job: argparse.ArgumentParser) -> None:
    """`talktime verify`'s options."""
    ver = add(
        "verify",
        "check the ledger against the data files (missing, extra, duplicated rows); --repair fixes them",
        (job,),
        description="Check the ledger against the data files of every table: ids whose rows are missing, "
        "rows the ledger does not name as current (extra), rows repeated in an id's current batch "
        "(duplicated), unreadable files, a missing or unreadable ledger. Prints ids and file paths, never "
        "transcript text.",
        epilog="exit status: 0 consistent (after --repair: repaired), 1 problems found, "
        "2 error (e.g. --out does not exist)",
    )
    ver.add_argument("--out", required=True, help="output location (directory or s3://bucket/prefix)")
    ver.add_argument("--partition", metavar="YYYY-MM-DD", help="check one fetched_date partition only")
    ver.add_argument("--since", metavar="YYYY-MM-DD", help="check the partitions from this date on")
    ver.add_argument("--until", metavar="YYYY-MM-DD", help="check the partitions up to this date (inclusive)")
    ver.add_argument(
        "--repair",
        action="store_true",
        help="rebuild a missing or unreadable ledger, drop missing ids from it (the next run fetches them again), "
        "rewrite files without extra or duplicated rows and quarantine unreadable ones, in one crash-safe commit",
    )


def cmd_verify(args: argparse.Namespace) -> int:
    from flows.storage.verify import count_files, describe, describe_repair, repair, verify

    dates = _date_range(args)
    if args.repair:
        if dates is not None:
            raise ConfigurationError(
                "--repair checks and repairs the whole output: leave out --partition/--since/--until"
            )
        done = repair(str(args.out))
        found, lines = done.after, describe_repair(done)
    else:
        bar = None if args.quiet or not sys.stderr.isatty() else _DelayedBar("talktime verify: files read")
        try:
            if bar is not None:
                bar.total = count_files(str(args.out), dates)
            found = verify(str(args.out), dates=dates, progress=bar)
        finally:
            if bar is not None:
                bar.close()
        lines = describe(found)
    if getattr(args, "json", False):
        print(json.dumps({"out": str(args.out), "consistent": found.consistent, **_check_dict(found)}))
    elif not args.quiet or not found.consistent:
        print("\n".join(lines))
    return 0 if found.consistent else 1


def _date_range(args: argparse.Namespace) -> tuple[str, str] | None:
    """(first, last) partition dates that `verify` checks, or None for every partition."""
    from datetime import date

    chosen = {name: getattr(args, name) for name in ("partition", "since", "until") if getattr(args, name)}
    if not chosen:
        return None
    for name, value in chosen.items():
        try:
            date.fromisoformat(value)
        except ValueError:
            raise ConfigurationError(f"--{name} {value!r} is not a date (YYYY-MM-DD)") from None
    if "partition" in chosen and len(chosen) > 1:
        raise ConfigurationError("--partition checks one day: leave out --since/--until")
    if "partition" in chosen:
        return chosen["partition"], chosen["partition"]
    return chosen.get("since", "0000-01-01"), chosen.get("until", "9999-12-31")


class _DelayedBar:
    """A progress bar on stderr that appears only once the work has taken more than a second."""

    def __init__(self, label: str, delay_s: float = 1.0) -> None:
        self.label, self.total, self.done = label, 0, 0
        self._start = time.monotonic() + delay_s
        self._progress: Any = None
        self._task: Any = None

    def __call__(self, count: int) -> None:
        self.done += count
        if self._progress is None and time.monotonic() >= self._start:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self._progress = Progress(
                TextColumn(self.label), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                console=Console(file=sys.stderr),
            )  # fmt: skip
            self._task = self._progress.add_task("work", total=self.total or None)
            self._progress.start()
        if self._progress is not None:
            self._progress.update(self._task, completed=self.done)

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()


def _check_dict(found: Check) -> dict[str, object]:
    findings = [dataclasses.asdict(finding) for finding in found.findings]
    return {"ledger": found.ledger_state, "pending_commits": found.pending_commits, "findings": findings}
