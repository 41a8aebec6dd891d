"""The `talktime` command line: emulator, run, ingest, demo."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from flows.cli.commands import COMMANDS, build_parser

# Before anything imports prefect: no telemetry, nothing leaves loopback, no input hashing.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_TASKS_DEFAULT_NO_CACHE", "true")
# A fresh PREFECT_HOME migrates its database first: the default 20 s is too short on 2 cores.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `talktime` console script."""
    parser: argparse.ArgumentParser = build_parser()
    args = parser.parse_args(argv)
    from flows.errors import PipelineError

    try:
        return COMMANDS[args.command](args)
    except PipelineError as exc:
        print(f"talktime: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
