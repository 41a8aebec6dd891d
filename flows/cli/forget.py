"""`talktime forget`: erase ids' rows from every table and never write them again."""

from __future__ import annotations

import argparse
import dataclasses
import json

from flows.cli.common import AddCommand


def add_parser(add: AddCommand, job: argparse.ArgumentParser) -> None:
    """`talktime forget`'s options."""
    forget = add(
        "forget",
        "erase these ids' rows from every table and never write them again (patient data, on request)",
        (job,),
        description="Remove every row of the ids in --ids from the four tables in one crash-safe commit under "
        "the writer's lease, mark them `forgotten` in the ledger (no later run, ingest or webhook delivery "
        "writes them again; `talktime run --refetch forgotten` must name them explicitly), and add an entry "
        "to the erasure log `_talktime/erasures/` (ids and counts, never content).",
        epilog="exit status: 0 done, 2 error (e.g. --out does not exist, an unreadable ids file)",
    )
    forget.add_argument("--out", required=True, help="output location (directory or s3://bucket/prefix)")
    forget.add_argument("--ids", required=True, help="text file (one id per line), or CSV/Parquet with an `id` column")


def cmd_forget(args: argparse.Namespace) -> int:
    from flows.inputs import read_ids
    from flows.storage.forget import forget
    from flows.storage.verify import open_store

    ids = read_ids(args.ids)
    open_store(str(args.out))  # nothing there: say so
    done = forget(str(args.out), ids)
    if getattr(args, "json", False):
        print(json.dumps({"out": str(args.out), **dataclasses.asdict(done)}))
    elif not args.quiet:
        print(done.line())
    return 0
