"""`talktime ingest|run` without Prefect: the same bodies (`flows.runs`), a thread pool in Prefect's place.

Used by `make bench` to measure Prefect's overhead on exactly the same work:
`python -m benchmarks.direct ingest --input FILES --out DIR`, or `run` with the CLI's run options.
"""

from __future__ import annotations

import logging
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from flows import runs
from flows.batch import fetch_batch, read_batch
from flows.cli.commands import build_parser, ingest_settings, run_settings


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    log = logging.getLogger("talktime.direct")
    start = time.perf_counter()
    if args.command == "ingest":
        settings = ingest_settings(args)
        with ThreadPoolExecutor(settings.in_flight) as pool:
            summary = runs.ingest(settings, lambda spec: pool.submit(read_batch, settings, spec), log)
    elif args.command == "run":
        run = run_settings(args)
        with ThreadPoolExecutor(run.in_flight) as pool:
            summary = runs.poll(run, lambda spec: pool.submit(fetch_batch, run, spec), log)
    else:
        raise SystemExit("benchmarks.direct: only `ingest` and `run`")
    print(f"direct {args.command}: {dict(summary.statuses)} rows {dict(summary.rows)} "
          f"in {time.perf_counter() - start:.2f} s")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
