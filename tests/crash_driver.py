"""Runs `talktime ingest`'s body without Prefect (a thread pool submits the batches) on one output.

`python -m tests.crash_driver OUT BATCH_SIZE INPUT...`: with TALKTIME_CRASH_AFTER_OPS=N in the
environment the process SIGKILLs itself right before its N-th mutating storage operation (the
hook, `tests.crash_hook`, is installed here, around `Store`, never in product code). Prints the
number of mutating storage operations it performed.
"""

from __future__ import annotations

import logging
import sys
from concurrent.futures import ThreadPoolExecutor

from flows import runs
from flows.batch import read_batch
from flows.settings import IngestSettings
from flows.summary import RunSummary
from tests.crash_hook import CRASH_ENV, MUTATING, crash_at_from_environment, install_counter, operations

__all__ = ["CRASH_ENV", "MUTATING", "ingest", "ingest_without_prefect", "install_counter"]


def ingest_without_prefect(
    out: str, batch_size: int, inputs: list[str], in_flight: int = 2, delete_after_commit: bool = False
) -> RunSummary:
    """The body of the ingest flow with a thread pool in Prefect's place."""
    settings = IngestSettings(
        inputs=inputs, out=out, batch_size=batch_size, in_flight=in_flight, delete_after_commit=delete_after_commit
    )
    with ThreadPoolExecutor(max_workers=in_flight) as pool:
        return runs.ingest(settings, lambda spec: pool.submit(read_batch, settings, spec), logging.getLogger())


def ingest(out: str, batch_size: int, inputs: list[str]) -> int:
    """Ingest in this process; returns the mutating storage operations it took."""
    install_counter()
    before = operations()
    ingest_without_prefect(out, batch_size, inputs)
    return operations() - before


if __name__ == "__main__":
    install_counter(crash_at_from_environment())
    ingest_without_prefect(sys.argv[1], int(sys.argv[2]), sys.argv[3:])
    print(operations())
