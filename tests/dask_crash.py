"""A Dask worker plugin that SIGKILLs one worker process in the middle of a batch, once per cluster.

Installed around `Store.write_parquet` (the batch task's staging writes) in every worker; the first
worker to reach its N-th write claims a marker file and kills itself, so exactly one batch is
interrupted half-staged. Lives in tests/, never in product code.
"""

from __future__ import annotations

import os
import signal
import threading
from typing import Any

from distributed.diagnostics.plugin import WorkerPlugin


class KillOnce(WorkerPlugin):
    def __init__(self, marker: str, at_write: int) -> None:
        self.marker = marker
        self.at_write = at_write

    def setup(self, worker: Any) -> None:
        from flows.storage.store import Store

        original = getattr(Store.write_parquet, "__wrapped__", Store.write_parquet)
        marker, at_write = self.marker, self.at_write
        writes = [0]
        lock = threading.Lock()

        def write_parquet(store: Store, *args: Any, **kwargs: Any) -> Any:
            with lock:
                writes[0] += 1
                if writes[0] == at_write:
                    try:
                        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
                    except FileExistsError:
                        pass  # another worker was killed already
                    else:
                        os.kill(os.getpid(), signal.SIGKILL)
            return original(store, *args, **kwargs)

        write_parquet.__wrapped__ = original  # type: ignore[attr-defined]
        Store.write_parquet = write_parquet  # type: ignore[method-assign]


class KillEveryTime(WorkerPlugin):
    """SIGKILLs every worker process (restarted ones too) at its `at_write`-th staging write: a batch that
    reaches it never finishes anywhere, as with a worker that always runs out of memory on it."""

    def __init__(self, at_write: int) -> None:
        self.at_write = at_write

    def setup(self, worker: Any) -> None:
        from flows.storage.store import Store

        original = getattr(Store.write_parquet, "__wrapped__", Store.write_parquet)
        at_write, writes, lock = self.at_write, [0], threading.Lock()

        def write_parquet(store: Store, *args: Any, **kwargs: Any) -> Any:
            with lock:
                writes[0] += 1
                if writes[0] == at_write:
                    os.kill(os.getpid(), signal.SIGKILL)
            return original(store, *args, **kwargs)

        write_parquet.__wrapped__ = original  # type: ignore[attr-defined]
        Store.write_parquet = write_parquet  # type: ignore[method-assign]
