"""Time a plain polars glob read of one table next to reading the same rows from one file.

Run as its own process (`python -m benchmarks.globread OUT TABLE SCRATCH`) so the benchmark's
process never holds a large table: a child started by a process inherits that process's peak
resident memory in its own `ru_maxrss` (Linux keeps the high-water mark across fork and exec),
which would inflate every later row's peak RSS. Prints one JSON object: glob_s, one_file_s, rows.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq

from flows.storage.commit import PARQUET_OPTIONS

READS = 3  # each read is timed this many times; the fastest counts


def fastest(read: Callable[[], pl.DataFrame], times: int = READS) -> tuple[float, pl.DataFrame]:
    """The shortest of `times` timed calls, and the last result."""
    best, result = float("inf"), pl.DataFrame()
    for _ in range(times):
        started = time.perf_counter()
        result = read()
        best = min(best, time.perf_counter() - started)
    return best, result


def main(argv: list[str]) -> int:
    out, table, scratch = Path(argv[0]), argv[1], Path(argv[2])
    glob_s, frame = fastest(lambda: pl.read_parquet(str(out / table / "**" / "*.parquet")))
    one = scratch / f"{table}-one-file.parquet"
    pq.write_table(frame.to_arrow(), one, **PARQUET_OPTIONS)  # type: ignore[arg-type]
    rows = frame.height
    del frame
    one_s, _ = fastest(lambda: pl.read_parquet(one))
    one.unlink()
    print(json.dumps({"glob_s": glob_s, "one_file_s": one_s, "rows": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
