"""What the flow runs on each Dask worker before its first batch: polars' pool sized, the server checked.

A module of its own that imports nothing heavy: unpickling a function imports its module on the
worker, and a module importing polars would fix the pool's size before the function could set it.
"""

from __future__ import annotations

import os
import sys
from typing import Any


def size_polars_pool(dask_worker: Any) -> tuple[int, int]:
    """On a worker: polars' thread pool sized to the worker's task threads, unless polars is imported
    already (its pool is fixed at import); (the pool's size, the worker's threads)."""
    threads = int(dask_worker.state.nthreads)
    if "polars" not in sys.modules and "POLARS_MAX_THREADS" not in os.environ:
        os.environ["POLARS_MAX_THREADS"] = str(threads)
    import polars

    return polars.thread_pool_size(), threads


def worker_api_url() -> str | None:
    """The Prefect server this worker reports to."""
    return os.environ.get("PREFECT_API_URL")
