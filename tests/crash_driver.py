"""Runs `talktime ingest`'s body without Prefect (a thread pool submits the batches) on one output.

`python -m tests.crash_driver OUT BATCH_SIZE INPUT...`: with TALKTIME_CRASH_AFTER_OPS=N in the
environment the process SIGKILLs itself right before its N-th mutating storage operation (the
hook is installed here, around `Store`, never in product code). Prints the number of mutating
storage operations it performed.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from flows import runs
from flows.batch import read_batch
from flows.settings import IngestSettings
from flows.storage.store import Store
from flows.summary import RunSummary

CRASH_ENV = "TALKTIME_CRASH_AFTER_OPS"
MUTATING = (
    *("write_bytes", "put_file", "move", "place", "delete", "delete_many", "delete_dir"),
    *("create_if_absent", "replace_if_match", "delete_if_match"),  # the writer's lease
)
_ops = 0
_lock = threading.Lock()


def _counted(method: Callable[..., Any], crash_at: int) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        global _ops
        with _lock:
            _ops += 1
            if crash_at and _ops >= crash_at:
                os.kill(os.getpid(), signal.SIGKILL)
        return method(*args, **kwargs)

    return wrapper


def install_counter(crash_at: int = 0) -> None:
    """Count (and with `crash_at`, crash at) every mutating storage operation of this process."""
    for name in MUTATING:
        current = getattr(Store, name)
        original = getattr(current, "_uncounted", current)  # Store's own method (with its I/O error translation)
        setattr(Store, name, _counted(original, crash_at))
        getattr(Store, name)._uncounted = original


def ingest_without_prefect(out: str, batch_size: int, inputs: list[str], in_flight: int = 2) -> RunSummary:
    """The body of the ingest flow with a thread pool in Prefect's place."""
    settings = IngestSettings(inputs=inputs, out=out, batch_size=batch_size, in_flight=in_flight)
    with ThreadPoolExecutor(max_workers=in_flight) as pool:
        return runs.ingest(settings, lambda spec: pool.submit(read_batch, settings, spec), logging.getLogger())


def ingest(out: str, batch_size: int, inputs: list[str]) -> int:
    """Ingest in this process; returns the mutating storage operations it took."""
    install_counter()
    before = _ops
    ingest_without_prefect(out, batch_size, inputs)
    return _ops - before


if __name__ == "__main__":
    install_counter(int(os.environ.get(CRASH_ENV, "0") or 0))
    ingest_without_prefect(sys.argv[1], int(sys.argv[2]), sys.argv[3:])
    print(_ops)
