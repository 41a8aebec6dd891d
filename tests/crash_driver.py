"""Runs the ingest flow's steps (the functions its tasks wrap, without Prefect) on one output.

`python -m tests.crash_driver OUT BATCH_SIZE INPUT...`: used by the crash tests, which set
TALKTIME_CRASH_AFTER_OPS so that the process SIGKILLs itself before its N-th storage operation.
Prints the number of storage operations it performed.
"""

from __future__ import annotations

import sys

import polars as pl

from flows.ingest import outcomes_from_files
from flows.steps import commit_outcomes, recover_and_load
from flows.storage.ledger import changed
from flows.storage.store import Store
from flows.transform import batched, transform_outcomes


def ingest(out: str, batch_size: int, inputs: list[str]) -> int:
    """The body of `ingest_flow`, step by step; returns storage operations done."""
    ops_before = Store.ops_total
    outcomes, _ = outcomes_from_files(inputs)
    ledger, _ = recover_and_load(out)
    final = set(ledger.filter(pl.col("final"))["transcription_id"])
    for batch in batched([o for o in outcomes if o.transcription_id not in final], batch_size):
        written = changed(ledger, batch)
        ledger = commit_outcomes(out, transform_outcomes(written), batch, written, ledger)
    return Store.ops_total - ops_before


if __name__ == "__main__":
    print(ingest(sys.argv[1], int(sys.argv[2]), sys.argv[3:]))
