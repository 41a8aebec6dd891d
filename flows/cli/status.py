"""`talktime status`: what an output holds, read-only."""

from __future__ import annotations

import argparse
import json

from flows.cli.common import AddCommand, parse_duration


def add_parser(add: AddCommand, job: argparse.ArgumentParser) -> None:
    """`talktime status`'s options."""
    stat = add(
        "status",
        "what an output holds: ids by status, pending, next to expire, files per table, last commit",
        (job,),
        description="What an output holds, read-only (no lease taken): ids by status, pending ids, the oldest "
        "pending, the next to expire, files and rows per table, the last commit, the writer holding the lease, "
        "talk time by speaker over the whole output.",
    )
    stat.add_argument("--out", required=True, help="output location (directory or s3://bucket/prefix)")
    stat.add_argument(
        "--expire-after",
        type=parse_duration,
        default=parse_duration("24h"),
        help="the runs' --expire-after, to say when pending ids expire (default 24h)",
    )


def cmd_status(args: argparse.Namespace) -> int:
    from flows.storage.status import output_status, status_dict, status_lines
    from flows.untrusted import printable

    status = output_status(str(args.out), expire_after_s=args.expire_after)
    if args.json:
        print(json.dumps(status_dict(status), default=str))
    else:
        print("\n".join(printable(line) for line in status_lines(status)))
    return 0
